"""GLASS: the full model and its loss (paper Sec. 4 Eq. 3, Fig. 2; glass-facts "Model").

    L = L_recon + λs · L_semantic + λi · L_instance,   λs = 0.7, λi = 0.9 (paper Sec. 4)

- L_recon: latent denoising MSE of the SD UNet conditioned on the slots (``DiffusionDecoder``);
- L_semantic: BCE between Hungarian-matched slot-attention masks and pseudo-mask segments
  (``glass.model.guidance``);
- L_instance: MSE between the MLP decoder's reconstruction and the DINOv2 features.

GLASS-Sem uses λs = 1, λi = 0.1 (paper Sec. 5). Which parameters train in which phase (phase 1:
slot attention + MLP decoder; phase 2: UNet, the rest at 1e-8) is the trainer's business.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.guidance import Match, semantic_guidance_loss
from glass.model.mlp_decoder import MLPDecoder, instance_guidance_loss
from glass.model.slot_attention import SlotAttention

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

    ``encoder`` may be None when features always come precomputed (a feature cache), and
    ``decoder`` may be None when the reconstruction weight is always 0.
    """

    def __init__(self, encoder: FrozenDinov2Encoder | None, slot_attention: SlotAttention,
                 mlp_decoder: MLPDecoder, decoder: DiffusionDecoder | None) -> None:
        super().__init__()
        self.encoder = encoder
        self.slot_attention = slot_attention
        self.mlp_decoder = mlp_decoder
        self.decoder = decoder
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


def check_compatible(encoder: FrozenDinov2Encoder | None, slot_attention: SlotAttention,
                     mlp_decoder: MLPDecoder, decoder: DiffusionDecoder | None) -> None:
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
    md = mlp_decoder.config
    if md.slot_size != sa.slot_size:
        problems.append(f"MLP decoder slot_size {md.slot_size} != slot attention slot_size "
                        f"{sa.slot_size}")
    if md.feature_dim != sa.input_dim:
        problems.append(f"MLP decoder feature_dim {md.feature_dim} != slot attention input_dim "
                        f"{sa.input_dim}")
    if md.num_tokens != rows * columns:
        problems.append(f"MLP decoder num_tokens {md.num_tokens} != {rows}x{columns} tokens")
    if decoder is not None and decoder.conditioning_dim != sa.output_dim:
        problems.append(f"slot attention output_dim {sa.output_dim} != UNet cross_attention_dim "
                        f"{decoder.conditioning_dim} (the slots are the UNet's "
                        "encoder_hidden_states)")
    if problems:
        raise ValueError("GLASS modules do not fit together: " + "; ".join(problems))
