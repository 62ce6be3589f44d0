"""Tests of the procedural toy world: config checks, scene statistics, rendering and the COCO
files it writes (read back with pycocotools, as the pipeline reads real COCO)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from glass.data.classes import COCO_CATEGORY_IDS
from glass.data.toy_world import (
    TOY_CLASS_STYLES,
    BackgroundSpec,
    ObjectSpec,
    Scene,
    ToyWorldConfig,
    count_phrase,
    image_id,
    make_captions,
    object_mask,
    plural,
    render_scene,
    sample_scene,
    scene_for_image,
    write_coco_dataset,
)

# pycocotools' decode trips a numpy 2 copy-keyword deprecation warning; it is harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CFG = ToyWorldConfig()
SPLITS = {"train": 6, "val": 4}


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    rng = np.random.default_rng(1234)
    return [sample_scene(rng, CFG) for _ in range(200)]


@pytest.fixture(scope="module")
def rendered(scenes):
    return [render_scene(scene, CFG) for scene in scenes]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("toy") / "seed7"
    write_coco_dataset(out_dir, CFG, SPLITS, seed=7, progress=False)
    return out_dir


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 16}, "image_size"),
    ({"image_size": 64.0}, "image_size: must be an integer, got float 64.0"),
    ({"min_objects": 0}, "min_objects"),
    ({"min_objects": 4, "max_objects": 3}, "max_objects"),
    ({"object_radius": (0.05, 0.2)}, r"object_radius: values must be in \[0.12, 0.4\], got 0.05"),
    ({"object_radius": (0.3, 0.2)}, "min <= max"),
    ({"object_radius": (0.2,)}, "object_radius: must be a list of 2 values"),
    ({"duplicate_class_prob": 1.5}, "duplicate_class_prob"),
    ({"min_visible_fraction": 0.0}, "min_visible_fraction"),
    ({"colour_jitter": -0.1}, "colour_jitter"),
    ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"classes": ()}, "at least one class"),
    ({"classes": ("kite", "kite")}, "repeated"),
    ({"classes": ("kite", "spaceship")}, "not one of the 80 COCO"),
    ({"classes": ("kite", "giraffe")}, "no shape for 'giraffe'"),
    ({"classes": "kite"}, "single string"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyWorldConfig(**kwargs)


def test_config_accepts_lists_and_stays_hashable():
    cfg = ToyWorldConfig(object_radius=[0.15, 0.2], classes=["kite", "tv"])
    assert cfg.object_radius == (0.15, 0.2) and cfg.classes == ("kite", "tv")
    hash(cfg)
    assert json.loads(json.dumps(cfg.to_dict()))["classes"] == ["kite", "tv"]


# --- scene statistics ----------------------------------------------------------------------------

def test_object_counts_radii_and_visibility(scenes, rendered):
    low, high = CFG.object_radius
    for scene, render in zip(scenes, rendered):
        assert CFG.min_objects <= len(scene.objects) <= CFG.max_objects
        for instance_id, obj in enumerate(scene.objects, start=1):
            assert low <= obj.radius <= high
            full_area = object_mask(obj, CFG.image_size).sum()
            visible_area = (render.instance_map == instance_id).sum()
            assert visible_area >= CFG.min_visible_fraction * full_area - 1e-9


def test_objects_are_large(rendered):
    image_area = CFG.image_size ** 2
    smallest = min((r.instance_map == k).sum() / image_area
                   for r in rendered for k in range(1, len(r.instance_classes) + 1))
    assert smallest >= 0.015


def test_many_scenes_repeat_a_class(scenes):
    duplicated = sum(len(set(s.class_names)) < len(s.class_names) for s in scenes)
    assert duplicated / len(scenes) >= 0.30


def test_every_class_appears_and_classes_differ_in_mean_colour(rendered):
    pixels: dict[str, list[np.ndarray]] = {name: [] for name in CFG.classes}
    for render in rendered:
        for instance_id, name in enumerate(render.instance_classes, start=1):
            pixels[name].append(render.image[render.instance_map == instance_id])
    means = {name: np.concatenate(chunks).astype(float).mean(axis=0)
             for name, chunks in pixels.items()}
    names = sorted(means)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            assert np.linalg.norm(means[first] - means[second]) > 20, (first, second)


def test_prompted_scene_has_exactly_the_requested_classes():
    rng = np.random.default_rng(5)
    for requested in (["kite"], ["stop sign", "donut"], list(CFG.classes)):
        for _ in range(10):
            scene = sample_scene(rng, CFG, requested)
            assert set(scene.class_names) == set(requested)
    for _ in range(10):
        scene = sample_scene(rng, CFG, ["kite", "kite", "tv"], allow_extra=False)
        assert sorted(scene.class_names) == ["kite", "kite", "tv"]
    with pytest.raises(ValueError, match="cannot draw"):
        sample_scene(rng, CFG, ["giraffe"])


def test_scene_round_trips_through_json(scenes):
    for scene in scenes[:20]:
        data = json.loads(json.dumps(scene.to_dict()))
        assert Scene.from_dict(data) == scene


# --- rendering -----------------------------------------------------------------------------------

def _single_object_scene(class_name: str) -> Scene:
    background = BackgroundSpec("gradient", ((90, 90, 90), (110, 110, 110)), 0.0, 0.1, 0)
    obj = ObjectSpec(class_name, (0.5, 0.5), 0.25, 0.0, (150, 94, 52), 0.0, 0.1)
    return Scene(background, (obj,), grain_seed=0)


def test_donut_mask_has_a_hole_showing_the_background():
    render = render_scene(_single_object_scene("donut"), CFG)
    centre = CFG.image_size // 2
    assert render.instance_map[centre, centre] == 0
    assert np.abs(render.image[centre, centre].astype(int) - 100).max() < 15   # background grey
    ring_row = centre + int(0.25 * 0.75 * CFG.image_size)                   # on the ring
    assert render.instance_map[ring_row, centre] == 1


def test_render_outputs_and_semantic_map(rendered):
    render = rendered[0]
    assert render.image.shape == (CFG.image_size, CFG.image_size, 3)
    assert render.image.dtype == np.uint8 and render.instance_map.dtype == np.int32
    assert render.instance_map.max() == len(render.instance_classes)
    labels = {name: COCO_CATEGORY_IDS[name] for name in CFG.classes}
    semantic = render.semantic_map(labels)
    for instance_id, name in enumerate(render.instance_classes, start=1):
        assert (semantic[render.instance_map == instance_id] == labels[name]).all()
    assert (semantic[render.instance_map == 0] == 0).all()


def test_every_shape_renders_distinctly():
    masks = {name: render_scene(_single_object_scene(name), CFG).instance_map == 1
             for name in TOY_CLASS_STYLES}
    for name, mask in masks.items():
        assert mask.mean() > 0.05, name
    names = sorted(masks)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            overlap = (masks[first] & masks[second]).sum() / (masks[first] | masks[second]).sum()
            # A regular octagon covers 90 % of its circumscribed disc; the stop sign's white
            # rim (and colour) is what separates it from the sports ball at low resolution.
            assert overlap < 0.95, (first, second)


# --- captions ------------------------------------------------------------------------------------

def test_plurals_and_count_phrases():
    assert plural("kite") == "kites" and plural("sports ball") == "sports balls"
    assert plural("bus") == "buses" and plural("bench") == "benches"
    assert count_phrase("umbrella", 1, numeral=False) == "an umbrella"
    assert count_phrase("umbrella", 1, numeral=True) == "one umbrella"
    assert count_phrase("kite", 2, numeral=False) == "two kites"


def test_captions_mention_each_class_present(scenes):
    rng = np.random.default_rng(0)
    for scene in scenes:
        captions = make_captions(scene, rng)
        assert len(captions) == 2
        for caption in captions:
            for name in set(scene.class_names):
                assert name in caption, (name, caption)


# --- the written COCO dataset --------------------------------------------------------------------

def test_written_layout_and_ids(dataset):
    for split, size in SPLITS.items():
        instances = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text())
        assert [im["id"] for im in instances["images"]] == [image_id(split, i) for i in range(size)]
        for image in instances["images"]:
            assert (dataset / "images" / split / image["file_name"]).is_file()
        assert {c["name"] for c in instances["categories"]} == set(CFG.classes)
        assert all(c["id"] == COCO_CATEGORY_IDS[c["name"]] for c in instances["categories"])
    assert image_id("val", 0) == 1_000_001 and image_id("train", 0) == 1


def test_pycocotools_masks_match_the_rendered_instance_maps(dataset):
    for split, size in SPLITS.items():
        coco = COCO(str(dataset / "annotations" / f"instances_{split}.json"))
        for index in range(size):
            render = render_scene(scene_for_image(CFG, 7, split, index), CFG)
            annotations = sorted(coco.loadAnns(coco.getAnnIds(imgIds=image_id(split, index))),
                                 key=lambda a: a["id"])
            assert len(annotations) == len(render.instance_classes)
            for instance_id, annotation in enumerate(annotations, start=1):
                expected = render.instance_map == instance_id
                assert np.array_equal(coco.annToMask(annotation), expected)
                assert annotation["area"] == expected.sum()
                assert coco.cats[annotation["category_id"]]["name"] == \
                    render.instance_classes[instance_id - 1]


def test_written_captions_mention_annotated_classes(dataset):
    instances = COCO(str(dataset / "annotations" / "instances_train.json"))
    captions = COCO(str(dataset / "annotations" / "captions_train.json"))
    for image in instances.dataset["images"]:
        texts = [a["caption"] for a in captions.loadAnns(captions.getAnnIds(imgIds=image["id"]))]
        assert len(texts) == 2
        names = {instances.cats[a["category_id"]]["name"]
                 for a in instances.loadAnns(instances.getAnnIds(imgIds=image["id"]))}
        assert all(name in text for name in names for text in texts)


def test_same_seed_gives_identical_files_and_other_seed_differs(dataset, tmp_path):
    again = tmp_path / "again"
    write_coco_dataset(again, CFG, SPLITS, seed=7, progress=False)
    assert _file_bytes(again) == _file_bytes(dataset)

    other = tmp_path / "other"
    write_coco_dataset(other, CFG, SPLITS, seed=8, progress=False)
    first, second = _file_bytes(dataset), _file_bytes(other)
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_images_do_not_depend_on_other_splits(dataset, tmp_path):
    only_val = tmp_path / "only_val"
    write_coco_dataset(only_val, CFG, {"val": 2}, seed=7, progress=False)
    for path in (only_val / "images" / "val").iterdir():
        assert path.read_bytes() == (dataset / "images" / "val" / path.name).read_bytes()


def test_rewrite_removes_stale_images(tmp_path):
    write_coco_dataset(tmp_path, CFG, {"val": 3}, seed=1, progress=False)
    summary = write_coco_dataset(tmp_path, CFG, {"val": 2}, seed=1, progress=False)
    assert len(list((tmp_path / "images" / "val").iterdir())) == 2
    assert summary["images"] == {"val": 2}
    assert sum(summary["instances_per_class"].values()) == summary["instances"]["val"]


def test_bad_splits_and_seeds_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="split name"):
        write_coco_dataset(tmp_path, CFG, {"../x": 1}, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        write_coco_dataset(tmp_path, CFG, {"val": 1}, seed=-1, progress=False)
