"""The short CI version of the miniature ablation: every setting trains and is evaluated."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_short_ablation_writes_the_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "experiments/ablation_toy.py", "--steps", "3", "--seeds", "0",
         "--train-samples", "24", "--eval-images", "6", "--work-dir", str(tmp_path / "work"),
         "--generator", "stable_diffusion",
         "--report-dir", str(tmp_path / "reports")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "reports" / "ablation_toy.json").read_text())
    assert report["generator"] == "stable_diffusion"
    assert report["encoder"] == "models/toy/dinov2"
    for setting in ("full", "semantic_only", "instance_only", "recon_only", "oracle_full"):
        row = report[setting]
        assert row["generator"] == ("toy" if setting == "oracle_full" else "stable_diffusion")
        assert 0.0 <= row["miou_i"] <= 1.0 and 0.0 <= row["mbo_i"] <= 1.0
        assert row["mbo_i"] >= row["miou_i"] - 1e-9  # best overlap is never below the matched IoU
        assert "same_class_merged" in row and row["seeds"] == 1
    assert "| full |" in (tmp_path / "reports" / "ablation_toy.md").read_text()


def test_a_run_resumes_only_on_what_it_was_trained_on(tmp_path):
    """A rerun in the same --work-dir resumes every run from its checkpoints; after the generator
    or the encoder was retrained that would mix weights, so it must stop and say what to do."""
    import pytest

    from glass.ablation import RUN_INPUTS_NAME, check_run_inputs
    from glass.errors import InvalidInput

    run_dir = tmp_path / "runs" / "full-seed0"
    inputs = {"shards": "a" * 64, "models": {"encoder": "b" * 64, "decoder": "c" * 64}}
    check_run_inputs(run_dir, inputs)                      # a new run: recorded
    assert json.loads((run_dir / RUN_INPUTS_NAME).read_text()) == inputs
    check_run_inputs(run_dir, json.loads(json.dumps(inputs)))   # the same inputs: resumes
    retrained = dict(inputs, models={"encoder": "d" * 64, "decoder": "c" * 64})
    with pytest.raises(InvalidInput, match="other models.*new --work-dir"):
        check_run_inputs(run_dir, retrained)
    legacy = tmp_path / "runs" / "semantic_only-seed0"
    (legacy / "model").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="without inputs.json"):
        check_run_inputs(legacy, inputs)
    assert (legacy / "model").is_dir()                     # nothing trained is deleted
