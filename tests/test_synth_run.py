import json

import pytest

from glass.data.toy_world import ToyWorldConfig
from glass.io import write_jsonl
from glass.synth.params import SynthParams, SynthToyParams
from glass.synth.run import run_fingerprint, run_synthesize, synthesis_records

TOY_SYNTH = SynthParams(backend="toy", max_samples=None, shard_size=2, batch_size=2,
                        num_workers=0, jpeg_quality=90,
                        toy=SynthToyParams(unsure_band=1, world=ToyWorldConfig(image_size=48)))

PROMPTS = [
    {"image_id": "toy-train-000000000001", "caption": "A photo of a kite.", "classes": ["kite"],
     "prompt": "A photo of a kite.; kite"},
    {"image_id": "toy-train-000000000002", "caption": "A field.", "classes": [], "prompt": "A field."},
    {"image_id": "toy-train-000000000003", "skipped": "empty caption"},
    {"image_id": "toy-train-000000000004", "caption": "Two tvs.", "classes": ["tv"],
     "prompt": "Two tvs.; tv"},
    {"image_id": "toy-train-000000000005", "caption": "A giraffe.", "classes": ["giraffe"],
     "prompt": "A giraffe.; giraffe"},
]


def test_records_keep_every_prompt_accounted_for():
    records, skipped = synthesis_records(PROMPTS, images_per_prompt=2, no_class_prompts="skip",
                                         max_samples=None, seed=0)
    assert [r["key"] for r in records] == [
        "toy-train-000000000001-0", "toy-train-000000000001-1", "toy-train-000000000004-0",
        "toy-train-000000000004-1", "toy-train-000000000005-0", "toy-train-000000000005-1"]
    assert {s["reason"] for s in skipped} == {"prompt has no COCO class",
                                              "prompts stage: empty caption"}
    kept, _ = synthesis_records(PROMPTS, images_per_prompt=1, no_class_prompts="generate_without_mask",
                                max_samples=None, seed=0)
    assert "toy-train-000000000002" in [r["key"] for r in kept]
    with pytest.raises(ValueError, match="no_class_prompts"):
        synthesis_records(PROMPTS, images_per_prompt=1, no_class_prompts="drop", max_samples=None, seed=0)


def test_max_samples_is_a_seeded_subset_in_key_order():
    prompts = [{"image_id": f"p{i:03d}", "caption": "c", "classes": ["kite"], "prompt": "c; kite"}
               for i in range(50)]
    a, _ = synthesis_records(prompts, images_per_prompt=1, no_class_prompts="skip", max_samples=10, seed=1)
    b, _ = synthesis_records(prompts[::-1], images_per_prompt=1, no_class_prompts="skip", max_samples=10, seed=1)
    assert a == b and len(a) == 10 and [r["key"] for r in a] == sorted(r["key"] for r in a)


def test_speed_settings_do_not_enter_fingerprints():
    def fingerprint(synth):
        return run_fingerprint(synth, synth.generator_settings({}), 0, "prompts-sha")

    base = fingerprint(TOY_SYNTH)
    assert fingerprint(TOY_SYNTH.replace(batch_size=7, num_workers=3)) == base
    # the unused backend's settings do not decide the toy shards either
    assert fingerprint(TOY_SYNTH.replace(stable_diffusion=TOY_SYNTH.stable_diffusion.replace(
        steps=3))) == base
    assert fingerprint(TOY_SYNTH.replace(shard_size=3)) != base
    assert fingerprint(TOY_SYNTH.replace(toy=TOY_SYNTH.toy.replace(unsure_band=2))) != base


def test_run_synthesize_writes_shards_manifest_metrics_and_grid(tmp_path):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    metrics = run_synthesize(tmp_path / "prompts.jsonl", TOY_SYNTH, {}, 0, tmp_path / "shards",
                             tmp_path / "scratch", tmp_path / "metrics.json", tmp_path / "grid.png")
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    # 3 prompts reach the generator (one is refused: no toy shape for giraffe) → 2 shards of 2 keys
    assert names == ["manifest.json", "shard-000000.json", "shard-000000.tar",
                     "shard-000001.json", "shard-000001.tar", "skipped_prompts.jsonl"]
    assert metrics["samples"] == 2 and metrics["prompts"] == 5 and metrics["requested_samples"] == 3
    assert metrics["skipped_before_generation"] == 2 and metrics["skipped_by_generator"] == 1
    assert metrics["samples_with_mask"] == 2 and 0 < metrics["mean_unsure_fraction"] < 0.3
    assert metrics["share_prompt_classes_found"] == 1.0
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert list((tmp_path / "scratch").iterdir()) == []  # scratch emptied once complete


def test_fingerprints_name_a_model_folder_by_its_repository_path_and_its_weights(tmp_path):
    """Two clones of one repository give the same fingerprint and records (no machine path in
    them); different weights in the same folder give another fingerprint."""
    from glass.synth.params import GeneratorSettings

    fingerprints, records = [], []
    for clone in ("a", "b"):
        folder = tmp_path / clone / "models" / "sd"
        folder.mkdir(parents=True)
        (tmp_path / clone / ".git").mkdir()
        (folder / "weights.bin").write_bytes(b"same weights")
        settings = GeneratorSettings(backend="stable_diffusion", models={"stable_diffusion": str(folder)})
        fingerprints.append(run_fingerprint(TOY_SYNTH, settings, 0, "prompts-sha"))
        records.append(settings.relevant())
    assert fingerprints[0] == fingerprints[1]
    assert records[0] == records[1] and records[0]["models"] == {"stable_diffusion": "models/sd"}
    (tmp_path / "b" / "models" / "sd" / "weights.bin").write_bytes(b"retrained weights")
    assert run_fingerprint(TOY_SYNTH, settings, 0, "prompts-sha") != fingerprints[0]
