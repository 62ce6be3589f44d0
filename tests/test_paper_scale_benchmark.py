"""``benchmarks/paper_scale.py --smoke`` runs end to end and reports every number it measures.

The smoke run is the paper-scale code path on drastically shrunk random-weight configs (one
step everywhere), so it checks the wiring — synthesis with and without capture, both training
phases, checkpoint accounting — in seconds, not the paper-scale numbers themselves.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "paper_scale.py"

# every number the benchmark must measure, by section
EXPECTED = {
    "synthesis": ("plain_s_per_image", "capture_s_per_image", "capture_time_ratio",
                  "unet_calls", "cross_layers_captured", "self_layers_captured",
                  "attention_layers"),
    "capture_memory": ("ours_bytes", "naive_all_layer_bytes", "naive_over_ours"),
    "checkpoint": ("phase1_bytes", "phase2_bytes", "full_state_dict_bytes", "phase1_over_full",
                   "phase2_over_full"),
}
PHASE_KEYS = ("steps_per_s", "s_per_step", "peak_memory_bytes", "trainable_parameters",
              "trainable_weights_bytes", "adam_state_bytes", "checkpoint_bytes")
MODULES = ("dinov2", "text_encoder", "unet", "vae", "slot_attention", "mlp_decoder")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def measured_numbers(value, path: str = ""):
    """(path, number) for every number under ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from measured_numbers(item, f"{path}.{key}" if path else key)
    elif is_number(value):
        yield path, value


def run_smoke() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # one thread: on a small shared CPU torch's default threads spin against other processes
    result = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stderr[-4000:]}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line in stdout:\n{result.stdout}"
    return json.loads(lines[-1])


def test_smoke_run_reports_every_measurement():
    results = run_smoke()
    assert results["settings"]["scale"] == "tiny"

    for section, keys in EXPECTED.items():
        for key in keys:
            assert is_number(results[section].get(key)), f"{section}.{key} missing"
    for phase in ("phase1", "phase2"):
        for key in PHASE_KEYS:
            assert is_number(results["training"][phase].get(key)), f"{phase}.{key} missing"
    assert isinstance(results["training"]["memory_kind"], str)
    assert set(MODULES) <= set(results["parameters"])

    measured = {key: value for key, value in results.items() if key != "settings"}
    bad = [path for path, value in measured_numbers(measured)
           if not (math.isfinite(value) and value > 0)]
    assert not bad, f"not finite and positive: {bad}"

    checkpoint = results["checkpoint"]
    assert checkpoint["phase1_bytes"] < checkpoint["full_state_dict_bytes"]
    # phase 2 trains the UNet: its checkpoint holds more than phase 1's
    assert checkpoint["phase2_bytes"] > checkpoint["phase1_bytes"]
    assert is_number(results["synthesis"]["capture_time_ratio"])
    # the naive capture keeps every layer's maps; ours keeps running sums of a few layers
    memory = results["capture_memory"]
    assert memory["naive_all_layer_bytes"] > memory["ours_bytes"]
