"""Training the tiny text-to-image latent diffusion model on toy-world scenes, in Stable
Diffusion's layout (glass.tiny.stable_diffusion: VAE, UNet with cross-attention, CLIP text
encoder and tokenizer, PNDM scheduler), so that ``StableDiffusionPipeline.from_pretrained`` loads
it and the synthesize stage's attention capture, class-token lookup and refinement run on it
unchanged.

Two phases, as latent diffusion is trained (Rombach et al. 2022):

1. the **autoencoder** (``AutoencoderKL``): L2 reconstruction plus a small KL term on scenes
   rendered at ``image_size``; afterwards its ``scaling_factor`` is set to 1/std of the pool's
   latents, the rule SD's 0.18215 came from, so the UNet sees unit-variance latents;
2. the **UNet and the text encoder** together, from scratch: DDPM epsilon prediction with SD's
   noise schedule, on the pool's latents (a posterior sample per draw), conditioned on prompts
   in the style the prompts stage writes (``"<caption>; <class> <class>"``, glass.text.prompts),
   the caption dropped (empty prompt) with probability ``caption_dropout`` so that
   classifier-free guidance works; an exponential moving average of both is what is saved.
   With ``token_grounding_weight`` > 0, TokenCompose's token loss on the scenes' render masks
   (glass.pretrain.token_grounding) teaches the prompt's class tokens to attend to their own
   objects, which a 4,000-step model does not learn from captions alone.

Captions are those the pipeline's own captioners write for a toy scene: the labels captioner's
("A photo of two kites and a pizza.") or one of the toy world's two ground-truth captions, drawn
per scene. Everything is seeded by ``seed`` (pool, draws, noise, timesteps, dropout).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from glass.caption.labels import caption_from_labels
from glass.data.toy_world import (ToyWorldConfig, class_counts, make_captions, render_scene,
                                  scene_for_image)
from glass.pretrain.params import LatentDiffusionSettings
from glass.pretrain.token_grounding import (class_maps, grounded_layers, grounding_processors,
                                            coarser_masks, pool_token_weights, pooled_class_masks,
                                            token_grounding_loss)
from glass.text.prompts import build_prompt
from glass.tiny.stable_diffusion import sd21_base_scheduler_config

log = logging.getLogger(__name__)
# the scheduler settings that define the forward (noising) process; the rest are PNDM's sampling
_FORWARD_PROCESS_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                         "steps_offset", "prediction_type")
PRETRAIN_SPLIT = "pretrain"      # the same scene split as the DINOv2's pool (never val scenes)


@dataclasses.dataclass
class ScenePool:
    """Rendered scenes with their prompts: images (N, 3, S, S) in [-1, 1], one prompt each, the
    prompt's classes, and (N, S, S) uint8 class maps (k + 1 where ``classes[i][k]`` is seen)."""

    images: torch.Tensor
    prompts: list[str]
    classes: list[list[str]]
    class_maps: torch.Tensor


def scene_prompt(scene, rng: np.random.Generator) -> str:
    """A prompt for ``scene`` as the prompts stage writes it: a caption, then its classes."""
    counts = class_counts(scene)
    classes = [name for name, _ in counts]
    captions = [caption_from_labels(classes, dict(counts))] + make_captions(scene, rng)
    return build_prompt(captions[int(rng.integers(len(captions)))], classes)


def render_pool(world: ToyWorldConfig, seed: int, count: int, progress: bool = True) -> ScenePool:
    images, prompts, classes, maps = [], [], [], []
    for index in tqdm(range(count), desc="render toy scenes", disable=not progress):
        scene = scene_for_image(world, seed, PRETRAIN_SPLIT, index)
        rendered = render_scene(scene, world)
        images.append(rendered.image)
        prompts.append(scene_prompt(scene, np.random.default_rng([seed, index])))
        classes.append([name for name, _ in class_counts(scene)])
        maps.append(class_maps(rendered.instance_map, rendered.instance_classes, classes[-1]))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return ScenePool(images=pixels.contiguous(), prompts=prompts, classes=classes,
                     class_maps=torch.from_numpy(np.stack(maps)))


