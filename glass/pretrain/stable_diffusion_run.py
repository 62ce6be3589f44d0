"""The ``pretrain_stable_diffusion`` stage's work (configs/toy-pretrain/dvc.yaml): train the tiny
latent diffusion model on toy-world scenes (glass.pretrain.latent_diffusion) and save it as a
Stable Diffusion folder that ``StableDiffusionPipeline.from_pretrained`` loads, with a record of
what produced it.

Outputs:

- ``<out>/``: the pipeline folder (model_index.json, vae/, unet/, text_encoder/, tokenizer/,
  scheduler/) plus ``pretraining.json``: params, seed, git commit and the SHA-256 of every source
  file that decides the weights, wall time, metrics;
- ``metrics``: the autoencoder's reconstruction PSNR on held-out scenes and the last losses;
- ``vae_curve`` / ``unet_curve``: the loss per step as TSV (``dvc plots``);
- ``samples``: a grid of held-out scenes and images generated from their prompts, in pairs
  (real render | generated), four pairs per row.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (AutoencoderKL, PNDMScheduler, SchedulerMixin, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextModel

from glass.data.toy_world import ToyWorldConfig
from glass.io import atomic_open, publish_directory, staging_directory, strip_library_fields, write_json
from glass.pretrain.latent_diffusion import (ScenePool, render_pool, train_autoencoder,
                                             train_denoiser)
from glass.pretrain.params import LatentDiffusionSettings, PretrainParams
from glass.pretrain.run import EVAL_SEED_OFFSET, RECORD_NAME, code_version
from glass.tiny.stable_diffusion import (build_tiny_clip_tokenizer, sd21_base_scheduler_config,
                                         tiny_text_config, tiny_unet_config, tiny_vae_config)
from glass.viz import save_grid

log = logging.getLogger(__name__)
HELD_OUT_SCENES = 64
SOURCES = ("glass/pretrain/latent_diffusion.py", "glass/pretrain/token_grounding.py",
           "glass/pretrain/stable_diffusion_run.py", "glass/synth/attention.py",
           "glass/synth/class_tokens.py",
           "glass/pretrain/params.py", "glass/tiny/stable_diffusion.py",
           "glass/data/toy_world.py", "glass/caption/labels.py", "glass/caption/english.py",
           "glass/text/prompts.py")


def write_curve(path: str | Path, history: list[dict[str, float]], columns: tuple[str, ...]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["step", *columns])
        for row in history:
            writer.writerow([row["step"] + 1] + [f"{row[k]:.6f}" for k in columns])


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, pool: ScenePool) -> float:
    """Mean PSNR (dB, images in [0, 1]) of the autoencoder's reconstructions (posterior mean)."""
    reconstruction = vae.decode(vae.encode(pool.images).latent_dist.mean).sample.clamp(-1, 1)
    mse = ((reconstruction - pool.images) / 2).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean())


