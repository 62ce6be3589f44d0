"""Evaluation ground-truth readers (glass.eval.datasets) on tiny hand-made datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glass.data.coco import DatasetNotFound
from glass.eval.datasets import (
    EVAL_DATASETS, ClevrTexInstances, CocoInstances, EvalSample, Objects365Instances, Preprocess,
    ToyInstances, VocInstances, load_eval_dataset,
)
from glass.eval.datasets.sample import UnreadableSample, compose_instances, finish_sample
from glass.eval.datasets.voc import majority_class

FULL = {"resolution": None}   # full resolution: hand-made maps are checked pixel by pixel


def save_png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette:   # a palette PNG like VOC's / CLEVRTex's masks: indices + a colour table
        image = image.convert("L").convert("P")
        image.putpalette([value for i in range(256) for value in (i, (7 * i) % 256, 255 - i)])
    image.save(path)


def box_mask(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, cols] = 1
    return mask


# --- COCO-format fixture --------------------------------------------------------------------------
# Image 1 (6 x 8): person [0:4, 0:4], dog [2:6, 2:6] (later, overlaps the person on [2:4, 2:4]),
# a crowd of people [3:6, 5:8] (overlaps the dog on [3:6, 5]).
# Image 2 (4 x 4): no annotations. Image 3 (10 x 6, portrait): one cat [1:9, 1:5].
# The file lists image 3 first, so sorting by id is visible.
SHAPE1 = (6, 8)
PERSON = box_mask(SHAPE1, slice(0, 4), slice(0, 4))
DOG = box_mask(SHAPE1, slice(2, 6), slice(2, 6))
CROWD = box_mask(SHAPE1, slice(3, 6), slice(5, 8))
CAT = box_mask((10, 6), slice(1, 9), slice(1, 5))


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode("ascii")}


def annotation(ann_id, image_id, category_id, mask, iscrowd=0) -> dict:
    rows, cols = np.nonzero(mask)
    x0, y0 = int(cols.min()), int(rows.min())
    return {"id": ann_id, "image_id": image_id, "category_id": category_id,
            "segmentation": rle(mask), "area": int(mask.sum()), "iscrowd": iscrowd,
            "bbox": [x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0]}


def write_coco(root: Path, split: str = "val2017") -> Path:
    rng = np.random.default_rng(0)
    images = {3: (10, 6), 1: SHAPE1, 2: (4, 4)}
    for image_id, shape in images.items():
        save_png(root / split / f"{image_id:012d}.png",
                 rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    data = {
        "images": [{"id": i, "file_name": f"{i:012d}.png", "height": s[0], "width": s[1]}
                   for i, s in images.items()],
        "annotations": [annotation(10, 1, 1, PERSON), annotation(11, 1, 18, DOG),
                        annotation(12, 1, 1, CROWD, iscrowd=1), annotation(13, 3, 17, CAT)],
        "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"},
                       {"id": 18, "name": "dog"}],
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return root


@pytest.fixture
def coco_root(tmp_path) -> Path:
    return write_coco(tmp_path / "coco")


def expected_image1(crowd: str, overlap: str) -> tuple[np.ndarray, np.ndarray]:
    """The instance map and ignore mask of image 1, written out rule by rule."""
    instances = np.zeros(SHAPE1, dtype=np.int32)
    ignore = np.zeros(SHAPE1, dtype=bool)
    instances[PERSON == 1] = 1
    instances[DOG == 1] = 2                       # later wins
    if crowd == "instance":
        instances[CROWD == 1] = 3
    if overlap == "ignore":
        covered = PERSON.astype(int) + DOG + (CROWD if crowd == "instance" else 0)
        ignore |= covered > 1
    if crowd == "ignore":
        ignore |= CROWD == 1
    if crowd == "background":
        instances[CROWD == 1] = 0
    instances[ignore] = 0
    return instances, ignore


@pytest.mark.parametrize("overlap", ["later_wins", "ignore"])
@pytest.mark.parametrize("crowd", ["skip", "ignore", "background", "instance"])
def test_coco_crowd_and_overlap_pixel_by_pixel(coco_root, crowd, overlap):
    reader = CocoInstances(coco_root, crowd=crowd, overlap=overlap, preprocess=FULL)
    samples = list(reader)
    assert [s.key for s in samples] == [f"coco-val2017-{i:012d}" for i in (1, 2, 3)]
    first = samples[0]
    instances, ignore = expected_image1(crowd, overlap)
    np.testing.assert_array_equal(first.instances, instances)
    np.testing.assert_array_equal(first.ignore, ignore)
    expected_classes = {1: "person", 2: "dog", 3: "person"}
    assert first.instance_classes == {i: expected_classes[i] for i in np.unique(instances) if i}
    assert first.image.shape == (*SHAPE1, 3) and first.image.dtype == np.uint8
    # image 2: nothing annotated; image 3: one cat, portrait
    assert not samples[1].instances.any() and samples[1].instance_classes == {}
    assert samples[2].instance_classes == {1: "cat"}
    np.testing.assert_array_equal(samples[2].instances, CAT.astype(np.int32))


def test_coco_spot_checks_of_the_conventions(coco_root):
    def first(**options):
        return CocoInstances(coco_root, preprocess=FULL, **options)[0]

    official = first()                                 # skip + later_wins
    assert official.instances[2, 2] == 2 and official.instances[0, 0] == 1
    assert official.instances[4, 6] == 0 and not official.ignore.any()   # crowd only: bg
    assert official.instances[4, 5] == 2                                 # dog stays under crowd
    assert first(overlap="ignore").ignore[2, 2] and first(overlap="ignore").instances[2, 2] == 0
    assert first(crowd="ignore").ignore[4, 5] and first(crowd="ignore").ignore[4, 7]
    background = first(crowd="background")
    assert background.instances[4, 5] == 0 and not background.ignore.any()
    assert first(crowd="instance").instances[4, 7] == 3
    # boxes are the annotation boxes as x0, y0, x1, y1
    assert official.boxes == {1: (0.0, 0.0, 4.0, 4.0), 2: (2.0, 2.0, 6.0, 6.0)}


def test_coco_defaults_match_the_existing_official_reader(coco_root):
    from reference.coco_instance_maps import iter_instance_maps

    reader = CocoInstances(coco_root, preprocess=FULL)
    official = list(iter_instance_maps(coco_root / "val2017",
                                       coco_root / "annotations" / "instances_val2017.json"))
    assert len(reader) == len(official) == 3
    for sample, (image_id, image, instance_map, classes) in zip(reader, official):
        assert sample.metadata["image_id"] == image_id
        np.testing.assert_array_equal(sample.image, image)
        np.testing.assert_array_equal(sample.instances, instance_map)
        assert sample.instance_classes == {i: c for i, c in classes.items()
                                           if (instance_map == i).any()}


def test_coco_limit_and_determinism(coco_root):
    reader = CocoInstances(coco_root, limit=2)
    assert len(reader) == 2
    again = CocoInstances(coco_root, limit=2)
    for a, b in zip(reader, again):
        assert a.key == b.key
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.instances, b.instances)
    assert reader.conventions()["crowd"] == "skip"
    assert reader.conventions()["overlap"] == "later_wins"
    assert reader.conventions()["resolution"] == 256


def test_toy_world_val_split_reads_like_the_official_reader(tmp_path):
    from glass.data.toy_world import ToyWorldConfig, write_coco_dataset
    from reference.coco_instance_maps import iter_instance_maps

    toy = tmp_path / "toy"
    write_coco_dataset(toy, ToyWorldConfig(image_size=32), {"val": 2}, seed=3, progress=False)
    reader = load_eval_dataset("toy", root=toy, resolution=None)
    official = list(iter_instance_maps(toy / "images" / "val",
                                       toy / "annotations" / "instances_val.json"))
    assert isinstance(reader, ToyInstances) and len(reader) == 2
    for sample, (_, image, instance_map, _) in zip(reader, official):
        assert sample.key.startswith("toy-val-")
        np.testing.assert_array_equal(sample.instances, instance_map)
        np.testing.assert_array_equal(sample.image, image)


def test_compose_instances_smaller_wins():
    big = box_mask((4, 4), slice(0, 4), slice(0, 4)).astype(bool)
    small = box_mask((4, 4), slice(1, 2), slice(1, 2)).astype(bool)
    instances, _, _, ids = compose_instances((4, 4), [small, big], ["cup", "table"],
                                             [False, False], overlap="smaller_wins")
    assert ids == [1, 2] and instances[1, 1] == 1 and (instances == 2).sum() == 15
    later, _, _, _ = compose_instances((4, 4), [small, big], ["cup", "table"], [False, False])
    assert (later == 2).all()
    with pytest.raises(ValueError, match="crowd must be one of"):
        compose_instances((4, 4), [], [], [], crowd="bogus")


# --- VOC ---------------------------------------------------------------------------------------------
# 2007_000001 (6 x 6): object 1 on [0:3, 0:3] framed by a 255 boundary (row 3 / col 3), object 2
# on [4:6, 4:6]. In SegmentationClass object 1 is person (15) except two dog (12) pixels.
VOC_OBJECTS = np.zeros((6, 6), dtype=np.uint8)
VOC_OBJECTS[0:3, 0:3] = 1
VOC_OBJECTS[3, 0:4] = 255
VOC_OBJECTS[0:4, 3] = 255
VOC_OBJECTS[4:6, 4:6] = 2


def write_voc(root: Path) -> Path:
    classes = np.zeros((6, 6), dtype=np.uint8)
    classes[VOC_OBJECTS == 1] = 15
    classes[0, 0:2] = 12
    classes[VOC_OBJECTS == 255] = 255
    classes[VOC_OBJECTS == 2] = 8
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n2007_000001\n")
    rng = np.random.default_rng(1)
    for voc_id in ("2007_000001", "2007_000002"):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(
            (root / "JPEGImages").mkdir(exist_ok=True) or root / "JPEGImages" / f"{voc_id}.jpg")
    save_png(root / "SegmentationObject" / "2007_000001.png", VOC_OBJECTS, palette=True)
    save_png(root / "SegmentationClass" / "2007_000001.png", classes, palette=True)
    save_png(root / "SegmentationObject" / "2007_000002.png", np.zeros((6, 6), np.uint8), True)
    save_png(root / "SegmentationClass" / "2007_000002.png", np.zeros((6, 6), np.uint8), True)
    return root


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return write_voc(tmp_path / "VOC2012")


def test_voc_boundary_options_and_majority_class(voc_root):
    ignored = VocInstances(voc_root, preprocess=FULL)
    assert [s.key for s in ignored] == ["voc-2007_000001", "voc-2007_000002"]
    sample = ignored[0]
    expected = np.where(VOC_OBJECTS == 255, 0, VOC_OBJECTS).astype(np.int32)
    np.testing.assert_array_equal(sample.instances, expected)
    np.testing.assert_array_equal(sample.ignore, VOC_OBJECTS == 255)
    assert sample.instance_classes == {1: "person", 2: "cat"}   # 7 person vs 2 dog pixels
    background = VocInstances(voc_root, voc_boundary="background", preprocess=FULL)[0]
    np.testing.assert_array_equal(background.instances, expected)
    assert not background.ignore.any()
    empty = ignored[1]
    assert empty.instance_classes == {} and not empty.instances.any()
    with pytest.raises(ValueError, match="voc_boundary must be one of"):
        VocInstances(voc_root, voc_boundary="void")


def test_voc_majority_class_rules():
    assert majority_class(np.array([12, 12, 15, 255, 255, 255], np.uint8)) == 12
    assert majority_class(np.array([15, 12, 0, 0, 0], np.uint8)) == 12   # tie: smaller index
    assert majority_class(np.array([255, 0], np.uint8)) is None


def test_voc_refuses_rgb_masks(voc_root):
    rgb = np.stack([VOC_OBJECTS] * 3, axis=-1)
    save_png(voc_root / "SegmentationObject" / "2007_000001.png", rgb)
    with pytest.raises(ValueError, match="palette"):
        VocInstances(voc_root)[0]


# --- CLEVRTex --------------------------------------------------------------------------------------

def write_clevrtex(root: Path, variant: str = "full", count: int = 10) -> Path:
    folder = root / f"clevrtex_{variant}" / "0"
    rng = np.random.default_rng(2)
    shapes = ["cube", "sphere", "cylinder"]
    for index in range(count):
        stem = f"CLEVRTEX_{variant}_{index:06d}"
        rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
        rgba[..., 3] = 128            # alpha must be dropped, not composited
        save_png(folder / f"{stem}.png", rgba)
        mask = np.zeros((12, 16), dtype=np.uint8)
        mask[2:6, 2:6] = 1
        mask[6:10, 8 + index % 4:12 + index % 4] = 2
        save_png(folder / f"{stem}_flat.png", mask, palette=True)
        objects = [{"index": i, "shape": shapes[(index + i) % 3], "material": "Rubber"}
                   for i in (1, 2)]
        (folder / f"{stem}.json").write_text(json.dumps({"objects": objects,
                                                         "ground_material": "Tiles"}))
        save_png(folder / f"{stem}_normal_0001.png", rgba[..., :3])   # another render pass
    return root


def test_unreadable_clevrtex_files_are_skipped_with_their_reasons(tmp_path):
    """A decompression bomb (PIL refuses it with its own error) or a damaged mask is skipped
    and recorded; the readable images are evaluated."""
    from hostile_corpus import decompression_bomb_png

    root = write_clevrtex(tmp_path / "clevrtex", count=20)   # test split: images 0 and 1
    folder = root / "clevrtex_full" / "0"
    (folder / "CLEVRTEX_full_000000.png").write_bytes(decompression_bomb_png(20000, 20000))
    reader = ClevrTexInstances(root, preprocess=FULL)
    assert reader.first_readable() == 1 and not reader.unreadable
    samples = list(reader.readable())
    assert [s.key for s in samples] == ["clevrtex-full-000001"]
    assert "too large to decode safely" in reader.unreadable["0"]
    (folder / "CLEVRTEX_full_000001_flat.png").write_bytes(b"\x89PNG damaged")
    with pytest.raises(ValueError, match="none of its 2 images can be read"):
        ClevrTexInstances(root, preprocess=FULL).first_readable()
    small = ClevrTexInstances(root, preprocess=FULL, max_image_pixels=100)   # 16 x 12 = 192
    assert list(small.readable()) == []
    assert "declares 16x12 = 192 pixels, above evaluate.max_image_pixels = 100" in \
        small.unreadable["1"]


def test_clevrtex_layout_splits_and_classes(tmp_path):
    root = write_clevrtex(tmp_path / "clevrtex")
    test = ClevrTexInstances(root, preprocess=FULL)
    assert [s.key for s in test] == ["clevrtex-full-000000"]
    sample = test[0]
    raw = np.asarray(Image.open(root / "clevrtex_full/0/CLEVRTEX_full_000000.png"))
    np.testing.assert_array_equal(sample.image, raw[..., :3])
    assert sample.instance_classes == {1: "sphere", 2: "cylinder"}
    assert sample.instances[3, 3] == 1 and sample.instances[7, 9] == 2
    assert not sample.ignore.any() and sample.boxes is None
    val = ClevrTexInstances(root, split="val", preprocess=FULL)
    train = ClevrTexInstances(root / "clevrtex_full", split="train")   # the variant folder too
    assert val.image_ids == [1] and train.image_ids == list(range(2, 10))
    assert train[0].image.shape == (256, 256, 3)
    cropped = ClevrTexInstances(root, center_crop_fraction=0.8, preprocess=FULL)[0]
    assert cropped.image.shape == (9, 9, 3)     # int(0.8 * 12), offsets (1, 3)
    np.testing.assert_array_equal(cropped.image, raw[1:10, 3:12, :3])


def test_clevrtex_outd_has_no_split_and_gaps_are_refused(tmp_path):
    root = write_clevrtex(tmp_path / "clevrtex", variant="outd", count=3)
    assert len(ClevrTexInstances(root, variant="outd", split="test")) == 3
    (root / "clevrtex_outd/0/CLEVRTEX_outd_000001.png").unlink()
    with pytest.raises(ValueError, match="missing"):
        len(ClevrTexInstances(root, variant="outd"))
    with pytest.raises(DatasetNotFound, match="clevrtex_full.*robots.ox.ac.uk"):
        ClevrTexInstances(root, variant="full")


# --- Objects365 with the tiny SAM 2 -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> str:
    from glass.tiny.sam2 import build_tiny_sam2

    return str(build_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2"), seed=0))


def write_objects365(root: Path) -> Path:
    rng = np.random.default_rng(3)
    images = []
    for image_id, (height, width) in ((7, (40, 56)), (5, (48, 32))):
        name = f"images/v1/patch0/objects365_v1_{image_id:08d}.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            (root / name).parent.mkdir(parents=True, exist_ok=True) or root / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [4, 4, 20, 30], "iscrowd": 0,
         "area": 600},
        {"id": 2, "image_id": 7, "category_id": 2, "bbox": [20, 10, 30, 25], "iscrowd": 0,
         "area": 750},
        {"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 0, 5], "iscrowd": 0,
         "area": 0},                                                          # degenerate box
        {"id": 4, "image_id": 5, "category_id": 1, "bbox": [2, 3, 25, 40], "iscrowd": 0,
         "area": 1000},
    ]
    (root / "zhiyuan_objv2_val.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "Person"}, {"id": 2, "name": "Sneakers"}]}))
    return root


def test_objects365_sam2_masks_shapes_determinism_and_cache(tmp_path, tiny_sam2, monkeypatch):
    import torch

    torch.set_num_threads(1)
    root = write_objects365(tmp_path / "o365")
    options = dict(sam2_model=tiny_sam2, device="cpu", preprocess=FULL)
    reader = Objects365Instances(root, cache_dir=tmp_path / "cache", **options)
    first = list(reader)
    assert [s.key for s in first] == ["objects365-000000000005", "objects365-000000000007"]
    assert reader.sam.computed == 2
    for sample, shape in zip(first, [(48, 32), (40, 56)]):
        assert sample.image.shape == (*shape, 3) and sample.instances.shape == shape
        assert set(np.unique(sample.instances)) <= {0, 1, 2, 3}
        assert set(sample.instance_classes.values()) <= {"Person", "Sneakers"}
    masks = reader.sam.masks(7, first[1].image, [1, 2, 3],
                             np.array([[4, 4, 24, 34], [20, 10, 50, 35], [0, 0, 0, 5]], float))
    assert masks.shape == (3, 40, 56) and masks.dtype == bool and not masks[2].any()
    cache_files = sorted((tmp_path / "cache").glob("*/*.npz"))
    assert [p.name for p in cache_files] == ["000000000005.npz", "000000000007.npz"]

    # determinism: an independent computation (no cache) gives identical masks
    fresh = list(Objects365Instances(root, cache_dir=None, **options))
    for a, b in zip(first, fresh):
        np.testing.assert_array_equal(a.instances, b.instances)

    # reuse: a rerun reads the cache and never loads the model
    def no_model(self):
        raise AssertionError("the model was loaded although every image is cached")

    monkeypatch.setattr("glass.eval.datasets.objects365.Sam2BoxMasks._load_predictor", no_model)
    rerun = Objects365Instances(root, cache_dir=tmp_path / "cache", **options)
    for a, b in zip(first, rerun):
        np.testing.assert_array_equal(a.instances, b.instances)
    assert rerun.sam.computed == 0
    # official preprocessing on top of the cached full-resolution masks
    assert Objects365Instances(root, cache_dir=tmp_path / "cache", sam2_model=tiny_sam2,
                               device="cpu")[0].instances.shape == (256, 256)


def test_objects365_cache_follows_the_boxes_and_the_model(tmp_path, tiny_sam2):
    from glass.eval.datasets.objects365 import Sam2BoxMasks, resolve_sam2_model

    image = np.random.default_rng(4).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    sam = Sam2BoxMasks(tiny_sam2, cache_dir=tmp_path / "cache", device="cpu")
    sam.masks(1, image, [1], np.array([[2, 2, 12, 12]], float))
    sam.masks(1, image, [1], np.array([[2, 2, 12, 12]], float))
    assert sam.computed == 1
    sam.masks(1, image, [1], np.array([[2, 2, 20, 12]], float))   # another box: recomputed
    assert sam.computed == 2
    other = Sam2BoxMasks(tiny_sam2, cache_dir=tmp_path / "cache", device="cpu",
                         box_batch_size=8)
    assert other.fingerprint != sam.fingerprint
    assert (tmp_path / "cache" / sam.fingerprint[:16] / "settings.json").is_file()
    # the models stage's folder (glass-model.json) resolves to the model it names
    stage_dir = tmp_path / "models" / "sam2"
    stage_dir.mkdir(parents=True)
    (stage_dir / "glass-model.json").write_text(json.dumps(
        {"role": "sam2", "source": "tiny", "path": tiny_sam2, "seed": 0}))
    assert resolve_sam2_model(stage_dir) == str(Path(tiny_sam2).resolve())


def test_objects365_composes_box_masks_like_coco_annotations(tmp_path, monkeypatch):
    from glass.eval.datasets.objects365 import Sam2BoxMasks

    # A stand-in for SAM 2 whose every mask is the whole image: what the reader does with the
    # masks (order, overlap, clipping to the box) is then known exactly.
    monkeypatch.setattr(Sam2BoxMasks, "_predict",
                        lambda self, image, boxes: np.ones((len(boxes), *image.shape[:2]), bool))
    monkeypatch.setattr(Sam2BoxMasks, "settings", lambda self: {"stand-in": True})
    root = write_objects365(tmp_path / "o365")
    options = dict(sam2_model="unused", cache_dir=tmp_path / "cache", preprocess=FULL)
    later = Objects365Instances(root, **options)[1]           # image 7: boxes 1, 2, 3
    assert (later.instances == 3).all()                       # the whole-image masks: last wins
    clipped = Objects365Instances(root, clip_masks_to_boxes=True, **options)[1]
    expected = np.zeros((40, 56), np.int32)
    expected[4:34, 4:24] = 1
    expected[10:35, 20:50] = 2
    np.testing.assert_array_equal(clipped.instances, expected)   # box 3 has no area
    assert clipped.instance_classes == {1: "Person", 2: "Sneakers"}
    assert clipped.boxes == {1: (4.0, 4.0, 24.0, 34.0), 2: (20.0, 10.0, 50.0, 35.0)}
    overlap = Objects365Instances(root, clip_masks_to_boxes=True, overlap="ignore", **options)[1]
    assert overlap.ignore[10:34, 20:24].all() and not overlap.instances[10:34, 20:24].any()


def test_objects365_missing_images_raise_or_are_skipped(tmp_path):
    root = write_objects365(tmp_path / "o365")
    missing = root / "images/v1/patch0/objects365_v1_00000005.jpg"
    missing.unlink()
    reader = Objects365Instances(root, sam2_model="unused", cache_dir=None)
    with pytest.raises(UnreadableSample, match="objects365_v1_00000005.jpg: file not found"):
        reader[0]
    # the evaluation skips it with the reason and goes on (no model is needed for that check)
    assert reader.first_readable() == 7 and list(reader.unreadable) == []
    skipping = Objects365Instances(root, sam2_model="unused", cache_dir=None,
                                   on_missing_image="skip")
    assert skipping.image_ids == [7] and skipping.missing_images == [5]


# --- preprocessing --------------------------------------------------------------------------------

def labelled_sample(height: int, width: int, boxes=None) -> EvalSample:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 5, (height, width)).astype(np.int32)
    ignore = labels == 4
    return finish_sample("k", rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                         labels, ignore, {i: f"c{i}" for i in range(1, 4)}, boxes)


def test_official_preprocessing_shapes_and_labels():
    sample = labelled_sample(60, 80, boxes={1: (20.0, 6.0, 40.0, 30.0)})
    out = Preprocess()(sample)                     # shortest side 256, centre crop 256
    assert out.image.shape == (256, 256, 3) and out.instances.shape == (256, 256)
    assert out.instances.dtype == np.int32 and out.ignore.dtype == bool
    assert set(np.unique(out.instances)) <= set(np.unique(sample.instances))
    assert not out.instances[out.ignore].any()
    assert out.metadata["original_size"] == [60, 80]
    # 60 x 80 -> 256 x 341, crop left = round(85 / 2) = 42
    scale = 256 / 60
    x0, y0, x1, y1 = out.boxes[1]
    assert x0 == pytest.approx(20 * 341 / 80 - 42) and y0 == pytest.approx(6 * scale)
    assert x1 == pytest.approx(40 * 341 / 80 - 42) and y1 == pytest.approx(30 * scale)
    assert Preprocess(resolution=None)(sample) is sample
    for size in (224, 320):
        assert Preprocess(resolution=size)(sample).instances.shape == (size, size)
    portrait = Preprocess(resolution=32, crop="none")(labelled_sample(50, 20))
    assert portrait.instances.shape == (80, 32)
    assert Preprocess(image_resample="bicubic")(sample).image.shape == (256, 256, 3)
    with pytest.raises(ValueError, match="crop: must be one of 'center', 'none'"):
        Preprocess(crop="random")


def test_nearest_neighbour_upscaling_replicates_labels_exactly():
    sample = labelled_sample(2, 3)
    out = Preprocess(resolution=4, crop="none")(sample)
    np.testing.assert_array_equal(out.instances, np.kron(sample.instances, np.ones((2, 2), int)))
    np.testing.assert_array_equal(out.ignore, np.kron(sample.ignore, np.ones((2, 2), bool)))
    cropped = Preprocess(resolution=4)(sample)       # 4 x 6, centre crop: left = 1
    np.testing.assert_array_equal(cropped.instances, out.instances[:, 1:5])


def test_cropped_away_instances_leave_the_classes():
    instances = np.zeros((4, 12), dtype=np.int32)
    instances[:, 0] = 1
    instances[:, 5:7] = 2
    sample = finish_sample("k", np.zeros((4, 12, 3), np.uint8), instances,
                           np.zeros((4, 12), bool), {1: "a", 2: "b"})
    out = Preprocess(resolution=4)(sample)
    assert out.instance_classes == {2: "b"}


# --- errors and the dispatcher ------------------------------------------------------------------------

def test_missing_paths_name_the_path_the_data_and_the_param(tmp_path, coco_root):
    with pytest.raises(DatasetNotFound, match=r"COCO root not found at .*nowhere.*cocodataset"
                                              r".*data\.coco\.root"):
        CocoInstances(tmp_path / "nowhere")
    (coco_root / "annotations" / "instances_val2017.json").rename(coco_root / "moved.json")
    with pytest.raises(DatasetNotFound, match="instances_val2017.json"):
        CocoInstances(coco_root)
    with pytest.raises(DatasetNotFound, match=r"VOC 2012 root .*data\.voc\.root.*nowhere"):
        VocInstances(tmp_path / "nowhere")
    with pytest.raises(DatasetNotFound, match="objects365.org"):
        Objects365Instances(tmp_path / "nowhere", sam2_model="x", cache_dir=None)
    with pytest.raises(DatasetNotFound, match="toy world folder"):
        load_eval_dataset("toy", root=tmp_path / "nowhere")


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    root = write_coco(tmp_path / "coco")
    (root / "val2017" / f"{1:012d}.png").unlink()
    with pytest.raises(UnreadableSample, match=f"{1:012d}.png: file not found"):
        CocoInstances(root)[0]
    (root / "val2017" / f"{1:012d}.png").write_bytes(b"not an image")
    with pytest.raises(UnreadableSample, match=f"{1:012d}.png: not a recognisable image"):
        CocoInstances(root)[0]


def test_load_eval_dataset_dispatches_and_checks_params(coco_root, voc_root):
    assert set(EVAL_DATASETS) == {"coco", "toy", "voc", "clevrtex", "objects365"}
    reader = load_eval_dataset("coco", root=coco_root, crowd="ignore", resolution=None, limit=1)
    assert isinstance(reader, CocoInstances) and len(reader) == 1
    assert reader[0].ignore[4, 6] and reader.conventions()["resolution"] is None
    from glass.eval import object_discovery   # the samples feed the metrics directly

    sample = reader[0]
    perfect = object_discovery(sample.instances, sample.instances, ignore=sample.ignore)
    assert perfect["miou"] == 1.0 and perfect["num_gt_regions"] == 3   # bg, person, dog
    voc = load_eval_dataset("voc", root=voc_root, resolution=320)
    assert voc[0].instances.shape == (320, 320) and voc.conventions()["voc_boundary"] == "ignore"
    with pytest.raises(ValueError, match="unknown params.*voc_boundary"):
        load_eval_dataset("coco", root=coco_root, voc_boundary="ignore")
    with pytest.raises(ValueError, match="unknown evaluation dataset"):
        load_eval_dataset("imagenet")
