"""SAM 2 mask source: the tiny random-weight SAM 2, its loader, and the labelling rules."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from glass.errors import MissingInput
from glass.shard_format import UNSURE_LABEL as UNSURE
from glass.synth.sam2_masks import Sam2MaskSource, label_sam_masks
from glass.sam2_model import CHECKPOINT_NAME, CONFIG_NAME, load_sam2
from glass.tiny.sam2 import build_tiny_sam2

# 4 x 4 = 16 point prompts: one decoder batch, well under a second on a CPU.
FEW_POINTS = 4


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> str:
    return str(build_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"), seed=0))


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 image of two flat rectangles and its attention mask (classes 1, 2, unsure)."""
    image = np.full((96, 128, 3), 40, dtype=np.uint8)
    image[10:50, 10:60] = (220, 30, 30)
    image[40:90, 70:120] = (30, 30, 220)
    attention = np.zeros((96, 128), dtype=np.uint8)
    attention[12:48, 12:58] = 1
    attention[42:88, 72:118] = 2
    attention[8:12, 8:62] = UNSURE
    return image, attention


# --- the tiny model and its loader -------------------------------------------------------------

def test_tiny_folder_is_small_random_and_loadable(tiny_sam2):
    folder = Path(tiny_sam2)
    assert {path.name for path in folder.iterdir()} == {CONFIG_NAME, CHECKPOINT_NAME, "README.md"}
    assert sum(path.stat().st_size for path in folder.iterdir()) < 20 * 2**20
    assert "RANDOM" in (folder / "README.md").read_text(encoding="utf-8")
    model = load_sam2(tiny_sam2, "cpu")
    assert type(model).__name__ == "SAM2Base"
    assert not model.training
    assert model.image_size == 1024   # SAM2ImagePredictor assumes 1024-px inputs


def test_same_seed_gives_identical_checkpoint(tiny_sam2, tmp_path):
    again = build_tiny_sam2(tmp_path / "again", seed=0)
    other = build_tiny_sam2(tmp_path / "other", seed=1)
    first = (Path(tiny_sam2) / CHECKPOINT_NAME).read_bytes()
    assert first == (again / CHECKPOINT_NAME).read_bytes()
    assert first != (other / CHECKPOINT_NAME).read_bytes()
    assert (again / CONFIG_NAME).read_text() == (other / CONFIG_NAME).read_text()


def test_unavailable_hub_id_raises_naming_it(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    # An empty cache and offline mode: exactly the situation on an offline machine.
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MissingInput, match="facebook/sam2.1-hiera-large.*hf download"):
        load_sam2("facebook/sam2.1-hiera-large", "cpu")
    with pytest.raises(MissingInput, match="facebook/sam2.1-hiera-huge"):
        load_sam2("facebook/sam2.1-hiera-huge", "cpu")


def test_folder_without_single_config_and_checkpoint_is_refused(tmp_path):
    with pytest.raises(MissingInput, match="one \\*.yaml config and one \\*.pt"):
        load_sam2(str(tmp_path), "cpu")


# --- the mask source on the tiny model ---------------------------------------------------------

def test_mask_source_labels_an_image(tiny_sam2):
    image, attention = scene()
    # Thresholds off, so the random model yields masks and the labelling path runs on them.
    source = Sam2MaskSource(tiny_sam2, device="cpu", points_per_side=FEW_POINTS,
                            pred_iou_thresh=0.0, stability_score_thresh=0.0)
    masks = source.sam_masks(image)
    assert masks and all(mask.shape == (96, 128) and mask.dtype == bool for mask in masks)
    labels = source.label_masks(image, attention)
    assert labels.shape == (96, 128) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(labels, label_sam_masks(masks, attention))
    np.testing.assert_array_equal(labels, source.label_masks(image, attention))   # deterministic
    assert source.settings["model"] == tiny_sam2


def test_mask_source_with_sam2_defaults_and_no_classes(tiny_sam2):
    image, _ = scene()
    source = Sam2MaskSource(tiny_sam2, device="cpu", points_per_side=FEW_POINTS)
    no_classes = np.zeros((96, 128), dtype=np.uint8)   # K = 0
    labels = source.label_masks(image, no_classes)
    assert labels.shape == (96, 128) and labels.dtype == np.uint8 and not labels.any()


