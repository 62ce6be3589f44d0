"""The ``pretrain_judge`` stage's work (configs/toy-pretrain/dvc.yaml): train the toy-world
segmenter that judges generated images (glass.pretrain.judge), save it with a record of what
produced it and its own accuracy on held-out renders.

Outputs: ``<out>/`` (``ToySegmenter.from_pretrained`` loads it, plus ``pretraining.json``),
``metrics`` (its held-out mIoU, clean and degraded), ``curve`` (loss per step, TSV).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from glass.io import publish_directory, staging_directory, strip_library_fields, write_json
from glass.pretrain.judge import judge_accuracy, train_judge
from glass.pretrain.params import PretrainParams
from glass.pretrain.run import EVAL_SEED_OFFSET, RECORD_NAME, code_version
from glass.pretrain.stable_diffusion_run import write_curve

log = logging.getLogger(__name__)
SOURCES = ("glass/pretrain/judge.py", "glass/pretrain/judge_run.py", "glass/pretrain/params.py",
           "glass/data/toy_world.py")


def run_judge_training(pretrain: PretrainParams, seed: int, out: str | Path,
                       metrics_path: str | Path, curve_path: str | Path,
                       repo: str | Path = ".") -> dict[str, Any]:
    settings, out = pretrain.judge, Path(out)
    started = time.perf_counter()
    model, history = train_judge(pretrain.world, settings, seed=seed)
    seconds = time.perf_counter() - started
    metrics = {"held_out": judge_accuracy(model, pretrain.world, settings,
                                          seed + EVAL_SEED_OFFSET),
               "final_loss": sum(row["loss"] for row in history[-50:]) / min(50, len(history))}
    with staging_directory(out) as staged:
        model.save_pretrained(staged, safe_serialization=True)
        strip_library_fields(staged)
        write_json(staged / RECORD_NAME, {
            "what": "toy-world segmenter judging generated images (glass.pretrain.judge); an "
                    "evaluation tool, never part of GLASS's training",
            "seed": seed, "params": pretrain.record_for("judge"),
            "code": code_version(Path(repo), SOURCES), "train_seconds": round(seconds, 1),
            "threads": torch.get_num_threads(), **metrics})
        publish_directory(staged, out)
    write_json(metrics_path, metrics)
    write_curve(curve_path, history, ("loss",))
    log.info("trained the judge in %.0f s: %s", seconds, metrics["held_out"])
    return metrics
