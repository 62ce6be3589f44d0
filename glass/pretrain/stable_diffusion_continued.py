"""The work of two stages of configs/toy-pretrain/dvc.yaml that train a saved tiny SD's UNet and
text encoder further:

- ``continue_stable_diffusion``: a second cosine cycle from the from-scratch model that
  ``pretrain_stable_diffusion`` wrote (``pretrain.stable_diffusion_continued``), with SD's noise
  schedule and epsilon prediction; it generates the CPU configuration's shards;
- ``zero_snr_stable_diffusion``: a third cycle from the continued model under zero terminal SNR
  with v-prediction (``pretrain.stable_diffusion_zero_snr``; Lin et al., WACV 2024, Sec. 3); the
  CPU configuration's GLASS decoder starts from it.

Why a second stage rather than a longer first run: the tiny SD kept improving with training
(4,000 → 6,000 UNet steps from scratch: pseudo masks 0.427 → 0.487 mean IoU against the judge),
and each longer from-scratch run repeats every step of the one before (the 6,000-step base took
5,498 s on 2 shared cores). A warm restart from the saved weights (as SGDR, Loshchilov & Hutter,
ICLR 2017) pays only for the new steps, and the graph still regenerates both models from
nothing. The saved weights are the first cycle's moving average; the optimizer state and the
moving average start afresh here, and the noise draws use another seed than the first cycle's
(``seed + 2``; the autoencoder used ``seed``, the first cycle ``seed + 1``). The autoencoder,
tokenizer and scheduler are the base model's, unchanged; the scene pool is the same.

Why the decoder starts from a zero-terminal-SNR model (reports/decoder_noise_schedule.md): with
SD's schedule a latent at t = 999 still holds 0.068 of the image, and on a 16x16 latent the
noise's per-channel mean has a std of only 1/16, so the UNet learns to read an image's overall
colour from its noisy input; sampling from pure noise then takes the colour from the noise, not
from the slots. Rescaling the betas so that the last timestep is pure noise removes that leak;
epsilon is undefined there, so the UNet predicts v, and sampling starts at the last timestep
(``trailing``). The GLASS decoder's training target and sampler follow the saved scheduler config
(glass.model.diffusion_decoder). The generator of the shards keeps SD's schedule, as the paper's
SD does. This cycle's noise uses ``seed + 3``.

Outputs as the first stage's (glass.pretrain.stable_diffusion_run): the pipeline folder with its
README and ``pretraining.json`` (which also names the base folder's content digest and the
base's record, so a stale base is caught), metrics, the loss curve and a sample grid.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from glass.data.toy_world import ToyWorldConfig
from glass.errors import InvalidInput
from glass.io import folder_digest, write_json
from glass.model_reference import load_pretrained, portable_model_name
from glass.pretrain.latent_diffusion import (held_out_denoising_loss, render_pool,
                                             train_denoiser, training_noise_scheduler)
from glass.pretrain.params import PretrainParams
from glass.pretrain.run import EVAL_SEED_OFFSET, RECORD_NAME, code_version
from glass.pretrain.stable_diffusion_run import (HELD_OUT_SCENES, SOURCES, publish_pipeline,
                                                 write_curve)

log = logging.getLogger(__name__)
CONTINUATION_SEED_OFFSET = 2     # the first cycle's denoiser drew its noise from seed + 1
ZERO_SNR_SEED_OFFSET = 3
CONTINUATION_SOURCES = (*SOURCES, "glass/pretrain/stable_diffusion_continued.py")
# Lin et al. 2024: betas rescaled so that alpha_bar at the last timestep is 0, v-prediction,
# sampling from the last timestep; DDIM because PNDM cannot rescale its betas
ZERO_TERMINAL_SNR = {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction",
                     "timestep_spacing": "trailing"}


def zero_terminal_snr_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """The forward process the zero-SNR cycle trains on, and the sampler its folder is saved
    with: the first cycles' forward process (SD 2.1 base's betas), rescaled to zero terminal
    SNR, with v-prediction and trailing steps."""
    forward = training_noise_scheduler().config
    return (DDPMScheduler.from_config(forward, **ZERO_TERMINAL_SNR),
            DDIMScheduler.from_config(forward, **ZERO_TERMINAL_SNR, clip_sample=False,
                                      set_alpha_to_one=False))


@dataclasses.dataclass(frozen=True)
class Cycle:
    """What tells one further training cycle apart: its params section, the sections its base
    was trained with, its noise seed offset, its schedule and what its README says it is."""

    section: str
    stage: str
    base_sections: tuple[str, ...]
    base_stage: str
    seed_offset: int
    title: str
    what: str
    description: str
    ordinal: str
    zero_terminal_snr: bool
    # the UNet's stored precision: float16 halves the decoder's committed weights (models/toy's
    # size target); the metrics hold the held-out loss before and after the rounding
    unet_storage_dtype: torch.dtype = torch.float32


CONTINUATION = Cycle(
    section="stable_diffusion_continued", stage="continue_stable_diffusion",
    base_sections=("stable_diffusion",), base_stage="pretrain_stable_diffusion",
    seed_offset=CONTINUATION_SEED_OFFSET,
    title="Tiny Stable Diffusion trained on the toy world, continued",
    what="tiny Stable Diffusion trained on toy-world scenes, continued for a second cosine cycle",
    description="trained for a second cosine cycle of {steps} UNet and text-encoder steps on the "
                "same toy-world scenes and prompts",
    ordinal="second", zero_terminal_snr=False)
ZERO_SNR = Cycle(
    section="stable_diffusion_zero_snr", stage="zero_snr_stable_diffusion",
    base_sections=("stable_diffusion", "stable_diffusion_continued"),
    base_stage="continue_stable_diffusion", seed_offset=ZERO_SNR_SEED_OFFSET,
    title="Tiny Stable Diffusion trained on the toy world, zero terminal SNR",
    what="tiny Stable Diffusion trained on toy-world scenes, continued, then trained for a third "
         "cycle under zero terminal SNR with v-prediction",
    description="trained for a third cosine cycle of {steps} UNet and text-encoder steps on the "
                "same toy-world scenes and prompts under zero terminal SNR with v-prediction "
                "(Lin et al., WACV 2024), sampled by DDIM from the last timestep (trailing); the "
                "CPU configuration's GLASS decoder starts from its UNet",
    ordinal="third", zero_terminal_snr=True, unet_storage_dtype=torch.float16)
CYCLES = {cycle.section: cycle for cycle in (CONTINUATION, ZERO_SNR)}


def read_base_record(base: Path, pretrain: PretrainParams, seed: int,
                     cycle: Cycle = CONTINUATION) -> dict[str, Any]:
    """The base folder's record, checked against the params this cycle is run with: a base
    trained with other params (or another seed) would be trained into a model that no params
    file describes."""
    path = base / RECORD_NAME
    if not path.is_file():
        raise InvalidInput(f"{path}: missing; the base must be a folder written by the "
                           f"{cycle.base_stage} stage (dvc repro configs/toy-pretrain/dvc.yaml)")
    record = json.loads(path.read_text(encoding="utf-8"))
    expected = json.loads(json.dumps(pretrain.record_for(*cycle.base_sections)))
    if record.get("params") != expected or record.get("seed") != seed:
        sections = " / ".join(f"pretrain.{name}" for name in ("world", *cycle.base_sections))
        raise InvalidInput(f"{path}: the base was trained with other params or seed than "
                           f"{sections} / seed say now; retrain it first "
                           "(dvc repro configs/toy-pretrain/dvc.yaml)")
    return record


def readme_text(base: str, steps: int, seconds: float, cycle: Cycle = CONTINUATION) -> str:
    return (f"# {cycle.title}\n\n"
            f"Written by `dvc repro configs/toy-pretrain/dvc.yaml` (stage {cycle.stage}, "
            f"glass.pretrain.stable_diffusion_continued): `{base}` (stage {cycle.base_stage}) "
            f"{cycle.description.format(steps=steps)}. It generates toy scenes only.\n"
            f"The {cycle.ordinal} cycle took {seconds:.0f} s. Params, seed, base and code "
            f"version: {RECORD_NAME}.\n")


def stored_precision_losses(unet: UNet2DConditionModel, text_encoder, tokenizer, vae,
                            held_out, noise_scheduler: DDPMScheduler | None, seed: int,
                            dtype: torch.dtype) -> dict[str, float]:
    """The held-out denoising loss of the trained UNet in float32 and rounded to ``dtype`` (as
    loaded back: float32 weights holding ``dtype``'s values), on the same noise and timesteps."""
    scheduler = noise_scheduler or training_noise_scheduler()
    rounded = copy.deepcopy(unet).to(dtype).to(torch.float32)
    return {name: round(held_out_denoising_loss(model, text_encoder, tokenizer, vae, held_out,
                                                scheduler, seed), 6)
            for name, model in (("float32", unet), (str(dtype).removeprefix("torch."), rounded))}


def run_further_cycle(pretrain: PretrainParams, seed: int, base: str | Path, out: str | Path,
                      metrics_path: str | Path, unet_curve: str | Path,
                      samples_path: str | Path, cycle: Cycle, repo: str | Path = ".",
                      ) -> dict[str, Any]:
    """Train the base folder's UNet and text encoder for ``cycle``; returns the metrics."""
    base, out = Path(base), Path(out)
    base_record = read_base_record(base, pretrain, seed, cycle)
    further = getattr(pretrain, cycle.section)
    settings = dataclasses.replace(pretrain.stable_diffusion, unet_steps=further.unet_steps,
                                   unet_lr=further.unet_lr, warmup_steps=further.warmup_steps)
    world: ToyWorldConfig = dataclasses.replace(pretrain.world, image_size=settings.image_size)
    loaded = load_pretrained(StableDiffusionPipeline, base, "the tiny SD to train further",
                             rebuild="dvc repro configs/toy-pretrain/dvc.yaml",
                             safety_checker=None)
    vae = loaded.vae.requires_grad_(False).eval()
    unet = loaded.unet.requires_grad_(True)
    text_encoder = loaded.text_encoder.requires_grad_(True)
    noise_scheduler, sampler = (zero_terminal_snr_schedulers() if cycle.zero_terminal_snr
                                else (None, None))
    started = time.perf_counter()
    pool = render_pool(world, seed, settings.pool_size)       # the first cycle's pool
    unet, text_encoder, history = train_denoiser(unet, text_encoder, loaded.tokenizer, vae, pool,
                                                 settings, seed=seed + cycle.seed_offset,
                                                 noise_scheduler=noise_scheduler)
    seconds = time.perf_counter() - started
    held_out = render_pool(world, seed + EVAL_SEED_OFFSET, HELD_OUT_SCENES, progress=False)
    metrics = {
        "final_losses": {"unet": float(np.mean([row["loss"] for row in history[-100:]]))},
        "base_final_losses": {"unet": base_record["final_losses"]["unet"]},
    }
    if cycle.unet_storage_dtype != torch.float32:
        metrics["held_out_loss"] = stored_precision_losses(
            unet, text_encoder, loaded.tokenizer, vae, held_out, noise_scheduler,
            seed + EVAL_SEED_OFFSET, cycle.unet_storage_dtype)
        unet = unet.to(cycle.unet_storage_dtype)
    base_name = portable_model_name(str(base))
    record = {
        "what": f"{cycle.what} (glass.pretrain.stable_diffusion_continued)",
        "seed": seed,
        "params": pretrain.record_for(*cycle.base_sections, cycle.section),
        "base": {"folder": base_name, "sha256": folder_digest(base),
                 "train_seconds": base_record["train_seconds"]},
        "code": code_version(Path(repo), CONTINUATION_SOURCES),
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), **metrics}
    publish_pipeline(out, vae, text_encoder, loaded.tokenizer, unet,
                     readme_text(base_name, settings.unet_steps, seconds, cycle), record,
                     held_out, settings, seed, samples_path, scheduler=sampler)
    write_json(metrics_path, metrics)
    write_curve(unet_curve, history, ("loss",))
    log.info("%s in %.0f s: %s", cycle.section, seconds, metrics)
    return metrics


def run_stable_diffusion_continuation(pretrain: PretrainParams, seed: int, base: str | Path,
                                      out: str | Path, metrics_path: str | Path,
                                      unet_curve: str | Path, samples_path: str | Path,
                                      repo: str | Path = ".") -> dict[str, Any]:
    """The ``continue_stable_diffusion`` stage."""
    return run_further_cycle(pretrain, seed, base, out, metrics_path, unet_curve, samples_path,
                             CONTINUATION, repo)

