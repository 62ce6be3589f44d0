import json

import pytest

import glass.caption.run as caption_run
from glass.caption.params import CaptionParams
from glass.io import read_jsonl, write_json, write_jsonl
from glass.params import ParamsError
from typed_params import typed


def _index(tmp_path, n=100):
    records = [{"image_id": f"toy-train-{i:012d}", "file": f"/nowhere/{i}.jpg",
                "classes": ["kite", "tv"][: 1 + i % 2], "instance_counts": {"kite": 1 + i % 3, "tv": 1},
                "captions": [f"caption {i}"]} for i in range(n)]
    write_jsonl(tmp_path / "index_caption.jsonl", records)
    write_json(tmp_path / "class_stats.json",
               {"objects_per_image": {"1": 3, "2": 1}, "class_images": {"kite": 2, "tv": 1}})
    return records


def _run(tmp_path, params, out_name="captions.jsonl", seed=0, blip2_model=None):
    return caption_run.run_captioning(tmp_path / "index_caption.jsonl", tmp_path / "class_stats.json",
                                      typed(CaptionParams, params, "caption"), seed,
                                      tmp_path / out_name, tmp_path / "scratch",
                                      blip2_model=blip2_model)


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
    with pytest.raises(ParamsError, match="caption.backend: must be one of 'blip2'"):
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
    fingerprint = caption_run.caption_fingerprint(typed(CaptionParams, {"backend": "dataset"}), 1,
                                                  caption_run.file_sha256(tmp_path / "index_caption.jsonl"))
    (scratch / f"captions-dataset-{fingerprint}.jsonl").write_text(
        json.dumps({"image_id": "toy-train-000000000000", "backend": "dataset", "caption": "stale"}) + "\n")
    _run(tmp_path, {"backend": "dataset"}, seed=0)
    assert all(r["caption"] != "stale" for r in read_jsonl(tmp_path / "captions.jsonl"))


def test_blip2_backend_records_hostile_images_as_skips_and_captions_the_rest(tmp_path):
    """Hostile inputs through the real stage code with a tiny BLIP-2 loaded by from_pretrained."""
    import io

    import numpy as np
    from PIL import Image

    from glass.tiny.blip2 import build_tiny_blip2

    model_dir = build_tiny_blip2(tmp_path / "tiny-blip2", seed=0)
    images = tmp_path / "images"
    images.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buffer, format="JPEG")
    good = buffer.getvalue()
    (images / "good.jpg").write_bytes(good)
    (images / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (images / "zero.jpg").write_bytes(b"")
    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(images / "cmyk.jpg")
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(images / "deep.png")
    Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(images / "alpha.png")
    Image.new("P", (40, 40), 3).save(images / "palette.png")
    Image.new("RGB", (1, 1)).save(images / "one.png")
    Image.new("RGB", (40, 40)).save(images / "png_named.jpg", format="PNG")
    names = ["good.jpg", "truncated.jpg", "zero.jpg", "cmyk.jpg", "deep.png", "alpha.png",
             "palette.png", "one.png", "png_named.jpg", "missing.jpg"]
    index = [{"image_id": f"im-{i:02d}", "file": str(images / name), "classes": [],
              "instance_counts": {}, "captions": []} for i, name in enumerate(names)]
    write_jsonl(tmp_path / "index_caption.jsonl", index)
    write_json(tmp_path / "class_stats.json", {})
    existing = tmp_path / "captions.jsonl"
    params = {"backend": "blip2", "min_image_side": 16,
              "blip2": {"device": "cpu", "dtype": "float32", "batch_size": 4, "max_new_tokens": 5}}
    with pytest.raises(ValueError, match="no BLIP-2 model"):
        _run(tmp_path, params)
    summary = _run(tmp_path, params, blip2_model=str(model_dir))
    records = {r["image_id"]: r for r in read_jsonl(existing)}
    by_name = {name: records[f"im-{i:02d}"] for i, name in enumerate(names)}
    assert set(summary["skip_reasons"]) == {
        by_name[n]["skipped"] for n in ("truncated.jpg", "zero.jpg", "one.png", "missing.jpg")}
    assert "truncated or corrupt" in by_name["truncated.jpg"]["skipped"]
    assert by_name["zero.jpg"]["skipped"] == "empty file (0 bytes)"
    assert by_name["missing.jpg"]["skipped"] == "file not found"
    assert "smaller than the minimum side" in by_name["one.png"]["skipped"]
    for name in ("good.jpg", "cmyk.jpg", "deep.png", "alpha.png", "palette.png", "png_named.jpg"):
        assert isinstance(by_name[name]["caption"], str) and "skipped" not in by_name[name]
    assert "content is PNG" in by_name["png_named.jpg"]["notes"][0]
    assert summary["captioned"] == 6 and summary["skipped"] == 4