def training_noise_scheduler() -> DDPMScheduler:
    """DDPM's forward process with SD 2.1 base's noise schedule: what the UNet is trained on,
    and what a probe must noise real latents with to ask the UNet what it learned."""
    return DDPMScheduler(**{key: value for key, value in sd21_base_scheduler_config().items()
                            if key in _FORWARD_PROCESS_KEYS})


def warmup_cosine(step: int, steps: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _run_steps(steps: int, desc: str, progress: bool,
               step_fn: Callable[[int], dict[str, float]]) -> list[dict[str, float]]:
    history = []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        row = {"step": step, **step_fn(step)}
        history.append(row)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k != "step"})
    return history


def train_autoencoder(vae: AutoencoderKL, pool: ScenePool, settings: LatentDiffusionSettings,
                      seed: int, progress: bool = True) -> list[dict[str, float]]:
    """Phase 1: L2 reconstruction + ``vae_kl_weight`` · KL; sets ``scaling_factor`` at the end."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    vae.train()

    def step_fn(step: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, settings.vae_steps, settings.warmup_steps,
                                        settings.vae_lr)
        images = pool.images[torch.randint(len(pool.images), (settings.vae_batch_size,),
                                           generator=generator)]
        posterior = vae.encode(images).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        latents = posterior.mean + posterior.std * noise
        reconstruction = vae.decode(latents).sample
        recon = F.mse_loss(reconstruction, images)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = recon + settings.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}

    history = _run_steps(settings.vae_steps, "pretrain vae", progress, step_fn)
    vae.eval()
    moments = encode_pool(vae, pool)
    std = float(moments[0].std())
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    return history


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, pool: ScenePool, batch: int = 128
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, stds) of the pool's latent posteriors (unscaled)."""
    means, stds = [], []
    for start in range(0, len(pool.images), batch):
        posterior = vae.encode(pool.images[start:start + batch]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters()):
        target.mul_(decay).add_(source.detach(), alpha=1 - decay)


def cross_attention_query_key_parameters(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """The query and key projection weights of every cross-attention layer (``attn2``)."""
    chosen = [parameter for name, parameter in unet.named_parameters()
              if ".attn2.to_q." in name or ".attn2.to_k." in name]
    if not chosen:
        raise ValueError("the UNet has no cross-attention (attn2) layers")
    return chosen


def denoising_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under ``scheduler``'s ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type {kind!r}: the tiny SD trains epsilon or v_prediction")


@torch.no_grad()
def held_out_denoising_loss(unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                            tokenizer: CLIPTokenizer, vae: AutoencoderKL, pool: ScenePool,
                            scheduler: DDPMScheduler, seed: int, draws: int = 4) -> float:
    """The denoising loss on ``pool`` (held-out scenes, their own prompts), ``draws`` noise and
    timestep draws per scene from ``seed``: two UNets scored with the same seed see the same
    inputs, so their difference is theirs alone."""
    generator = torch.Generator().manual_seed(seed)
    means, _ = encode_pool(vae, pool)
    latents = means * vae.config.scaling_factor
    context = text_encoder(tokenize(tokenizer, pool.prompts)).last_hidden_state
    unet.eval()
    losses = []
    for _ in range(draws):
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(latents),),
                                  generator=generator)
        predicted = unet(scheduler.add_noise(latents, noise, timesteps), timesteps,
                         encoder_hidden_states=context).sample
        losses.append(F.mse_loss(predicted, denoising_target(scheduler, latents, noise,
                                                             timesteps)).item())
    return float(np.mean(losses))


