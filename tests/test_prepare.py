import json

import pytest

from glass.data.coco import DatasetNotFound, load_coco_index
from glass.data.params import DataParams
from glass.data.prepare import class_statistics, prepare, select_subset
from glass.data.voc import load_voc_index
from glass.io import read_jsonl
from glass.params import ParamsError
from typed_params import typed

TOY = typed(DataParams, {"dataset": "toy", "max_images": None,
                         "toy": {"train_images": 12, "val_images": 4, "image_size": 64,
                                 "object_radius": [0.14, 0.26]}}, "data")


def test_prepare_toy_world_end_to_end(tmp_path):
    summary = prepare(TOY, seed=3, out_dir=tmp_path)
    assert summary == {"dataset": "toy", "caption_images": 12, "eval_images": 4}
    index = read_jsonl(tmp_path / "index_caption.jsonl")
    assert [r["image_id"] for r in index] == sorted(r["image_id"] for r in index)
    for record in index:
        assert (tmp_path / "toy" / "images" / "train").joinpath(record["file"].rsplit("/", 1)[1]).exists()
        assert record["classes"] and set(record["classes"]) == set(record["instance_counts"])
        assert len(record["captions"]) == 2
    stats = json.loads((tmp_path / "class_stats.json").read_text())
    assert stats["num_images"] == 12
    assert sum(stats["class_instances"].values()) == sum(
        sum(r["instance_counts"].values()) for r in index)
    # deterministic: a second run writes identical index files
    again = tmp_path / "again"
    prepare(TOY, seed=3, out_dir=again)
    for name in ("index_caption.jsonl", "index_eval.jsonl", "class_stats.json"):
        a = (tmp_path / name).read_text().replace(str(tmp_path), "ROOT")
        b = (again / name).read_text().replace(str(again), "ROOT")
        assert a == b


def test_missing_coco_names_the_path_and_how_to_get_it(tmp_path):
    data = typed(DataParams, {"dataset": "coco", "coco": {"root": str(tmp_path / "nowhere")}})
    with pytest.raises(DatasetNotFound) as caught:
        prepare(data, seed=0, out_dir=tmp_path / "out")
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "train2017") in message and "cocodataset.org" in message
    assert not (tmp_path / "out" / "index_caption.jsonl").exists()


def test_unknown_dataset_kind(tmp_path):
    with pytest.raises(ParamsError, match="data.dataset: must be one of 'coco', 'voc', 'toy', "
                                          "got the string 'imagenet'"):
        typed(DataParams, {"dataset": "imagenet"}, "data")


def _tiny_coco(tmp_path):
    images = tmp_path / "train2017"
    images.mkdir()
    instances = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 10, "height": 10},
                   {"id": 3, "file_name": "b.jpg", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "area": 20.0, "iscrowd": 0,
             "bbox": [0, 0, 4, 5], "segmentation": [[0, 0, 4, 0, 4, 5, 0, 5]]},
            {"id": 2, "image_id": 7, "category_id": 1, "area": 50.0, "iscrowd": 1,
             "bbox": [0, 0, 10, 5], "segmentation": {"counts": [0, 50, 50], "size": [10, 10]}},
            {"id": 3, "image_id": 7, "category_id": 18, "area": 10.0, "iscrowd": 0,
             "bbox": [5, 5, 2, 5], "segmentation": [[5, 5, 7, 5, 7, 10, 5, 10]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(instances))
    return images, path


def test_coco_loader_orders_classes_by_area_and_ignores_crowd_in_counts(tmp_path):
    images, instances = _tiny_coco(tmp_path)
    records = load_coco_index(images, instances, id_prefix="coco-train2017")
    assert [r["image_id"] for r in records] == ["coco-train2017-000000000003",
                                                "coco-train2017-000000000007"]
    empty, busy = records
    assert empty["classes"] == [] and empty["instance_counts"] == {}
    assert busy["classes"] == ["person", "dog"]  # crowd person region 50 px > dogs 30 px
    assert busy["instance_counts"] == {"person": 0, "dog": 2}


def test_coco_loader_rejects_non_coco_categories_and_bad_json(tmp_path):
    images, instances = _tiny_coco(tmp_path)
    data = json.loads(instances.read_text())
    data["categories"][0]["name"] = "unicorn"
    instances.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'unicorn' is not a COCO class"):
        load_coco_index(images, instances, id_prefix="x")


def _tiny_voc(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2008_000002\n2008_000001\n")
    for voc_id, names in (("2008_000001", ["sofa", "person", "person"]),
                          ("2008_000002", ["tvmonitor"])):
        objects = "".join(f"<object><name>{n}</name></object>" for n in names)
        (root / "Annotations" / f"{voc_id}.xml").write_text(
            f"<annotation><size><width>500</width><height>375</height></size>{objects}</annotation>")


def test_voc_loader_maps_names_to_coco(tmp_path):
    _tiny_voc(tmp_path)
    records = load_voc_index(tmp_path, "ImageSets/Segmentation/train.txt")
    assert [r["image_id"] for r in records] == ["voc-2008_000001", "voc-2008_000002"]
    assert records[0]["classes"] == ["couch", "person"]
    assert records[0]["instance_counts"] == {"couch": 1, "person": 2}
    assert records[1]["classes"] == ["tv"] and records[1]["width"] == 500
    with pytest.raises(DatasetNotFound, match="trainaug"):
        load_voc_index(tmp_path, "ImageSets/Segmentation/trainaug.txt")


def test_subset_is_seeded_and_independent_of_other_images():
    records = [{"image_id": f"im{i:03d}"} for i in range(100)]
    subset = select_subset(records, 10, seed=1)
    assert len(subset) == 10 and subset == sorted(subset, key=lambda r: r["image_id"])
    assert select_subset(list(reversed(records)), 10, seed=1) == subset
    assert select_subset(records, 10, seed=2) != subset
    assert select_subset(records, None, seed=1) == records


def test_class_statistics():
    stats = class_statistics([
        {"classes": ["dog", "cat"], "instance_counts": {"dog": 2, "cat": 1}},
        {"classes": ["dog"], "instance_counts": {"dog": 1}},
        {"classes": [], "instance_counts": {}},
    ])
    assert stats["objects_per_image"] == {"0": 1, "1": 1, "3": 1}
    assert stats["class_images"] == {"cat": 1, "dog": 2}
    assert stats["class_instances"] == {"cat": 1, "dog": 3}
