"""A trained GLASS folder read back for evaluation, and compositional generation from it."""

import numpy as np
import pytest
import torch

from glass.eval.composition import add_slot, composition_rows, object_slot, outline, remove_slot
from glass.eval.trained_model import TrainedGlass

@pytest.fixture(scope="module")
def trained_dir(random_trained_model, one_torch_thread):
    return random_trained_model


def test_masks_are_seeded_per_key_not_per_batch(trained_dir):
    model = TrainedGlass(trained_dir, seed=3)
    images = torch.rand(3, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    together = model.predict_masks(images, ["a", "b", "c"])
    alone = model.predict_masks(images[1:2], ["b"])
    assert together.shape == (3, 40, 52) and together.dtype == np.int64
    np.testing.assert_array_equal(together[1], alone[0])
    assert set(np.unique(together)) <= set(range(4))
    decoder_masks = model.predict_masks(images, ["a", "b", "c"], source="mlp_decoder", size=(8, 8))
    assert decoder_masks.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="mask source"):
        model.predict_masks(images, ["a", "b", "c"], source="decoder")


def test_phase_two_folder_loads_its_own_unet(trained_dir):
    # the UNet comes from the folder, not from the Stable Diffusion reference
    model = TrainedGlass(trained_dir)
    assert model.info["unet"] == "unet"
    from diffusers import UNet2DConditionModel

    expected = UNet2DConditionModel.from_pretrained(trained_dir / "unet")
    reference = UNet2DConditionModel.from_pretrained(model.decoder_reference, subfolder="unet")
    loaded = list(model.decoder.unet.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(loaded, expected.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(loaded, reference.state_dict().values()))


def test_missing_folder_says_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_phase1"):
        TrainedGlass(tmp_path / "nothing")


def test_slot_edits():
    conditioning = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(remove_slot(conditioning, 1), conditioning[[0, 2, 3]])
    assert torch.equal(add_slot(conditioning, torch.ones(3))[-1], torch.ones(3))
    with pytest.raises(IndexError):
        remove_slot(conditioning, 4)
    with pytest.raises(ValueError, match="donor slot"):
        add_slot(conditioning, torch.ones(2))


def test_object_slot_and_outline():
    slot_map = np.zeros((6, 6), dtype=np.int64)
    slot_map[:, 3:] = 2
    slot_map[4:, :3] = 1
    instances = np.zeros((6, 6), dtype=np.int32)
    instances[:, 4:] = 5      # largest instance, mostly slot 2
    instances[5, 0] = 7
    assert object_slot(slot_map, instances) == 2
    assert object_slot(slot_map, None) == 2    # the largest slot: 18 pixels (slot 0: 12)
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:4, 1:4] = True
    drawn = outline(np.zeros((5, 5, 3), np.uint8), mask)
    boundary = drawn[..., 0] > 0
    expected = mask.copy()
    expected[2, 2] = False    # the only interior pixel of a 3x3 square
    np.testing.assert_array_equal(boundary, expected)


def test_composition_rows_edit_the_conditioning(trained_dir):
    model = TrainedGlass(trained_dir)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    instances = [np.pad(np.ones((10, 10), np.int32), ((0, 22), (0, 22))), None]
    # images of different sizes are fine: each is encoded on its own
    small = torch.nn.functional.interpolate(images[1:2], size=(24, 40), mode="bilinear")
    rows = composition_rows(model, [images[0:1], small], ["x", "y"], instances,
                            num_inference_steps=2)
    assert len(rows) == 2 and all(len(row) == 6 for row in rows)
    assert rows[1][0].shape == (24, 40, 3) and rows[1][1].shape == (24, 40)
    reconstruction, removed, added = rows[0][2], rows[0][3], rows[0][5]
    assert reconstruction.shape == (48, 48, 3) and reconstruction.dtype == np.uint8
    # same noise, different slot sets: the edits change the image
    assert not np.array_equal(reconstruction, removed)
    assert not np.array_equal(reconstruction, added)
    with pytest.raises(ValueError, match="two images"):
        composition_rows(model, [images[:1]], ["x"], [None], num_inference_steps=1)
