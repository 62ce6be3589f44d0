"""GlassModel's trained folder (save_pretrained / from_pretrained, portable references) and its
inference API, and compositional generation from it."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from glass.errors import InvalidInput, MissingInput
from glass.eval.composition import composition_rows, object_slot, outline
from glass.model import GlassModel, add_slot, folder_problems, read_index, remove_slot
from glass.model.trained_folder import ModelReference
from glass.model_reference import portable_path

@pytest.fixture(scope="module")
def trained_dir(random_trained_model, one_torch_thread):
    return random_trained_model


def test_masks_are_seeded_per_key_not_per_batch(trained_dir):
    model = GlassModel.from_pretrained(trained_dir)
    images = torch.rand(3, 3, 40, 52, generator=torch.Generator().manual_seed(0))
    together = model.predict_labels(images, ["a", "b", "c"], seed=3)
    alone = model.predict_labels(images[1:2], ["b"], seed=3)
    assert together.shape == (3, 40, 52) and together.dtype == torch.int64
    torch.testing.assert_close(together[1], alone[0])
    assert set(torch.unique(together).tolist()) <= set(range(4))
    # another seed draws other slot initialisations
    other = model.infer_slots(images[1:2], ["b"], seed=4).slots
    assert not torch.equal(other, model.infer_slots(images[1:2], ["b"], seed=3).slots)
    decoder_masks = model.predict_labels(images, ["a", "b", "c"], source="mlp_decoder", size=(8, 8))
    assert decoder_masks.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="mask source"):
        model.predict_labels(images, ["a", "b", "c"], source="decoder")


def test_phase_two_folder_loads_its_own_unet(trained_dir):
    # the UNet comes from the folder, not from the Stable Diffusion reference
    model = GlassModel.from_pretrained(trained_dir)
    assert model.index.components["unet"] == "UNet2DConditionModel" and model.decoder is None
    from diffusers import UNet2DConditionModel

    expected = UNet2DConditionModel.from_pretrained(trained_dir / "unet")
    reference = UNet2DConditionModel.from_pretrained(
        model.index.stable_diffusion.resolve(trained_dir), subfolder="unet")
    loaded = list(model.load_decoder().unet.state_dict().values())
    assert all(torch.equal(a, b) for a, b in zip(loaded, expected.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(loaded, reference.state_dict().values()))


def test_missing_folder_says_which_stage_to_run(tmp_path):
    with pytest.raises(MissingInput, match="train_phase1.*glass.convert official"):
        GlassModel.from_pretrained(tmp_path / "nothing")


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
    model = GlassModel.from_pretrained(trained_dir)
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


def test_save_then_load_is_the_same_model_and_the_same_bytes(trained_dir, tmp_path):
    model = GlassModel.from_pretrained(trained_dir, with_decoder=True)
    index = read_index(trained_dir)
    references = {role: getattr(index, role).resolve(trained_dir)
                  for role in ("encoder", "stable_diffusion")}
    # saved again next to the original: identical files, so DVC hashes do not move
    again = trained_dir.parent / "model-again"
    model.save_pretrained(again, phase=2, references=references, encoder_image_size=64,
                          decoder_image_size=48)
    for path in sorted(p for p in trained_dir.rglob("*") if p.is_file()):
        assert (again / path.relative_to(trained_dir)).read_bytes() == path.read_bytes(), path
    info = json.loads((again / "glass.json").read_text())
    assert info["_class_name"] == "GlassModel" and info["components"] == {
        "mlp_decoder": "MLPDecoder", "slot_attention": "SlotAttention",
        "unet": "UNet2DConditionModel"}
    loaded = GlassModel.from_pretrained(again)
    for name in ("slot_attention", "mlp_decoder"):
        for a, b in zip(getattr(model, name).state_dict().values(),
                        getattr(loaded, name).state_dict().values()):
            assert torch.equal(a, b)
    shutil.rmtree(again)


def test_references_are_relative_inside_a_repository_and_absolute_outside(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    (repo / "models" / "dino").mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "dino"
    outside.mkdir(parents=True)
    trained = repo / "data" / "cpu" / "train" / "model"
    assert portable_path(repo / "models" / "dino", trained) == "../../../../models/dino"
    assert portable_path(outside, trained) == str(outside)
    assert ModelReference.of("facebook/dinov2-base", trained) == ModelReference(
        "hub", "facebook/dinov2-base")
    local = ModelReference.of(str(outside), trained)
    assert local.as_dict() == {"source": "local", "path": str(outside)}
    assert local.resolve(trained) == str(outside)
    # a clone at another depth: the relative reference still finds the repository's folder
    deeper = tmp_path / "a" / "b" / "repo"
    shutil.copytree(repo, deeper)
    reference = ModelReference.of(repo / "models" / "dino", trained)
    assert reference.resolve(deeper / "data" / "cpu" / "train" / "model") == str(
        (deeper / "models" / "dino").resolve())


def test_a_missing_reference_or_component_is_listed_without_loading(trained_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_dir, copy)
    info = json.loads((copy / "glass.json").read_text())
    info["encoder"] = {"source": "local", "path": str(tmp_path / "gone")}
    (copy / "glass.json").write_text(json.dumps(info))
    shutil.rmtree(copy / "mlp_decoder")
    problems = folder_problems(copy)
    assert any("gone" in problem and "models stage" in problem for problem in problems)
    assert any("mlp_decoder is missing" in problem for problem in problems)
    info["format"] = 0
    (copy / "glass.json").write_text(json.dumps(info))
    with pytest.raises(InvalidInput, match="not a GLASS model index of format 1"):
        read_index(copy)


def test_a_folder_without_mlp_decoder_has_only_slot_attention_masks(trained_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained_dir, copy)
    shutil.rmtree(copy / "mlp_decoder")
    info = json.loads((copy / "glass.json").read_text())
    del info["components"]["mlp_decoder"]
    (copy / "glass.json").write_text(json.dumps(info))
    model = GlassModel.from_pretrained(copy)
    assert model.mlp_decoder is None and model.mask_sources == ("slot_attention",)
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert model.predict_labels(images, ["k"]).shape == (1, 16, 16)
    with pytest.raises(InvalidInput, match="no MLP decoder"):
        model.predict_labels(images, ["k"], source="mlp_decoder")


def test_only_glass_model_reads_or_writes_a_trained_folder():
    """The folder's files (its index and component subfolders) are named in glass/model only."""
    found = subprocess.run(["git", "grep", "-l", "-e", "glass.json", "-e", "INDEX_NAME",
                            "--", "glass", "stages"], capture_output=True, text=True).stdout.split()
    assert {path for path in found if not path.startswith("glass/model/")} <= {
        "glass/convert.py"}, found


