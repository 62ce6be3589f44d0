"""The CPU configuration through ``dvc repro`` in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glass.io import read_jsonl
from glass.machine import LOCK_MACHINE_NAME, cpu_signature

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _copy_repo(destination: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = REPO / relative
        target = destination / relative
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree but still in the index
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True)
    # a clone has commits; DVCLive (training stages) fails on a repository without any
    _commit_all(destination, "copy")


def _commit_all(workdir: Path, message: str) -> None:
    identity = ["-c", "user.name=glass-test", "-c", "user.email=glass-test@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=workdir, check=True)
    subprocess.run(["git", *identity, "commit", "-q", "-m", message], cwd=workdir, check=True)


def _dvc(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # stages' `python`
    env["DVC_NO_ANALYTICS"] = "1"
    result = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=workdir,
                            env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _set_param(workdir: Path, dotted: str, value) -> None:
    path = workdir / "configs/cpu/params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _ran(output: str) -> set[str]:
    return {line.split(":")[1].rstrip("':") for line in output.splitlines()
            if line.startswith("Running stage 'configs/cpu/dvc.yaml:")}


@pytest.fixture(scope="module")
def cpu_repo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("repo")
    _copy_repo(workdir)
    _set_param(workdir, "data.toy.train_images", 24)
    _set_param(workdir, "data.toy.val_images", 8)
    _set_param(workdir, "synth.images_per_prompt", 2)
    _set_param(workdir, "synth.shard_size", 20)
    _set_param(workdir, "train.phase1.steps", 4)
    _set_param(workdir, "train.phase2.steps", 2)
    _set_param(workdir, "train.data.batch_size", 4)
    _set_param(workdir, "train.logging.checkpoint_every", 2)
    _set_param(workdir, "train.logging.grid_reconstruction_steps", 2)
    _set_param(workdir, "evaluate.generation.images", 3)
    _set_param(workdir, "evaluate.generation.num_inference_steps", 2)
    _set_param(workdir, "evaluate.composition.images", 2)
    _set_param(workdir, "evaluate.composition.num_inference_steps", 2)
    _set_param(workdir, "evaluate.metrics.probes.max_epochs", 3)
    first = _dvc(workdir, "repro", "configs/cpu/dvc.yaml")
    return workdir, first


def test_cpu_graph_runs_through_evaluation(cpu_repo):
    workdir, first = cpu_repo
    assert _ran(first.stdout) == {"models", "prepare", "caption", "prompts", "synthesize",
                                  "judge_masks", "train_phase1", "train_phase2", "predict",
                                  "evaluate"}
    out = workdir / "data/cpu"
    assert len(read_jsonl(out / "prepared/index_caption.jsonl")) == 24
    assert len(read_jsonl(out / "prepared/index_eval.jsonl")) == 8
    prompts = read_jsonl(out / "prompts.jsonl")
    assert len(prompts) == 24
    for record in prompts:
        assert record["classes"], record
        assert record["prompt"] == record["caption"] + "; " + " ".join(record["classes"])
    assert (workdir / "configs/cpu/dvc.lock").exists() and not (workdir / "dvc.lock").exists()
    manifest = json.loads((out / "shards/manifest.json").read_text())
    assert manifest["total_samples"] == 48 and manifest["total_shards"] == 3
    for model in ("blip2", "stable_diffusion", "sam2"):
        assert (out / "models" / model / "glass-model.json").exists()
    for phase in (1, 2):
        assert (out / f"train/phase{phase}/model/slot_attention/config.json").exists()
    assert (out / "train/phase2/model/unet/config.json").exists()
    metrics = _dvc(workdir, "metrics", "show").stdout
    assert "data/cpu/metrics/prompts.json" in metrics and "data/cpu/metrics/synthesis.json" in metrics
    assert "data/cpu/metrics/evaluate.json" in metrics
    assert "data/cpu/metrics/generation.json" in metrics
    # the pseudo masks of the trained tiny SD, scored by the judge
    quality = json.loads((out / "metrics/pseudo_masks.json").read_text())
    assert quality["judge"] == "models/toy/judge" and quality["samples"] == 48
    assert 0.0 <= quality["miou_vs_judge"] <= 1.0 and 0.0 <= quality["class_presence"] <= 1.0
    assert (out / "plots/pseudo_masks_vs_judge.png").exists()
    assert "object_discovery.toy_val.miou_i" in metrics, metrics
    assert (out / "eval/report.md").exists() and (out / "eval/curves/toy_val.csv").exists()


def test_decoder_finetuning_experiment_continues_phase_1_and_scores_like_the_predict_stage(
        cpu_repo, tmp_path):
    """experiments/decoder_finetuning.py on the graph's outputs: phase 2 for 1 then (resumed) 2
    steps; at the params' own 2 steps its PSNR is the predict stage's (to the report's 3 decimals)."""
    workdir, _ = cpu_repo
    result = subprocess.run(
        [sys.executable, "experiments/decoder_finetuning.py", "--steps", "1", "2",
         "--work-dir", str(tmp_path / "work"), "--report-dir", str(tmp_path / "reports")],
        cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "reports/decoder_finetuning.json").read_text())
    rows = report["runs_by_unet_lr"]["0.0001"]
    assert [row["phase2_steps"] for row in rows] == [1, 2]
    assert all(row["images"] == 3 for row in rows)
    stage = json.loads((workdir / "data/cpu/metrics/generation.json").read_text())
    assert rows[1]["psnr"] == round(stage["generation"]["toy_val"]["psnr"], 3)
    assert rows[1]["psnr_mean_colour"] == round(stage["generation"]["toy_val"]["psnr_mean_colour"],
                                                3)
    assert "| 0.0001 | 2 |" in (tmp_path / "reports/decoder_finetuning.md").read_text()
    assert (tmp_path / "reports/decoder_finetuning_lr0.0001.png").is_file()


