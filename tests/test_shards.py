import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from glass.io import file_sha256
from glass.synth.generator import SynthSample, synthesis_seed
from glass.synth.shards import (
    build_manifest,
    completed_sidecar,
    encode_sample,
    plan_shards,
    read_sidecar,
    remove_stale_files,
    shard_name,
    sidecar_path,
    write_manifest,
    write_shard,
)
from typed_params import toy_generator


def toy_samples(n, size=32):
    generator = toy_generator({"image_size": size})
    classes = [["kite"], ["tv", "pizza"], ["donut"]]
    return [generator.generate({"key": f"toy-{i:03d}", "caption": f"scene {i}", "prompt": "p",
                                "classes": classes[i % 3]}, synthesis_seed(0, f"toy-{i:03d}"))
            for i in range(n)]


def encode_all(samples, store_attention=False):
    return {s.key: encode_sample(s, jpeg_quality=90, store_attention=store_attention)
            for s in samples}


def test_plan_depends_only_on_the_set_of_keys():
    keys = [f"k{i:02d}" for i in range(10)]
    plan = plan_shards(keys, 4)
    assert plan == [keys[0:4], keys[4:8], keys[8:10]]
    assert plan_shards(list(reversed(keys)), 4) == plan
    assert plan_shards([], 4) == []
    assert shard_name(123) == "shard-000123.tar"


@pytest.mark.parametrize("bad", ["a.b", "dir/key", "", "back\\slash"])
def test_keys_that_webdataset_cannot_carry_are_refused(bad):
    with pytest.raises(ValueError, match="key"):
        plan_shards(["fine", bad], 2)


def test_duplicate_keys_and_bad_shard_sizes_are_refused():
    with pytest.raises(ValueError, match="unique.*'a'"):
        plan_shards(["a", "b", "a"], 2)
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(["a"], 0)


def test_encoded_sample_members_round_trip():
    sample = toy_samples(2)[1]
    sample.attention = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    members = encode_sample(sample, jpeg_quality=90, store_attention=True)
    assert sorted(members) == ["attn.npy", "jpg", "json", "mask.png"]
    mask = np.asarray(Image.open(io.BytesIO(members["mask.png"])))
    np.testing.assert_array_equal(mask, sample.mask)
    image = np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("RGB")).astype(int)
    assert np.abs(image - sample.image).mean() < 8
    meta = json.loads(members["json"])
    assert meta["key"] == sample.key and meta["classes"] == ["tv", "pizza"]
    assert meta["has_mask"] and meta["has_attention"] and meta["label_to_coco_id"] == {"1": 72,
                                                                                         "2": 59}
    # canonical: sorted keys, no spaces
    assert members["json"] == json.dumps(meta, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()
    attention = np.load(io.BytesIO(members["attn.npy"]))
    assert attention.dtype == np.float16 and attention.shape == (2, 8, 8)
    assert encode_sample(sample, jpeg_quality=90, store_attention=True) == members

    without = encode_sample(sample, jpeg_quality=90, store_attention=False)
    assert "attn.npy" not in without and not json.loads(without["json"])["has_attention"]
    no_mask = SynthSample(key="m", image=sample.image, mask=None, classes=[],
                          metadata={"n": np.int64(3)})
    members = encode_sample(no_mask, jpeg_quality=90, store_attention=True)
    assert sorted(members) == ["jpg", "json"]
    assert json.loads(members["json"]) == {"classes": [], "has_attention": False,
                                           "has_mask": False, "key": "m", "n": 3}


def test_shard_is_deterministic_and_readable_by_webdataset(tmp_path):
    samples = toy_samples(4)
    encoded = encode_all(samples)
    skipped = [{"key": "toy-999", "reason": "the toy world has no shape for ['giraffe']"}]
    sidecar = write_shard(tmp_path / "a" / "shard-000000.tar", encoded, skipped=skipped,
                          inputs_sha256="x")
    # another insertion order, another directory: the same bytes
    write_shard(tmp_path / "b" / "shard-000000.tar", dict(reversed(list(encoded.items()))),
                skipped=skipped, inputs_sha256="x")
    tar_a, tar_b = tmp_path / "a" / "shard-000000.tar", tmp_path / "b" / "shard-000000.tar"
    assert tar_a.read_bytes() == tar_b.read_bytes()
    assert sidecar_path(tar_a).read_bytes() == sidecar_path(tar_b).read_bytes()
    assert not (tmp_path / "a" / "shard-000000.tar.tmp").exists()

    assert sidecar == read_sidecar(tar_a)
    assert sidecar["sha256"] == file_sha256(tar_a) and sidecar["num_samples"] == 4
    assert sidecar["keys"] == [s.key for s in samples] and sidecar["skipped"] == skipped

    with tarfile.open(tar_a) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"{s.key}.{ext}" for s in samples
                                         for ext in ("jpg", "json", "mask.png")]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)}

    # The "pil" decoder would make the label map RGB: read masks as they are stored.
    read_mask = wds.handle_extension("mask.png",
                                     lambda data: np.asarray(Image.open(io.BytesIO(data))))
    dataset = wds.WebDataset(str(tar_a), shardshuffle=False, empty_check=False)
    dataset = dataset.decode(read_mask, "pil")
    read = list(dataset)
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    for record, sample in zip(read, samples):
        assert record["jpg"].size == (32, 32)
        np.testing.assert_array_equal(record["mask.png"], sample.mask)
        assert record["json"]["classes"] == sample.classes
        assert record["json"]["seed"] == synthesis_seed(0, sample.key)


