import json

import pytest

import glass.caption.run as caption_run
from glass.io import read_jsonl, write_json, write_jsonl


def _index(tmp_path, n=100):
    records = [{"image_id": f"toy-train-{i:012d}", "file": f"/nowhere/{i}.jpg",
                "classes": ["kite", "tv"][: 1 + i % 2], "instance_counts": {"kite": 1 + i % 3, "tv": 1},
                "captions": [f"caption {i}"]} for i in range(n)]
    write_jsonl(tmp_path / "index_caption.jsonl", records)
    write_json(tmp_path / "class_stats.json",
               {"objects_per_image": {"1": 3, "2": 1}, "class_images": {"kite": 2, "tv": 1}})
    return records


def _run(tmp_path, params, out_name="captions.jsonl", seed=0):
    return caption_run.run_captioning(tmp_path / "index_caption.jsonl", tmp_path / "class_stats.json",
                                      params, seed, tmp_path / out_name, tmp_path / "scratch")


@pytest.mark.parametrize("backend", ["labels", "template", "dataset"])
def test_each_cheap_backend_writes_one_record_per_sample(tmp_path, backend):
    _index(tmp_path, 20)
    summary = _run(tmp_path, {"backend": backend, "template": {"num_captions": 7, "max_objects": 3}})
    records = read_jsonl(tmp_path / "captions.jsonl")
    assert len(records) == (7 if backend == "template" else 20) == summary["records"]
    assert all(r["backend"] == backend and r["caption"] for r in records)
    assert list((tmp_path / "scratch").iterdir()) == []  # scratch removed once complete


def test_unknown_backend(tmp_path):
    _index(tmp_path, 2)
    with pytest.raises(ValueError, match="caption.backend is 'gpt'"):
        _run(tmp_path, {"backend": "gpt"})


def test_an_interrupted_run_resumes_without_redoing_finished_images(tmp_path, monkeypatch):
    _index(tmp_path, 100)
    params = {"backend": "labels"}
    _run(tmp_path, params, out_name="reference.jsonl")

    real = caption_run.caption_with_labels

    def crashing(records):
        for i, result in enumerate(real(records)):
            if i == 70:
                raise KeyboardInterrupt("power cut")
            yield result

    monkeypatch.setattr(caption_run, "caption_with_labels", crashing)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, params)
    assert not (tmp_path / "captions.jsonl").exists()  # no half-written output

    seen = []

    def counting(records):
        records = list(records)
        seen.extend(r["image_id"] for r in records)
        return real(records)

    monkeypatch.setattr(caption_run, "caption_with_labels", counting)
    _run(tmp_path, params)
    assert len(seen) == 100 - 64  # the first 64 were fsynced as one chunk before the crash
    assert (tmp_path / "captions.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


def test_changed_settings_do_not_reuse_stale_scratch(tmp_path):
    _index(tmp_path, 5)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # a leftover partial file from another seed must not be picked up
    fingerprint = caption_run.caption_fingerprint({"backend": "dataset"}, 1,
                                                  caption_run.file_sha256(tmp_path / "index_caption.jsonl"))
    (scratch / f"captions-dataset-{fingerprint}.jsonl").write_text(
        json.dumps({"image_id": "toy-train-000000000000", "backend": "dataset", "caption": "stale"}) + "\n")
    _run(tmp_path, {"backend": "dataset"}, seed=0)
    assert all(r["caption"] != "stale" for r in read_jsonl(tmp_path / "captions.jsonl"))