def test_decoder_noise_schedule_experiment_scores_the_graph_like_the_predict_stage(cpu_repo,
                                                                                 tmp_path):
    """experiments/decoder_noise_schedule.py on the graph's outputs: phase 2 retrained for 1 step
    with SD's schedule and with zero terminal SNR (its decoder copy saying so), every row's colour
    statistics, and the graph row's PSNR the predict stage's (first seed = the stage's seed)."""
    workdir, _ = cpu_repo
    result = subprocess.run(
        [sys.executable, "experiments/decoder_noise_schedule.py", "--steps", "1", "--seeds", "2",
         "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "schedule")],
        cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "schedule.json").read_text())
    assert set(report["rows"]) == {"graph", "sd_schedule", "zero_terminal_snr"}
    for row in report["rows"].values():
        assert row["psnr"] > 0 and row["variance_across_seeds"] >= 0
        assert -1 <= row["correlation_with_real"] <= 1 and row["colour_error"] > 0
    stage = json.loads((workdir / "data/cpu/metrics/generation.json").read_text())
    assert report["rows"]["graph"]["psnr"] == round(stage["generation"]["toy_val"]["psnr"], 3)
    scheduler = json.loads((tmp_path / "work/decoder_ztsnr/scheduler/scheduler_config.json")
                           .read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["rescale_betas_zero_snr"]
    assert "zero terminal SNR" in (tmp_path / "schedule.md").read_text()


def test_slot_conditioning_experiment_scores_every_conditioning_deterministically(cpu_repo,
                                                                                 tmp_path):
    """experiments/slot_conditioning_usage.py on the graph's phase-1 and phase-2 folders: one
    loss per conditioning and timestep, the same numbers on a second run (noise and slot
    initialisation come from the params' seed), and conditionings that differ score differently."""
    workdir, _ = cpu_repo
    reports = []
    for run in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "experiments/slot_conditioning_usage.py", "--images", "3",
             "--timesteps", "300", "900", "--report-dir", str(tmp_path / run)],
            cwd=workdir, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        reports.append(json.loads((tmp_path / run / "slot_conditioning_usage.json").read_text()))
    assert reports[0] == reports[1]
    folders = reports[0]["folders"]
    assert set(folders) == {"data/cpu/train/phase1/model", "data/cpu/train/phase2/model"}
    for losses in folders.values():
        assert set(losses) == {"300", "900"}
        for row in losses.values():
            assert set(row) == {"own_slots", "other_slots", "empty_prompt", "own_caption",
                                "other_caption", "zeros"}
            assert all(value > 0 for value in row.values())
            assert row["zeros"] != row["own_slots"] and row["own_caption"] != row["empty_prompt"]
    assert "| mean |" in (tmp_path / "a" / "slot_conditioning_usage.md").read_text()