def train_denoiser(unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                   tokenizer: CLIPTokenizer, vae: AutoencoderKL, pool: ScenePool,
                   settings: LatentDiffusionSettings, seed: int, progress: bool = True,
                   noise_scheduler: DDPMScheduler | None = None
                   ) -> tuple[UNet2DConditionModel, CLIPTextModel, list[dict[str, float]]]:
    """Phase 2: the UNet and the text encoder on the frozen autoencoder's latents, plus
    ``token_grounding_weight`` · TokenCompose's token loss on the cross-attention layers at
    ``token_grounding_sides`` (glass.pretrain.token_grounding; skipped at weight 0); returns their
    EMA copies and the per-step losses. ``noise_scheduler`` is the forward process and target
    (default: ``training_noise_scheduler()``, SD's schedule with epsilon prediction)."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = noise_scheduler if noise_scheduler is not None else training_noise_scheduler()
    means, stds = encode_pool(vae, pool)
    scale = vae.config.scaling_factor
    token_ids = tokenize(tokenizer, pool.prompts)
    empty_ids = tokenize(tokenizer, [""])[0]
    unet.train()
    text_encoder.train()
    ema_unet = copy.deepcopy(unet).requires_grad_(False).eval()
    ema_text = copy.deepcopy(text_encoder).requires_grad_(False).eval()
    cross_qk = cross_attention_query_key_parameters(unet)
    chosen = {id(parameter) for parameter in cross_qk}
    rest = [parameter for parameter in [*unet.parameters(), *text_encoder.parameters()]
            if id(parameter) not in chosen]
    parameters = rest + cross_qk
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr_factor": 1.0},
         {"params": cross_qk, "lr_factor": settings.cross_attention_qk_lr_factor}],
        lr=settings.unet_lr, weight_decay=1e-2)
    grounding = settings.token_grounding_weight > 0
    if grounding:
        latent_side = means.shape[-1]
        layers = grounded_layers(unet, latent_side, settings.token_grounding_sides)
        token_weights = pool_token_weights(tokenizer, pool.prompts, pool.classes,
                                           token_ids.shape[1])
        num_classes = token_weights.shape[2]
        # the masks at the latent grid once; coarser layers pool them further per step
        latent_masks = pooled_class_masks(pool.class_maps, num_classes, latent_side)

    def step_fn(step: int) -> dict[str, float]:
        lr = warmup_cosine(step, settings.unet_steps, settings.warmup_steps, settings.unet_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        draw = torch.randint(len(pool.images), (settings.unet_batch_size,), generator=generator)
        latents = (means[draw] + stds[draw] * torch.randn(means[draw].shape,
                                                          generator=generator)) * scale
        ids = token_ids[draw].clone()
        dropped = torch.rand(len(draw), generator=generator) < settings.caption_dropout
        ids[dropped] = empty_ids
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(draw),),
                                  generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        context = text_encoder(ids).last_hidden_state
        records: list[tuple[int, torch.Tensor]] = []
        for processor in processors:
            processor.records = records
        predicted = unet(noisy, timesteps, encoder_hidden_states=context).sample
        diffusion = F.mse_loss(predicted, denoising_target(scheduler, latents, noise, timesteps))
        row = {"loss": diffusion.item()}     # the denoising loss alone, comparable across runs
        loss = diffusion
        if grounding:
            weights = token_weights[draw].clone()
            weights[dropped] = 0
            by_side = {side: coarser_masks(latent_masks[draw], latent_side, side)
                       for side in settings.token_grounding_sides}
            grounding_loss = token_grounding_loss(records, weights, by_side)
            loss = loss + settings.token_grounding_weight * grounding_loss
            row["grounding"] = grounding_loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        update_ema(ema_unet, unet, decay)
        update_ema(ema_text, text_encoder, decay)
        return row | {"lr": lr}

    with grounding_processors(unet, layers if grounding else []) as processors:
        history = _run_steps(settings.unet_steps, "pretrain unet", progress, step_fn)
    return ema_unet, ema_text, history
