"""GLASS: the full model, its loss, its trained folder and its inference (paper Sec. 4 Eq. 3,
Fig. 2; docs/paper-facts.md "Model").

    L = L_recon + λs · L_semantic + λi · L_instance,   λs = 0.7, λi = 0.9 (paper Sec. 4)

- L_recon: latent denoising MSE of the SD UNet conditioned on the slots (``DiffusionDecoder``);
- L_semantic: BCE between Hungarian-matched slot-attention masks and pseudo-mask segments
  (``glass.model.guidance``);
- L_instance: MSE between the MLP decoder's reconstruction and the DINOv2 features.

GLASS-Sem uses λs = 1, λi = 0.1 (paper Sec. 5). Which parameters train in which phase (phase 1:
slot attention + MLP decoder; phase 2: UNet, the rest at 1e-8) is the trainer's business.

``GlassModel.save_pretrained`` / ``GlassModel.from_pretrained`` are the only writer and reader of
a trained folder (layout in ``glass.model.trained_folder``); the inference methods
(``infer_slots``, ``soft_masks``, ``predict_labels``, ``generate``) are what evaluation measures.
Every random draw at inference (slot initialisation, diffusion noise) is seeded by a seed and the
image's key, so results never depend on batch composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glass.errors import InvalidInput
from glass.io import publish_directory, staging_directory, strip_library_fields, write_json
from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.guidance import Match, semantic_guidance_loss
from glass.model.inference import (MASK_SOURCES, Slots, slot_masks_to_labels,
                                   upsample_masks)
from glass.model.mlp_decoder import MLPDecoder, instance_guidance_loss
from glass.model.slot_attention import SlotAttention
from glass.model.trained_folder import (INDEX_NAME, ModelReference, TrainedFolderIndex,
                                        read_index)
from glass.seeding import sample_seed

TERMS = ("recon", "semantic", "instance")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (paper Eq. 3 and Sec. 4: λs = 0.7, λi = 0.9)."""

    recon: float = 1.0
    semantic: float = 0.7
    instance: float = 0.9

    def weight(self, term: str) -> float:
        return float(getattr(self, term))


@dataclass
class GlassOutput:
    loss: torch.Tensor                  # scalar: Σ weight · term (differentiable)
    terms: dict[str, torch.Tensor]      # "recon", "semantic", "instance", "total" (detached)
    slot_attention: torch.Tensor        # (B, K, N) last-iteration softmax over slots
    mlp_masks: torch.Tensor | None      # (B, K, N) MLP decoder alphas; None if not computed
    features: torch.Tensor              # (B, N, D) encoder features used (detached; to cache)
    conditioning: torch.Tensor | None = None  # (B, K, C) slots projected for the UNet (detached)
    matches: list[list[Match]] | None = None  # semantic matches per image, when computed