def test_position_experiment_probes_the_encoders_and_the_graphs_slots(cpu_repo, tmp_path):
    """experiments/position_information.py on the committed tiny DINOv2 (and its random
    initialisation) and the graph's stored slots: every probe scored against its chance level,
    the same numbers on a second run (scenes and probes are deterministic)."""
    workdir, _ = cpu_repo
    reports = []
    for run in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "experiments/position_information.py", "--fit-images", "20",
             "--test-images", "10", "--out", str(tmp_path / run / "position")],
            cwd=workdir, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        reports.append(json.loads((tmp_path / run / "position.json").read_text()))
    assert reports[0] == reports[1]
    report = reports[0]
    assert set(report["encoder"]) == {"random", "trained"}
    for scores in report["encoder"].values():
        assert set(scores) == {"token_position", "object_centre"}
        assert scores["token_position"]["fit"] == 20 * 16 * 16
        assert all(score["mse"] > 0 and score["mean_mse"] > 0 for score in scores.values())
    slots = report["slots"]["CPU graph"]
    assert slots["test"] > 0 and slots["mse"] > 0 and slots["mean_mse"] > 0
    assert "| slots, CPU graph | object box centre |" in (tmp_path / "a" / "position.md").read_text()


def test_feature_reconstruction_experiment_scores_the_graphs_mlp_decoders(cpu_repo, tmp_path):
    """experiments/feature_reconstruction.py on the graph's phase-1 and phase-2 folders: the
    three reconstructions and three spreads of each, the same numbers on a second run (slot
    initialisation comes from the evaluate seed and each image's key)."""
    workdir, _ = cpu_repo
    reports = []
    for run in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "experiments/feature_reconstruction.py", "--images", "3",
             "--out", str(tmp_path / run / "features")],
            cwd=workdir, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        reports.append(json.loads((tmp_path / run / "features.json").read_text()))
    assert reports[0] == reports[1]
    assert set(reports[0]["models"]) == {"phase 1", "phase 2"}
    for score in reports[0]["models"].values():
        assert score["images"] == 3
        mse, spread = score["mse"], score["centroid_spread"]
        assert 0 < mse["instance_mean"] < mse["image_mean"] and mse["decoder"] > 0
        assert spread["ground_truth"] > 0 and spread["slot_attention"] > 0
    assert "| phase 1 |" in (tmp_path / "a" / "features.md").read_text()


def test_second_run_is_a_no_op_and_a_caption_param_reruns_only_downstream(cpu_repo):
    workdir, _ = cpu_repo
    again = _dvc(workdir, "repro", "configs/cpu/dvc.yaml")
    assert _ran(again.stdout) == set(), again.stdout
    _set_param(workdir, "train.phase2.steps", 3)
    assert _ran(_dvc(workdir, "repro", "configs/cpu/dvc.yaml").stdout) == {"train_phase2",
                                                                           "predict", "evaluate"}
    # a convention is a param of evaluate alone; `dvc metrics diff` (which lists changed
    # metrics only) against the committed run shows what it changed
    _commit_all(workdir, "experiment baseline")
    _set_param(workdir, "evaluate.metrics.conventions.include_background", False)
    assert _ran(_dvc(workdir, "repro", "configs/cpu/dvc.yaml").stdout) == {"evaluate"}
    diff = _dvc(workdir, "metrics", "diff").stdout
    assert "object_discovery.toy_val.miou_i" in diff, diff
    assert "object_discovery.toy_val.fg_ari" not in diff, diff  # FG-ARI ignores background
    _set_param(workdir, "caption.backend", "template")
    changed = _dvc(workdir, "repro", "configs/cpu/dvc.yaml")
    assert _ran(changed.stdout) == {"caption", "prompts", "synthesize", "judge_masks",
                                    "train_phase1", "train_phase2", "predict",
                                    "evaluate"}, changed.stdout
    captions = read_jsonl(workdir / "data/cpu/captions.jsonl")
    assert all(r["caption"].startswith("A high-quality image of ") for r in captions)
    assert _ran(_dvc(workdir, "repro", "configs/cpu/dvc.yaml").stdout) == set()


def test_paper_configuration_names_the_missing_dataset(cpu_repo):
    workdir, _ = cpu_repo
    failed = _dvc(workdir, "repro", "prepare", check=False)
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert "/datasets/coco/train2017" in message and "cocodataset.org" in message


