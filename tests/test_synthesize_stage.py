"""The synthesize stage checks the paper configuration's attention resolutions before anything
is loaded."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_a_resolution_without_the_chosen_attention_maps_fails_before_loading(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synth"]["stable_diffusion"]["image_size"] = 768  # latent 96: no 16x16 / 32x32 maps
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "stages/synthesize.py", "--params", str(params_file),
         "--prompts", str(tmp_path / "absent.jsonl"), "--models", str(tmp_path / "no-models"),
         "--out", str(tmp_path / "shards"), "--scratch", str(tmp_path / "scratch"),
         "--metrics", str(tmp_path / "m.json"), "--grid", str(tmp_path / "g.png")],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2, result.stderr
    assert "768" in result.stderr and "16" in result.stderr
    assert "glass-model.json" not in result.stderr  # failed before even reading the models
    assert not (tmp_path / "shards").exists()