def sample_grid(pipeline: StableDiffusionPipeline, pool: ScenePool, count: int, steps: int,
                guidance_scale: float, seed: int, path: str | Path) -> None:
    """Real render | generated image for the first ``count`` held-out prompts."""
    pairs = []
    for index in range(min(count, len(pool.prompts))):
        generator = torch.Generator().manual_seed(seed + index)
        image = pipeline(pool.prompts[index], num_inference_steps=steps,
                         guidance_scale=guidance_scale, generator=generator,
                         output_type="np").images[0]
        real = ((pool.images[index].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255)
        pairs.append([real.numpy().astype(np.uint8), (image * 255).round().astype(np.uint8)])
    rows = [sum(pairs[start:start + 4], []) for start in range(0, len(pairs), 4)]
    save_grid(path, rows, tile=96)


def readme_text(seconds: float, metrics: dict[str, Any]) -> str:
    return (
        "# Tiny Stable Diffusion trained on the toy world\n\n"
        "Trained by `dvc repro configs/toy-pretrain/dvc.yaml` (stage pretrain_stable_diffusion, "
        "glass.pretrain.latent_diffusion) on rendered toy-world scenes with prompts in the "
        "prompts stage's style (`<caption>; <class> <class>`). It generates toy scenes only.\n"
        f"Training took {seconds:.0f} s; autoencoder reconstruction PSNR on held-out scenes "
        f"{metrics['vae_reconstruction_psnr']:.1f} dB. Params, seed and code version: "
        f"{RECORD_NAME}.\n")


def publish_pipeline(out: Path, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                     tokenizer, unet: UNet2DConditionModel, readme: str,
                     record: dict[str, Any], held_out: ScenePool,
                     settings: LatentDiffusionSettings, seed: int,
                     samples_path: str | Path, scheduler: SchedulerMixin | None = None) -> None:
    """Save the tiny SD as a Stable Diffusion folder (``scheduler``; default PNDM, as SD 2.1)
    with its README and record under a temporary name, draw the sample grid from the saved
    folder through the loader the synthesize stage uses, then publish the folder at ``out``."""
    with staging_directory(out) as staged:
        pipeline = StableDiffusionPipeline(
            vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
            unet=unet.eval(),
            scheduler=scheduler or PNDMScheduler(**sd21_base_scheduler_config()),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipeline.save_pretrained(staged, safe_serialization=True)
        strip_library_fields(staged)
        (staged / "README.md").write_text(readme, encoding="utf-8")
        write_json(staged / RECORD_NAME, record)
        loaded = StableDiffusionPipeline.from_pretrained(staged, safety_checker=None)
        loaded.set_progress_bar_config(disable=True)
        sample_grid(loaded, held_out, settings.sample_prompts, settings.sample_steps,
                    settings.guidance_scale, seed, samples_path)
        publish_directory(staged, out)


def run_stable_diffusion_pretraining(pretrain: PretrainParams, seed: int, out: str | Path,
                                     metrics_path: str | Path, vae_curve: str | Path,
                                     unet_curve: str | Path, samples_path: str | Path,
                                     repo: str | Path = ".") -> dict[str, Any]:
    """Everything above; returns the metrics."""
    settings, out = pretrain.stable_diffusion, Path(out)
    if settings.image_size != tiny_vae_config()["sample_size"]:
        raise ValueError(f"pretrain.stable_diffusion.image_size {settings.image_size} must be "
                         f"the tiny SD's image size {tiny_vae_config()['sample_size']}")
    world: ToyWorldConfig = dataclasses.replace(pretrain.world, image_size=settings.image_size)
    tokenizer = build_tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.model_seed)
        text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
        vae = AutoencoderKL(**tiny_vae_config())
        unet = UNet2DConditionModel(**tiny_unet_config())
    started = time.perf_counter()
    pool = render_pool(world, seed, settings.pool_size)
    vae_history = train_autoencoder(vae, pool, settings, seed=seed)
    vae.requires_grad_(False)
    unet, text_encoder, unet_history = train_denoiser(unet, text_encoder, tokenizer, vae, pool,
                                                      settings, seed=seed + 1)
    seconds = time.perf_counter() - started
    held_out = render_pool(world, seed + EVAL_SEED_OFFSET, HELD_OUT_SCENES, progress=False)
    metrics = {
        "vae_reconstruction_psnr": round(reconstruction_psnr(vae, held_out), 4),
        "vae_scaling_factor": vae.config.scaling_factor,
        "final_losses": {"vae_recon": vae_history[-1]["recon"],
                         "unet": float(np.mean([row["loss"] for row in unet_history[-100:]]))},
    }
    record = {
        "what": "tiny Stable Diffusion trained on toy-world scenes "
                "(glass.pretrain.latent_diffusion)",
        "seed": seed, "params": pretrain.record_for("stable_diffusion"),
        "code": code_version(Path(repo), SOURCES),
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(), **metrics}
    publish_pipeline(out, vae, text_encoder, tokenizer, unet, readme_text(seconds, metrics),
                     record, held_out, settings, seed, samples_path)
    write_json(metrics_path, metrics)
    write_curve(vae_curve, vae_history, ("loss", "recon", "kl"))
    write_curve(unet_curve, unet_history, ("loss",))
    log.info("pretrained stable diffusion in %.0f s: %s", seconds, metrics)
    return metrics
