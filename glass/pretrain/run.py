"""The ``pretrain_dinov2`` stage's work (configs/toy-pretrain/dvc.yaml): train the tiny DINOv2 on
toy-world scenes without labels, save it where the CPU configuration can load it, with a record
of what produced it, and measure the instance structure of its features against the same network
with its random initial weights.

Outputs:

- ``<out>/``: the ``Dinov2Model`` folder (``FrozenDinov2Encoder`` loads it) plus
  ``pretraining.json``: the params, the seed, the git commit and the SHA-256 of every source file
  that decides the weights, the wall time and the structure scores;
- ``metrics``: the structure scores and the last losses (``dvc metrics``);
- ``curve``: the loss per step as TSV (``dvc plots``).
"""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import Dinov2Model

from glass.data.toy_world import ToyWorldConfig, render_scene, scene_for_image
from glass.io import atomic_open, file_sha256, publish_directory, staging_directory, write_json
from glass.pretrain.dinov2_ssl import pretrain_dinov2
from glass.pretrain.instance_structure import instance_structure
from glass.model.encoder import FrozenDinov2Encoder
from glass.pretrain.params import PretrainParams
from glass.tiny.dinov2 import build_tiny_dinov2, save_dinov2_folder, tiny_dinov2_config

log = logging.getLogger(__name__)
RECORD_NAME = "pretraining.json"   # every pretrained model's record (glass.pretrain.*_run)
EVAL_SPLIT = "val"
EVAL_SEED_OFFSET = 10_000     # held-out scenes of every pretraining: another seed than its pool
# the source files that decide the pretrained weights (recorded with their hashes)
SOURCES = ("glass/pretrain/dinov2_ssl.py", "glass/pretrain/params.py", "glass/tiny/dinov2.py",
           "glass/data/toy_world.py")


def held_out_samples(world: ToyWorldConfig, seed: int, count: int):
    for index in range(count):
        rendered = render_scene(scene_for_image(world, seed + EVAL_SEED_OFFSET, EVAL_SPLIT,
                                                index), world)
        yield f"{EVAL_SPLIT}-{index:05d}", rendered.image, rendered.instance_map


def code_version(repo: Path, sources: tuple[str, ...] = SOURCES) -> dict[str, Any]:
    """The commit (if a git checkout) and the hash of each file in ``sources``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"commit": commit, "files": {name: file_sha256(repo / name) for name in sources}}


def run_dinov2_pretraining(pretrain: PretrainParams, seed: int, out: str | Path,
                           metrics_path: str | Path, curve_path: str | Path,
                           repo: str | Path = ".") -> dict[str, Any]:
    """Everything above; returns the metrics."""
    settings, world, out = pretrain.dinov2, pretrain.world, Path(out)
    if world.image_size != tiny_dinov2_config().image_size:
        raise ValueError(f"pretrain.world.image_size {world.image_size} must be the tiny "
                         f"DINOv2's input size {tiny_dinov2_config().image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.model_seed)
        backbone = Dinov2Model(tiny_dinov2_config())
    started = time.perf_counter()
    teacher, history = pretrain_dinov2(backbone, world, settings, seed=seed)
    seconds = time.perf_counter() - started
    with staging_directory(out) as staged:
        save_dinov2_folder(teacher, staged)
        random_dir = build_tiny_dinov2(staged.parent / f".{out.name}-random",
                                       seed=settings.model_seed)
        scores = {}
        for name, folder in (("random", random_dir), ("trained", staged)):
            encoder = FrozenDinov2Encoder(str(folder), image_size=world.image_size)
            scores[name] = asdict(instance_structure(
                encoder, held_out_samples(world, seed, settings.eval_images), seed=seed))
        shutil.rmtree(random_dir)
        metrics = {"instance_structure": scores,
                   "final_losses": {k: v for k, v in history[-1].items() if k != "step"}}
        write_json(staged / RECORD_NAME, {
            "what": "tiny DINOv2 pretrained on toy-world scenes without labels "
                    "(glass.pretrain.dinov2_ssl)",
            "seed": seed, "params": pretrain.record_for("dinov2"),
            "code": code_version(Path(repo)),
            "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), **metrics})
        publish_directory(staged, out)
    write_json(metrics_path, metrics)
    with atomic_open(curve_path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["step", "loss", "cls", "patch"])
        for row in history:
            writer.writerow([row["step"]] + [f"{row[k]:.6f}" for k in ("loss", "cls", "patch")])
    log.info("pretrained dinov2 in %.0f s: instance structure %s", seconds, scores)
    return metrics
