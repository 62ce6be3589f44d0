"""The ``continue_stable_diffusion`` stage's work (configs/toy-pretrain/dvc.yaml): a second
cosine cycle for the tiny SD's UNet and text encoder, from the from-scratch model that
``pretrain_stable_diffusion`` wrote (``pretrain.stable_diffusion_continued``).

Why a second stage rather than a longer first run: the tiny SD kept improving with training
(4,000 → 6,000 UNet steps from scratch: pseudo masks 0.427 → 0.487 mean IoU against the judge),
and each longer from-scratch run repeats every step of the one before (the 6,000-step base took
5,498 s on 2 shared cores). A warm restart from the saved weights (as SGDR, Loshchilov & Hutter,
ICLR 2017) pays only for the new steps, and the graph still regenerates both models from
nothing. The saved weights are the first cycle's moving average; the optimizer state and the
moving average start afresh here, and the noise draws use another seed than the first cycle's
(``seed + 2``; the autoencoder used ``seed``, the first cycle ``seed + 1``). The autoencoder,
tokenizer and scheduler are the base model's, unchanged; the scene pool is the same.

Outputs as the first stage's (glass.pretrain.stable_diffusion_run): the pipeline folder with its
README and ``pretraining.json`` (which also names the base folder's content digest and the
base's record, so a stale base is caught), metrics, the loss curve and a sample grid.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from glass.data.toy_world import ToyWorldConfig
from glass.errors import InvalidInput
from glass.io import folder_digest, write_json
from glass.model_reference import load_pretrained, portable_model_name
from glass.pretrain.latent_diffusion import render_pool, train_denoiser
from glass.pretrain.params import PretrainParams
from glass.pretrain.run import EVAL_SEED_OFFSET, RECORD_NAME, code_version
from glass.pretrain.stable_diffusion_run import (HELD_OUT_SCENES, SOURCES, publish_pipeline,
                                                 write_curve)

log = logging.getLogger(__name__)
CONTINUATION_SEED_OFFSET = 2     # the first cycle's denoiser drew its noise from seed + 1
CONTINUATION_SOURCES = (*SOURCES, "glass/pretrain/stable_diffusion_continued.py")


def read_base_record(base: Path, pretrain: PretrainParams, seed: int) -> dict[str, Any]:
    """The base folder's record, checked against the params this continuation is run with: a
    base trained with other params (or another seed) would be continued into a model that no
    params file describes."""
    path = base / RECORD_NAME
    if not path.is_file():
        raise InvalidInput(f"{path}: missing; the base must be a folder written by the "
                           "pretrain_stable_diffusion stage (dvc repro "
                           "configs/toy-pretrain/dvc.yaml)")
    record = json.loads(path.read_text(encoding="utf-8"))
    expected = json.loads(json.dumps(pretrain.record_for("stable_diffusion")))
    if record.get("params") != expected or record.get("seed") != seed:
        raise InvalidInput(f"{path}: the base was trained with other params or seed than "
                           "pretrain.world / pretrain.stable_diffusion / seed say now; retrain it "
                           "first (dvc repro configs/toy-pretrain/dvc.yaml)")
    return record


def readme_text(base: str, steps: int, seconds: float) -> str:
    return ("# Tiny Stable Diffusion trained on the toy world, continued\n\n"
            "Written by `dvc repro configs/toy-pretrain/dvc.yaml` (stage continue_stable_diffusion, "
            f"glass.pretrain.stable_diffusion_continued): `{base}` (stage "
            "pretrain_stable_diffusion) trained for a second cosine cycle of "
            f"{steps} UNet and text-encoder steps on the same toy-world scenes and prompts. "
            "It generates toy scenes only.\n"
            f"The second cycle took {seconds:.0f} s. Params, seed, base and code version: "
            f"{RECORD_NAME}.\n")


def run_stable_diffusion_continuation(pretrain: PretrainParams, seed: int, base: str | Path,
                                      out: str | Path, metrics_path: str | Path,
                                      unet_curve: str | Path, samples_path: str | Path,
                                      repo: str | Path = ".") -> dict[str, Any]:
    """Continue the base folder's UNet and text encoder; returns the metrics."""
    base, out = Path(base), Path(out)
    base_record = read_base_record(base, pretrain, seed)
    continued = pretrain.stable_diffusion_continued
    settings = dataclasses.replace(pretrain.stable_diffusion, unet_steps=continued.unet_steps,
                                   unet_lr=continued.unet_lr,
                                   warmup_steps=continued.warmup_steps)
    world: ToyWorldConfig = dataclasses.replace(pretrain.world, image_size=settings.image_size)
    loaded = load_pretrained(StableDiffusionPipeline, base, "the tiny SD to continue",
                             rebuild="dvc repro configs/toy-pretrain/dvc.yaml",
                             safety_checker=None)
    vae = loaded.vae.requires_grad_(False).eval()
    unet = loaded.unet.requires_grad_(True)
    text_encoder = loaded.text_encoder.requires_grad_(True)
    started = time.perf_counter()
    pool = render_pool(world, seed, settings.pool_size)       # the first cycle's pool
    unet, text_encoder, history = train_denoiser(unet, text_encoder, loaded.tokenizer, vae, pool,
                                                 settings, seed=seed + CONTINUATION_SEED_OFFSET)
    seconds = time.perf_counter() - started
    held_out = render_pool(world, seed + EVAL_SEED_OFFSET, HELD_OUT_SCENES, progress=False)
    metrics = {
        "final_losses": {"unet": float(np.mean([row["loss"] for row in history[-100:]]))},
        "base_final_losses": {"unet": base_record["final_losses"]["unet"]},
    }
    base_name = portable_model_name(str(base))
    record = {
        "what": "tiny Stable Diffusion trained on toy-world scenes, continued for a second "
                "cosine cycle (glass.pretrain.stable_diffusion_continued)",
        "seed": seed,
        "params": pretrain.record_for("stable_diffusion", "stable_diffusion_continued"),
        "base": {"folder": base_name, "sha256": folder_digest(base),
                 "train_seconds": base_record["train_seconds"]},
        "code": code_version(Path(repo), CONTINUATION_SOURCES),
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), **metrics}
    publish_pipeline(out, vae, text_encoder, loaded.tokenizer, unet,
                     readme_text(base_name, settings.unet_steps, seconds), record, held_out,
                     settings, seed, samples_path)
    write_json(metrics_path, metrics)
    write_curve(unet_curve, history, ("loss",))
    log.info("continued stable diffusion in %.0f s: %s", seconds, metrics)
    return metrics