def test_completed_sidecar_requires_matching_hash_keys_and_inputs(tmp_path):
    encoded = encode_all(toy_samples(3))
    tar = tmp_path / "shard-000000.tar"
    skipped = [{"key": "toy-777", "reason": "no"}]
    write_shard(tar, encoded, skipped=skipped, inputs_sha256="in")
    planned = sorted(encoded) + ["toy-777"]
    assert completed_sidecar(tar, planned, "in") is not None
    assert completed_sidecar(tar, planned, "other inputs") is None
    assert completed_sidecar(tar, planned[:-1], "in") is None
    tar.write_bytes(tar.read_bytes()[:-512] + b"x" * 512)  # damaged after writing
    assert completed_sidecar(tar, planned, "in") is None
    tar.unlink()
    assert completed_sidecar(tar, planned, "in") is None


def test_stale_files_and_manifest_are_removed(tmp_path):
    for name in ["shard-000000.tar", "shard-000000.json", "shard-000001.tar.tmp",
                 "shard-000005.tar", "shard-000005.json", ".shard-000001.json.abc.tmp",
                 "manifest.json", "README.md"]:
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_files(tmp_path, ["shard-000000.tar", "shard-000001.tar"])
    assert sorted(removed) == sorted([".shard-000001.json.abc.tmp", "manifest.json",
                                      "shard-000001.tar.tmp", "shard-000005.json",
                                      "shard-000005.tar"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "shard-000000.json",
                                                          "shard-000000.tar"]


def test_manifest_lists_shards_skips_and_settings(tmp_path):
    first = write_shard(tmp_path / "shard-000000.tar", encode_all(toy_samples(2)),
                        skipped=[{"key": "z", "reason": "cannot draw giraffe"}])
    second = write_shard(tmp_path / "shard-000001.tar", {}, skipped=[])
    manifest = write_manifest(tmp_path, [second, first], {"seed": 0})
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert [s["name"] for s in manifest["shards"]] == ["shard-000000.tar", "shard-000001.tar"]
    assert manifest["shards"][0]["skipped"] == [{"key": "z", "reason": "cannot draw giraffe"}]
    assert manifest["shards"][0]["sha256"] == first["sha256"]
    assert (manifest["total_shards"], manifest["total_prompts"], manifest["total_samples"],
            manifest["total_skipped"]) == (2, 3, 2, 1)
    assert manifest["settings"] == {"seed": 0} and len(manifest["fingerprint"]) == 64
    assert build_manifest([first, second], {"seed": 0}) == manifest
    assert build_manifest([first], {"seed": 0}, "caller's")["fingerprint"] == "caller's"
    # an empty shard is still a valid tar
    assert list(wds.WebDataset(str(tmp_path / "shard-000001.tar"), shardshuffle=False,
                               empty_check=False)) == []