def test_a_local_model_folder_is_recorded_as_local(tmp_path):
    from glass.model_reference import model_reference
    from glass.models import ModelSpec, materialize_model

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "models" / "my-dinov2").mkdir(parents=True)
    out = repo / "data" / "cpu" / "models" / "dinov2"
    reference = materialize_model("dinov2", ModelSpec(id=str(repo / "models" / "my-dinov2")), out)
    assert reference["source"] == "local" and reference["path"] == "../../../../models/my-dinov2"
    assert model_reference(out) == str((repo / "models" / "my-dinov2").resolve())
    # retrained weights change the reference (so the stages that use the role rerun)
    (repo / "models" / "my-dinov2" / "model.safetensors").write_bytes(b"weights")
    first = materialize_model("dinov2", ModelSpec(id=str(repo / "models" / "my-dinov2")), out)
    (repo / "models" / "my-dinov2" / "model.safetensors").write_bytes(b"retrained")
    second = materialize_model("dinov2", ModelSpec(id=str(repo / "models" / "my-dinov2")), out)
    assert first["content_sha256"] != second["content_sha256"] != reference["content_sha256"]
    assert json.loads((out / "glass-model.json").read_text()) == second
    hub = materialize_model("dinov2", ModelSpec(id="facebook/dinov2-base"), out)
    assert hub == {"role": "dinov2", "source": "hub", "id": "facebook/dinov2-base"}
    with pytest.raises(MissingInput, match="models.dinov2.id: the folder .*missing-model"):
        materialize_model("dinov2", ModelSpec(id=str(repo / "missing-model")), out)