def test_defaults_are_sam2s():
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    theirs = inspect.signature(SAM2AutomaticMaskGenerator).parameters
    ours = inspect.signature(Sam2MaskSource).parameters
    for name in ("points_per_side", "points_per_batch", "pred_iou_thresh",
                 "stability_score_thresh", "box_nms_thresh", "crop_n_layers",
                 "min_mask_region_area"):
        assert ours[name].default == theirs[name].default, name


# --- the labelling rules (no model) ------------------------------------------------------------

def box(top, left, bottom, right, shape=(10, 10)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_mask_takes_the_majority_class():
    attention = np.zeros((10, 10), dtype=np.uint8)
    attention[:, :6] = 1
    attention[:, 6:] = 2
    labels = label_sam_masks([box(0, 0, 10, 8)], attention)   # 60 pixels of 1, 20 of 2
    assert (labels[:, :8] == 1).all() and (labels[:, 8:] == 0).all()


def test_background_majority_makes_background():
    attention = np.zeros((10, 10), dtype=np.uint8)
    attention[:, :3] = 1   # 30 of the mask's 100 pixels are class 1, 70 background
    assert not label_sam_masks([box(0, 0, 10, 10)], attention, min_class_overlap=0.0).any()


def test_unsure_pixels_do_not_vote_but_count_in_the_area():
    attention = np.full((10, 10), UNSURE, dtype=np.uint8)
    attention[:, :4] = 1   # class 1 holds every vote but only 40% of the mask
    mask = box(0, 0, 10, 10)
    assert not label_sam_masks([mask], attention, min_class_overlap=0.5).any()
    assert (label_sam_masks([mask], attention, min_class_overlap=0.4) == 1).all()
    all_unsure = np.full((10, 10), UNSURE, dtype=np.uint8)
    assert not label_sam_masks([mask], all_unsure, min_class_overlap=0.0).any()


def test_min_class_overlap_is_inclusive():
    attention = np.zeros((10, 10), dtype=np.uint8)
    attention[:5] = 2
    attention[5:] = UNSURE
    mask = box(0, 0, 10, 10)   # class 2 covers exactly half of it
    assert (label_sam_masks([mask], attention, min_class_overlap=0.5) == 2).all()
    assert not label_sam_masks([mask], attention, min_class_overlap=0.51).any()


def test_ties_go_to_the_smaller_label():
    attention = np.zeros((10, 10), dtype=np.uint8)
    attention[:, :5] = 2
    attention[:, 5:] = 1
    assert (label_sam_masks([box(0, 0, 10, 10)], attention, min_class_overlap=0.5) == 1).all()


def test_smaller_masks_are_painted_on_top():
    attention = np.ones((10, 10), dtype=np.uint8)
    attention[2:5, 2:5] = 2
    attention[6:9, 6:9] = 0
    big, small_class, small_background = box(0, 0, 10, 10), box(2, 2, 5, 5), box(6, 6, 9, 9)
    expected = np.ones((10, 10), dtype=np.uint8)
    expected[2:5, 2:5] = 2
    expected[6:9, 6:9] = 0
    # Whatever order SAM lists them in, the result is the same.
    for order in ([big, small_class, small_background], [small_background, small_class, big]):
        np.testing.assert_array_equal(label_sam_masks(order, attention), expected)


def test_uncovered_pixels_and_empty_inputs_are_background():
    attention = np.ones((10, 10), dtype=np.uint8)
    labels = label_sam_masks([box(0, 0, 5, 5)], attention)
    assert (labels[:5, :5] == 1).all()
    labels[:5, :5] = 0
    assert not labels.any()
    assert not label_sam_masks([], attention).any()
    assert label_sam_masks([], attention).dtype == np.uint8
    assert not label_sam_masks([np.zeros((10, 10), dtype=bool)], attention).any()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        label_sam_masks([box(0, 0, 5, 5, shape=(8, 8))], np.zeros((10, 10), dtype=np.uint8))