class GlassModel(nn.Module):
    """Encoder (frozen), slot attention, MLP decoder and diffusion decoder.

    ``encoder`` may be None when features always come precomputed (a feature cache),
    ``mlp_decoder`` None for a model without one (the official release ships none), and
    ``decoder`` None when the reconstruction weight is always 0 (or, for a loaded folder, until
    ``load_decoder``). ``index``/``folder``: set by ``from_pretrained``.
    """

    def __init__(self, encoder: FrozenDinov2Encoder | None, slot_attention: SlotAttention,
                 mlp_decoder: MLPDecoder | None, decoder: DiffusionDecoder | None,
                 index: TrainedFolderIndex | None = None, folder: Path | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.slot_attention = slot_attention
        self.mlp_decoder = mlp_decoder
        self.decoder = decoder
        self.index = index
        self.folder = folder
        check_compatible(encoder, slot_attention, mlp_decoder, decoder)

    @property
    def grid_size(self) -> tuple[int, int]:
        rows, columns = self.slot_attention.config.grid_size
        return rows, columns

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """DINOv2 patch features (B, N, D) of images in [0, 1]."""
        if self.encoder is None:
            raise ValueError("this GlassModel has no encoder: pass precomputed features")
        return self.encoder(images)

    def forward(
        self,
        images: torch.Tensor,
        pseudo_masks: torch.Tensor | None = None,
        weights: LossWeights = LossWeights(),
        features: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> GlassOutput:
        """``images`` (B, 3, H, W) in [0, 1]; ``pseudo_masks`` (B, H', W') uint8 (0 background,
        1..K classes, 255 ignored), required when ``weights.semantic`` > 0; ``features``
        (B, N, D): precomputed encoder features of ``images`` (else the encoder runs);
        ``generator``: slot-init noise, then the decoder's timesteps/noise/latent sample.
        Terms with weight 0 are not computed and reported as 0."""
        if features is None:
            features = self.encode(images)
        features = features.detach()
        slot_output = self.slot_attention(features, generator=generator)
        zero = slot_output.slots.new_zeros(())
        terms: dict[str, torch.Tensor] = {}

        if weights.recon:
            if self.decoder is None:
                raise ValueError("reconstruction weight > 0 but this GlassModel has no decoder")
            terms["recon"] = self.decoder.loss(images, slot_output.conditioning,
                                               generator=generator)
        else:
            terms["recon"] = zero

        matches = None
        if weights.semantic:
            if pseudo_masks is None:
                raise ValueError("semantic weight > 0 needs pseudo_masks (set it to 0 to train "
                                 "without semantic guidance)")
            terms["semantic"], matches = semantic_guidance_loss(
                slot_output.attention, self.grid_size, pseudo_masks)
        else:
            terms["semantic"] = zero

        mlp_masks = None
        if weights.instance:
            if self.mlp_decoder is None:
                raise ValueError("instance weight > 0 but this GlassModel has no MLP decoder")
            mlp_output = self.mlp_decoder(slot_output.slots)
            mlp_masks = mlp_output.masks
            terms["instance"] = instance_guidance_loss(mlp_output.reconstruction, features)
        else:
            terms["instance"] = zero

        loss = sum((weights.weight(term) * terms[term] for term in TERMS), zero)
        reported = {term: value.detach() for term, value in terms.items()}
        reported["total"] = loss.detach()
        return GlassOutput(loss=loss, terms=reported, slot_attention=slot_output.attention,
                           mlp_masks=mlp_masks, features=features, matches=matches,
                           conditioning=slot_output.conditioning.detach())

    # -----------------------------------------------------------------------------------------
    # The trained folder

    def save_pretrained(self, save_directory: str | Path, *, phase: int,
                        references: dict[str, str], encoder_image_size: int,
                        decoder_image_size: int, data_skipped: dict | None = None,
                        origin: str = "glass", extra: dict[str, Any] | None = None,
                        unet: nn.Module | None = None) -> Path:
        """Write the trained folder (``glass.model.trained_folder``): slot attention, the MLP
        decoder when there is one and, for ``phase`` 2, the UNet (``unet``, else the decoder's),
        plus ``glass.json`` referencing ``references["encoder"]`` and
        ``references["stable_diffusion"]`` portably. Built beside the destination and renamed
        into place when complete; the bytes depend on neither library versions nor paths."""
        out_dir = Path(save_directory)
        unet = unet if unet is not None else (self.decoder.unet if phase == 2 and self.decoder
                                              is not None else None)
        if phase == 2 and unet is None:
            raise ValueError("a phase-2 folder needs the fine-tuned UNet")
        components = {"slot_attention": "SlotAttention"}
        with staging_directory(out_dir) as staged:
            self.slot_attention.save_pretrained(staged / "slot_attention")
            if self.mlp_decoder is not None:
                self.mlp_decoder.save_pretrained(staged / "mlp_decoder")
                components["mlp_decoder"] = "MLPDecoder"
            if phase == 2:
                unet.save_pretrained(staged / "unet")
                components["unet"] = "UNet2DConditionModel"
            # without version fields and load paths, the saved modules are the same bytes in
            # every clone and environment (DVC hashes and dvc.lock do not depend on them)
            strip_library_fields(staged)
            index = TrainedFolderIndex(
                phase=phase, components=components,
                encoder=ModelReference.of(references["encoder"], out_dir),
                stable_diffusion=ModelReference.of(references["stable_diffusion"], out_dir),
                encoder_image_size=int(encoder_image_size),
                decoder_image_size=int(decoder_image_size), origin=origin,
                data_skipped=data_skipped if data_skipped and (
                    data_skipped.get("shards") or data_skipped.get("samples")) else None,
                extra=dict(extra or {}))
            write_json(staged / INDEX_NAME, index.as_dict())
            publish_directory(staged, out_dir)
        return out_dir

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device = "cpu",
                        with_encoder: bool = True, with_decoder: bool = False) -> "GlassModel":
        """Load a trained folder in eval mode on ``device``: the encoder it references (unless
        ``with_encoder`` is False: features come precomputed), slot attention, the MLP decoder
        when the folder has one, and the diffusion decoder now (``with_decoder``) or on first
        use (``load_decoder``; object discovery never needs it)."""
        from glass.model_reference import load_pretrained

        folder = Path(folder)
        index = read_index(folder)
        encoder = (FrozenDinov2Encoder(index.encoder.resolve(folder),
                                       image_size=index.encoder_image_size)
                   if with_encoder else None)
        slot_attention = load_pretrained(SlotAttention, folder / "slot_attention",
                                         "trained slot attention")
        mlp_decoder = (load_pretrained(MLPDecoder, folder / "mlp_decoder", "trained MLP decoder")
                       if "mlp_decoder" in index.components else None)
        model = cls(encoder, slot_attention, mlp_decoder, None, index=index, folder=folder)
        model.to(torch.device(device)).eval()
        if with_decoder:
            model.load_decoder()
        return model

    def load_decoder(self) -> DiffusionDecoder:
        """The diffusion decoder of a loaded folder: the referenced Stable Diffusion's VAE and
        scheduler with the folder's fine-tuned UNet (after phase 2) or the reference's."""
        if self.decoder is not None:
            return self.decoder
        if self.index is None or self.folder is None:
            raise ValueError("this GlassModel has no decoder and was not loaded from a folder")
        from glass.model_reference import load_pretrained

        decoder = DiffusionDecoder.from_pretrained(self.index.stable_diffusion.resolve(self.folder),
                                                   image_size=self.index.decoder_image_size)
        if "unet" in self.index.components:
            from diffusers import UNet2DConditionModel

            decoder.unet = load_pretrained(UNet2DConditionModel, self.folder / "unet",
                                           "fine-tuned decoder UNet")
        check_compatible(None, self.slot_attention, None, decoder)
        self.decoder = decoder.to(self.device).eval()
        return self.decoder

    # -----------------------------------------------------------------------------------------
    # Inference

    @property
    def device(self) -> torch.device:
        return next(self.slot_attention.parameters()).device

    @property
    def mask_sources(self) -> tuple[str, ...]:
        """The mask sources this model has: slot attention, and the MLP decoder if present."""
        return tuple(source for source in MASK_SOURCES
                     if source != "mlp_decoder" or self.mlp_decoder is not None)

    def noise_generator(self, seed: int, key: str, purpose: str) -> torch.Generator:
        """The generator of one image's random draws for ``purpose`` ("slot-init", "generate"):
        seeded by ``seed`` and the image's key, so every draw is reproducible per image."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(sample_seed(seed, key, purpose))
        return generator

    @torch.no_grad()
    def infer_slots(self, images: torch.Tensor, keys: list[str], seed: int = 0) -> Slots:
        """``images`` (B, 3, H, W) in [0, 1]; each image's slot initialisation is seeded by
        ``seed`` and its key."""
        if len(keys) != images.shape[0]:
            raise InvalidInput(f"{images.shape[0]} images but {len(keys)} keys")
        features = self.encode(images.to(self.device))
        outputs = [self.slot_attention(features[i:i + 1],
                                       generator=self.noise_generator(seed, key, "slot-init"))
                   for i, key in enumerate(keys)]
        return Slots(slots=torch.cat([o.slots for o in outputs]),
                     conditioning=torch.cat([o.conditioning for o in outputs]),
                     attention=torch.cat([o.attention for o in outputs]), features=features)

    @torch.no_grad()
    def soft_masks(self, slots: Slots, size: tuple[int, int],
                   source: str = "slot_attention") -> torch.Tensor:
        """(B, K, H, W) masks of ``source`` upsampled bilinearly to ``size``."""
        if source not in self.mask_sources:
            raise InvalidInput(f"mask source {source!r} is not one of this model's "
                               f"{self.mask_sources}" + (" (it has no MLP decoder)"
                                                         if source == "mlp_decoder" else ""))
        masks = slots.attention if source == "slot_attention" else \
            self.mlp_decoder(slots.slots).masks
        return upsample_masks(masks, self.grid_size, size)

    def predict_labels(self, images: torch.Tensor, keys: list[str], seed: int = 0,
                       source: str = "slot_attention",
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B, H, W) int64 slot index per pixel at ``size`` (default: the images' size)."""
        size = tuple(size or images.shape[-2:])
        return slot_masks_to_labels(self.soft_masks(self.infer_slots(images, keys, seed),
                                                    size, source))

    @torch.no_grad()
    def generate(self, conditioning: torch.Tensor, keys: list[str], seed: int = 0,
                 num_inference_steps: int = 50, *, sampler: str = "ddim",
                 guidance_scale: float = 1.0) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] from slot ``conditioning`` (B, K', C), the diffusion
        noise seeded by ``seed`` and each key, so an edited slot set and the original share
        their noise (``sampler``, ``guidance_scale``: ``DiffusionDecoder.sample_latents``)."""
        decoder = self.load_decoder()
        images = [decoder.reconstruct(conditioning[i:i + 1].to(self.device),
                                      num_inference_steps=num_inference_steps,
                                      generator=self.noise_generator(seed, key, "generate"),
                                      sampler=sampler, guidance_scale=guidance_scale)
                  for i, key in enumerate(keys)]
        return torch.cat(images)


def check_compatible(encoder: FrozenDinov2Encoder | None, slot_attention: SlotAttention,
                     mlp_decoder: MLPDecoder | None, decoder: DiffusionDecoder | None) -> None:
    """Fail at construction, with the numbers, when the modules' sizes do not fit together."""
    sa = slot_attention.config
    rows, columns = sa.grid_size
    problems = []
    if encoder is not None:
        if encoder.feature_dim != sa.input_dim:
            problems.append(f"encoder feature_dim {encoder.feature_dim} != slot attention "
                            f"input_dim {sa.input_dim}")
        if tuple(encoder.grid_size) != (rows, columns):
            problems.append(f"encoder grid {encoder.grid_size} != slot attention grid_size "
                            f"{(rows, columns)}")
    md = mlp_decoder.config if mlp_decoder is not None else None
    if md is not None and md.slot_size != sa.slot_size:
        problems.append(f"MLP decoder slot_size {md.slot_size} != slot attention slot_size "
                        f"{sa.slot_size}")
    if md is not None and md.feature_dim != sa.input_dim:
        problems.append(f"MLP decoder feature_dim {md.feature_dim} != slot attention input_dim "
                        f"{sa.input_dim}")
    if md is not None and md.num_tokens != rows * columns:
        problems.append(f"MLP decoder num_tokens {md.num_tokens} != {rows}x{columns} tokens")
    if decoder is not None and decoder.conditioning_dim != sa.output_dim:
        problems.append(f"slot attention output_dim {sa.output_dim} != UNet cross_attention_dim "
                        f"{decoder.conditioning_dim} (the slots are the UNet's "
                        "encoder_hidden_states)")
    if problems:
        raise ValueError("GLASS modules do not fit together: " + "; ".join(problems))
