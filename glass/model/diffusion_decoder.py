"""The diffusion decoder: image reconstruction through Stable Diffusion (paper Sec. 4 Eq. 3 L_Recon;
supplement Sec. 2; docs/paper-facts.md "Model").

Like LSD, GLASS conditions SD 2.1's UNet on the slots: the projected slots (B, 7, 1024) replace the
77 text tokens as ``encoder_hidden_states``. Images (256×256 in LSD/GLASS → 32×32 latents) are
encoded by the frozen VAE; the loss is the MSE in latent space between the UNet's prediction and
the target the scheduler's ``prediction_type`` asks for ("epsilon": the noise, "v_prediction":
``scheduler.get_velocity``, "sample": the clean latents), at uniformly random timesteps.

The VAE is always frozen. The UNet is left as loaded (trainable): in phase 1 the trainer freezes
it and the slots are trained THROUGH it; in phase 2 it is fine-tuned (paper Sec. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       UNet2DConditionModel)
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from glass.model_reference import load_errors, load_failure

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# How images are sampled from the slots. "dpm++": the official GLASS evaluation's
# DPMSolverMultistepScheduler built from SD's scheduler config (docs/paper-facts.md, "Official
# checkpoints"); "ddim": DDIM, fewer steps for the same quality on a small budget.
SAMPLERS = ("ddim", "dpm++")


class DiffusionDecoder(nn.Module):
    """``unet``, ``vae`` (frozen here) and ``noise_scheduler`` of a Stable Diffusion model;
    ``image_size``: side the images are resized to before VAE encoding (paper: 256)."""

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 noise_scheduler: DDPMScheduler, image_size: int) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.noise_scheduler = noise_scheduler
        self.image_size = image_size
        # where the tokenizer and text encoder for classifier-free guidance's empty prompt come
        # from (set by from_pretrained; loaded on first use only)
        self.source: str | None = None
        self._empty_prompt: dict[int, torch.Tensor] = {}
        check_image_size(image_size, vae, unet)
        self.vae.requires_grad_(False)
        self.vae.eval()

    @classmethod
    def from_pretrained(cls, model: str, image_size: int,
                        vae_dtype: torch.dtype | None = None) -> DiffusionDecoder:
        """Load ``unet``, ``vae`` and a ``DDPMScheduler`` (training noise schedule; the
        checkpoint's betas and prediction type) from a diffusers SD folder or hub id. The UNet is
        loaded in float32 (it is trained in phase 2); ``vae_dtype`` may be half precision."""
        try:
            unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
            vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=vae_dtype)
            noise_scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
        except load_errors() as error:
            raise load_failure("Stable Diffusion (the diffusion decoder's UNet and VAE)", model,
                               error) from error
        decoder = cls(unet, vae, noise_scheduler, image_size)
        decoder.source = model
        return decoder

    def train(self, mode: bool = True) -> DiffusionDecoder:
        """Whatever the parent does, the frozen VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    @property
    def conditioning_dim(self) -> int:
        """Width of the conditioning tokens the UNet cross-attends to (1024 for SD 2.1)."""
        return self.unet.config.cross_attention_dim

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """``images`` (B, 3, H, W) in [0, 1] → scaled VAE latents (float32), sampled from the
        latent distribution as in SD fine-tuning."""
        pixels = images.float()
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size),
                                   mode="bilinear", antialias=True, align_corners=False)
        pixels = (pixels * 2.0 - 1.0).to(self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.sample(generator=generator).float()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def loss_target(self, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
        """What the UNet is trained to predict, by the scheduler's prediction type."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        if self.prediction_type == "sample":
            return latents
        raise ValueError(f"unknown scheduler prediction_type {self.prediction_type!r}; "
                         f"expected one of {PREDICTION_TYPES}")

    def loss(self, images: torch.Tensor, conditioning: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent-space denoising MSE of ``images`` (B, 3, H, W) in [0, 1] given the slot
        ``conditioning`` (B, K, conditioning_dim). Timesteps, noise and the VAE latent sample come
        from ``generator``. Gradients flow to ``conditioning`` (and to the UNet if trainable)."""
        if conditioning.ndim != 3 or conditioning.shape[-1] != self.conditioning_dim:
            raise ValueError(
                f"conditioning of shape {tuple(conditioning.shape)} does not fit the UNet: "
                f"expected (B, K, {self.conditioning_dim}) (unet cross_attention_dim); set the "
                f"slot attention output_dim to {self.conditioning_dim}")
        if conditioning.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {conditioning.shape[0]} conditionings")
        latents = self.encode_latents(images, generator=generator)
        noise = randn_tensor(latents.shape, generator=generator, device=latents.device,
                             dtype=latents.dtype)
        timesteps = random_timesteps(latents.shape[0],
                                     self.noise_scheduler.config.num_train_timesteps,
                                     generator, latents.device)
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        unet_dtype = self.unet.dtype
        prediction = self.unet(noisy_latents.to(unet_dtype), timesteps,
                               encoder_hidden_states=conditioning.to(unet_dtype)).sample
        target = self.loss_target(latents, noise, timesteps)
        return F.mse_loss(prediction.float(), target.float())

    @torch.no_grad()
    def reconstruct(self, conditioning: torch.Tensor, num_inference_steps: int = 50,
                    generator: torch.Generator | None = None, *, sampler: str = "ddim",
                    guidance_scale: float = 1.0) -> torch.Tensor:
        """Images (B, 3, image_size, image_size) in [0, 1] generated from noise, the UNet
        conditioned on the slots ``conditioning`` (B, K, conditioning_dim); see
        ``sample_latents`` for ``sampler`` and ``guidance_scale``."""
        return self.decode_latents(self.sample_latents(conditioning, num_inference_steps,
                                                       generator, sampler=sampler,
                                                       guidance_scale=guidance_scale))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w), as ``sample_latents`` and ``encode_latents`` give them,
        → images (B, 3, image_size, image_size) in [0, 1]."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        latents = latents / self.vae.config.scaling_factor + shift
        pixels = self.vae.decode(latents.to(self.vae.dtype)).sample.float()
        return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def sample_latents(self, conditioning: torch.Tensor, num_inference_steps: int = 50,
                       generator: torch.Generator | None = None, *, sampler: str = "ddim",
                       guidance_scale: float = 1.0) -> torch.Tensor:
        """The scaled latents (B, C, h, w) denoised from noise under ``conditioning``.

        ``sampler`` (``SAMPLERS``) is built from the training scheduler's config, so betas and
        prediction type match training. ``guidance_scale`` > 1: classifier-free guidance as
        the official evaluation runs it (``StableDiffusionPipeline`` given the slots as
        ``prompt_embeds``), against the text encoder's empty prompt padded to the slots' count;
        1: the slots alone."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1: no guidance), got {guidance_scale}")
        if sampler == "dpm++":
            scheduler = DPMSolverMultistepScheduler.from_config(self.noise_scheduler.config)
        else:
            # Never clip the predicted clean sample: scaled latents are not bounded to [-1, 1]
            # (SD's own scheduler configs say clip_sample false), and a config that omits the
            # key, as the toy SD's PNDM config does, would get DDIM's pixel-space default True,
            # which turns every sample into blotchy noise (README, "The toy world's own models").
            scheduler = DDIMScheduler.from_config(self.noise_scheduler.config, clip_sample=False)
        device, unet_dtype = conditioning.device, self.unet.dtype
        scheduler.set_timesteps(num_inference_steps, device=device)
        vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        side = self.image_size // vae_factor
        latents = randn_tensor((conditioning.shape[0], self.unet.config.in_channels, side, side),
                               generator=generator, device=device, dtype=torch.float32)
        latents = latents * scheduler.init_noise_sigma
        guided = guidance_scale > 1.0
        hidden = conditioning.to(unet_dtype)
        if guided:   # the pipeline's order: unconditional first
            empty = self.empty_prompt_embedding(conditioning.shape[1]).to(device, unet_dtype)
            hidden = torch.cat([empty.expand(conditioning.shape[0], -1, -1), hidden])
        for timestep in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            prediction = self.unet(model_input.to(unet_dtype), timestep,
                                   encoder_hidden_states=hidden).sample.float()
            if guided:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            latents = scheduler.step(prediction, timestep, latents,
                                     generator=generator).prev_sample
        return latents

    @torch.no_grad()
    def empty_prompt_embedding(self, length: int) -> torch.Tensor:
        """(1, length, conditioning_dim): the text encoder's states of the empty prompt padded
        to ``length`` tokens, which StableDiffusionPipeline uses as the unconditional input when
        it is given ``prompt_embeds`` of that length and no negative prompt."""
        if length not in self._empty_prompt:
            from transformers import CLIPTextModel, CLIPTokenizer

            if self.source is None:
                raise ValueError("classifier-free guidance needs the Stable Diffusion folder's "
                                 "text encoder: build the decoder with from_pretrained")
            try:
                tokenizer = CLIPTokenizer.from_pretrained(self.source, subfolder="tokenizer")
                text_encoder = CLIPTextModel.from_pretrained(self.source,
                                                             subfolder="text_encoder")
            except load_errors() as error:
                raise load_failure("Stable Diffusion's tokenizer and text encoder (the empty "
                                   "prompt of classifier-free guidance)", self.source,
                                   error) from error
            ids = tokenizer([""], padding="max_length", max_length=length, truncation=True,
                            return_tensors="pt").input_ids
            states = text_encoder.eval()(ids)[0]
            if states.shape[-1] != self.conditioning_dim:
                raise ValueError(f"{self.source}'s text encoder gives {states.shape[-1]}-d "
                                 f"states, the UNet cross-attends to {self.conditioning_dim}")
            self._empty_prompt[length] = states.float()
        return self._empty_prompt[length]


def random_timesteps(batch: int, num_train_timesteps: int, generator: torch.Generator | None,
                     device: torch.device) -> torch.Tensor:
    """Uniform integer timesteps in [0, num_train_timesteps), drawn on the generator's device."""
    draw_device = generator.device if generator is not None else device
    timesteps = torch.randint(0, num_train_timesteps, (batch,), generator=generator,
                              device=draw_device)
    return timesteps.to(device)


def check_image_size(image_size: int, vae: AutoencoderKL, unet: UNet2DConditionModel) -> None:
    """The image must map to a latent the UNet can down-sample to its lowest level."""
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
    if image_size % (vae_factor * unet_factor):
        raise ValueError(f"decoder image_size {image_size} must be a multiple of "
                         f"{vae_factor * unet_factor} (VAE factor {vae_factor} × UNet factor "
                         f"{unet_factor})")