def test_params_rerun_only_the_stages_whose_results_they_change(cpu_repo):
    workdir, _ = cpu_repo
    assert _ran(_dvc(workdir, "repro", "configs/cpu/dvc.yaml").stdout) == set()
    # logging and checkpoint cadence, synthesis speed settings and another dataset's paths
    for key, value in (("train.logging.grid_every", 7), ("train.logging.checkpoint_every", 3),
                       ("train.logging.log_every", 1), ("synth.batch_size", 3),
                       ("synth.num_workers", 1), ("synth.ray_connect_timeout_s", 5),
                       ("data.coco.root", "/elsewhere/coco"), ("data.voc.root", "/elsewhere/voc")):
        _set_param(workdir, key, value)
    status = _dvc(workdir, "status", "configs/cpu/dvc.yaml").stdout
    assert "changed" not in status, status
    assert _ran(_dvc(workdir, "repro", "configs/cpu/dvc.yaml").stdout) == set()


def test_outputs_pushed_to_a_remote_are_pulled_into_a_clone_and_not_rerun(cpu_repo, tmp_path):
    workdir, _ = cpu_repo
    remote = tmp_path / "remote"
    _dvc(workdir, "repro", "configs/cpu/dvc.yaml")
    _dvc(workdir, "remote", "add", "-d", "storage", str(remote))
    _commit_all(workdir, "the state to share")
    _dvc(workdir, "push", "configs/cpu/dvc.yaml")
    # one stage's outputs: the shards are pulled, and rebuilding the stages before them (whose
    # outputs were not pulled) gives their exact outputs, so synthesize itself does not rerun
    one = tmp_path / "one-stage"
    subprocess.run(["git", "clone", "-q", str(workdir), str(one)], check=True)
    _dvc(one, "pull", "configs/cpu/dvc.yaml:synthesize")
    assert json.loads((one / "data/cpu/shards/manifest.json").read_text())["total_samples"] == 48
    assert not (one / "data/cpu/models/dinov2").exists()
    rebuilt = _ran(_dvc(one, "repro", "configs/cpu/dvc.yaml:synthesize").stdout)
    assert rebuilt == {"models", "prepare", "caption", "prompts"}, rebuilt
    # the whole graph: nothing to rerun, and the lock is the one that was pushed
    whole = tmp_path / "whole"
    subprocess.run(["git", "clone", "-q", str(workdir), str(whole)], check=True)
    _dvc(whole, "pull", "configs/cpu/dvc.yaml")
    assert "changed" not in _dvc(whole, "status", "configs/cpu/dvc.yaml").stdout
    assert _ran(_dvc(whole, "repro", "configs/cpu/dvc.yaml").stdout) == set()
    clean = subprocess.run(["git", "status", "--porcelain"], cwd=whole, capture_output=True,
                           text=True, check=True).stdout
    assert clean == "", clean


def test_the_committed_cpu_lock_is_reproduced_here_up_to_synthesis(tmp_path):
    """A fresh copy of the repository reruns the CPU configuration's stages up to synthesize
    (the part that is quick enough for the suite) and gets the committed lock entries: outputs
    are the same bytes on every machine of the pinned environment (constraints.txt) and the CPU
    kind the lock was made on (configs/cpu/lock_machine.json), with no library version or path in
    them. On another CPU kind the float kernels round differently (glass/machine.py): the stages
    before synthesize are still the same bytes, and synthesize's metrics the same numbers. The
    training stages are covered by the same mechanism (checked by hand with the full
    `dvc repro`, see the README)."""
    workdir = tmp_path / "repo"
    _copy_repo(workdir)
    committed = yaml.safe_load((REPO / "configs/cpu/dvc.lock").read_text())["stages"]
    _dvc(workdir, "repro", "configs/cpu/dvc.yaml:synthesize")
    produced = yaml.safe_load((workdir / "configs/cpu/dvc.lock").read_text())["stages"]
    for stage in ("models", "prepare", "caption", "prompts"):
        assert produced[stage]["outs"] == committed[stage]["outs"], (
            f"{stage}: the outputs differ from configs/cpu/dvc.lock; rerun the CPU graph and "
            "commit the lock (or the environment differs from constraints.txt)")
    recorded = json.loads((REPO / "configs/cpu" / LOCK_MACHINE_NAME).read_text())
    if cpu_signature() == recorded:
        assert produced["synthesize"]["outs"] == committed["synthesize"]["outs"], (
            "synthesize: the outputs differ from configs/cpu/dvc.lock on the CPU kind it was "
            "made on; rerun the CPU graph and commit the lock")
    else:
        metrics = "data/cpu/metrics/synthesis.json"
        assert (json.loads((workdir / metrics).read_text())
                == json.loads((REPO / metrics).read_text())), (
            f"synthesize: {metrics} differs from the committed one (lock made on {recorded}, "
            f"this machine is {cpu_signature()})")
