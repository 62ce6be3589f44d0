"""A SIGKILL at any point of a stage, then a rerun, gives the outputs of an uninterrupted run; a
killed rerun never leaves less than a finished output. Run as DVC runs the stages
(``python stages/<stage>.py``), on the CPU configuration at a small size. Synthesis and training
have their own kill tests (test_sharded_run.py, test_trainer.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# the fraction of an uninterrupted run's duration at which a run is killed
KILL_POINT = 0.5
REFERENCE_ROOTS: list[Path] = []   # where the reference run wrote (its paths are recorded)
STAGES = ("models", "prepare", "caption", "prompts", "predict", "evaluate")


def _normalised(data: bytes, root: Path) -> bytes:
    """``data`` with the run's folder written ROOT, so that runs in different folders compare
    (a stage run on copied inputs also records the folder they were made in)."""
    for folder in (root, *REFERENCE_ROOTS):
        data = data.replace(str(folder).encode(), b"ROOT")
    return data


def _tree(folder: Path, root: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (leftovers of killed runs included), normalised."""
    return {path.relative_to(folder).as_posix(): _normalised(path.read_bytes(), root)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _command(stage: str, params: Path, work: Path, model: Path | None) -> list[str]:
    out = work / "out"
    args = {
        "models": ["--out", f"{out}/models", "--roles", "blip2,stable_diffusion,sam2,dinov2,decoder"],
        "prepare": ["--out", f"{out}/prepared"],
        "caption": ["--prepared", f"{out}/prepared", "--out", f"{out}/captions.jsonl",
                    "--scratch", f"{work}/scratch/caption", "--blip2-model", f"{out}/models/blip2"],
        "prompts": ["--captions", f"{out}/captions.jsonl", "--out", f"{out}/prompts.jsonl",
                    "--stats", f"{out}/metrics/prompts.json",
                    "--class-counts", f"{out}/prompt_class_counts.json"],
        "predict": ["--model", str(model), "--prepared", f"{out}/prepared", "--models",
                    f"{out}/models", "--out", f"{out}/eval/predictions", "--scratch",
                    f"{work}/scratch/predict", "--metrics", f"{out}/metrics/generation.json",
                    "--images", f"{out}/eval/images/generation"],
        "evaluate": ["--predictions", f"{out}/eval/predictions", "--generation",
                     f"{out}/metrics/generation.json", "--out", f"{out}/eval", "--metrics",
                     f"{out}/metrics/evaluate.json"],
    }[stage]
    return [sys.executable, f"stages/{stage}.py", "--params", str(params), *args]


def _run(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return time.perf_counter() - started


def _killed(command: list[str], after_s: float) -> None:
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(after_s)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, random_trained_model):
    """Params for a small CPU run, and every stage's outputs from uninterrupted runs, in order
    (each stage's inputs come from the stages before it)."""
    root = tmp_path_factory.mktemp("kill")
    params = yaml.safe_load((REPO / "configs/cpu/params.yaml").read_text())
    params["data"]["toy"].update(train_images=16, val_images=6, image_size=64)
    params["caption"]["backend"] = "labels"
    evaluate = params["evaluate"]
    evaluate["preprocess"]["resolution"] = 64
    evaluate["generation"].update(images=2, num_inference_steps=2)
    evaluate["composition"]["enabled"] = False
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    work = root / "reference"
    REFERENCE_ROOTS.append(work)
    durations = {}
    for stage in STAGES:
        durations[stage] = _run(_command(stage, params_file, work, random_trained_model))
    print("uninterrupted stage durations (s):", {k: round(v, 1) for k, v in durations.items()})
    return params_file, work, durations, random_trained_model


OUTPUTS = {"models": ["models"], "prepare": ["prepared"], "caption": ["captions.jsonl"],
           "prompts": ["prompts.jsonl", "prompt_class_counts.json", "metrics/prompts.json"],
           "predict": ["eval/predictions", "eval/images/generation", "metrics/generation.json"],
           "evaluate": ["eval/curves", "eval/images/discovery", "eval/report.md",
                        "eval/conventions.json", "metrics/evaluate.json"]}
INPUTS = {"models": [], "prepare": [], "caption": ["prepared", "models"],
          "prompts": ["captions.jsonl"], "predict": ["prepared", "models"],
          "evaluate": ["prepared", "models", "eval/predictions", "metrics/generation.json"]}


def _copy_inputs(stage: str, reference_out: Path, out: Path) -> None:
    for name in INPUTS[stage]:
        source = reference_out / name
        if source.is_dir():
            shutil.copytree(source, out / name)
        else:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / name)


def _outputs(stage: str, work: Path) -> dict[str, bytes]:
    out = work / "out"
    found = {}
    for name in OUTPUTS[stage]:
        path = out / name
        if path.is_dir():
            found.update({f"{name}/{k}": v for k, v in _tree(path, work).items()})
        elif path.exists():
            found[name] = _normalised(path.read_bytes(), work)
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_stage_reruns_to_the_outputs_of_an_uninterrupted_run(reference, tmp_path, stage):
    params, reference_work, durations, model = reference
    expected = _outputs(stage, reference_work)
    assert expected, f"{stage} wrote nothing"
    work = tmp_path / "work"
    _copy_inputs(stage, reference_work / "out", work / "out")
    command = _command(stage, params, work, model)
    _killed(command, durations[stage] * KILL_POINT)
    _run(command)
    assert _outputs(stage, work) == expected, f"{stage} killed midway, then rerun"
    # a rerun killed midway leaves the finished output as it was, never less ...
    _killed(command, durations[stage] * KILL_POINT)
    kept = {k: v for k, v in _outputs(stage, work).items() if not _leftover(k)}
    assert kept == expected, f"{stage}: a killed rerun damaged the finished output"
    # ... and the next run removes what the killed one left behind
    _run(command)
    assert _outputs(stage, work) == expected


def _leftover(relative: str) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return name.endswith(".tmp") or ".staging-" in relative or ".replaced-" in relative
