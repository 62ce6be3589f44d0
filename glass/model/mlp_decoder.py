"""The MLP decoder of the instance guidance (paper Sec. 4 "Loss function", Eq. 3; Table 10).

DINOSAUR-style feature reconstruction: every slot is broadcast to all N patch positions, a learned
positional embedding (init N(0, 0.02²)) is added, and a shared MLP maps each (slot, position) to a
feature vector plus one alpha logit. The alphas are softmaxed over the slots and the reconstruction
is the alpha-weighted sum of the slots' features. The instance-guidance loss is the MSE between the
reconstruction and the (frozen) encoder features.

Paper Table 10: "3 layers", hidden 1536 (DINOSAUR used 2048). We read the 3 as hidden layers,
as the only public GLASS implementation builds it (the official ``build_mlp``, which ocl's DINOSAUR
COCO config matches): Linear(slot, 1536) → ReLU → Linear(1536, 1536) → ReLU → Linear(1536, 1536)
→ ReLU → Linear(1536, D + 1), i.e. 4 Linear layers, every bias initialised to zero
(docs/paper-facts.md "Model").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


@dataclass
class MLPDecoderOutput:
    reconstruction: torch.Tensor  # (B, N, D): alpha-weighted sum of the slots' feature predictions
    masks: torch.Tensor           # (B, K, N): alpha, softmax over slots


class MLPDecoder(ModelMixin, ConfigMixin):
    """``slot_size``: slot width; ``feature_dim``: encoder feature width (768 for ViT-B);
    ``num_tokens``: number of patch tokens (1024 = 32×32 at 448 px)."""

    @register_to_config
    def __init__(
        self,
        slot_size: int,
        feature_dim: int,
        num_tokens: int,
        hidden_size: int = 1536,
        num_hidden_layers: int = 3,
    ) -> None:
        super().__init__()
        if num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers must be at least 1, got {num_hidden_layers}")
        # DINOSAUR's init: N(0, 0.02²).
        self.position_embedding = nn.Parameter(torch.randn(1, 1, num_tokens, slot_size) * 0.02)
        widths = [slot_size] + [hidden_size] * num_hidden_layers + [feature_dim + 1]
        layers: list[nn.Module] = []
        for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
            if index:
                layers.append(nn.ReLU())
            linear = nn.Linear(width_in, width_out)
            nn.init.zeros_(linear.bias)   # as the official build_mlp
            layers.append(linear)
        self.mlp = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor) -> MLPDecoderOutput:
        """``slots`` (B, K, slot_size) → reconstruction (B, N, feature_dim), masks (B, K, N)."""
        if slots.ndim != 3 or slots.shape[-1] != self.config.slot_size:
            raise ValueError(f"expected slots (B, K, {self.config.slot_size}), "
                             f"got {tuple(slots.shape)}")
        # The first layer of (slot + position) is first(slot) + W·position: computed that way
        # the (B, K, N, slot_size) broadcast never exists and the slot part costs K, not K·N, rows.
        first, rest = self.mlp[0], self.mlp[1:]
        position_part = F.linear(self.position_embedding, first.weight)  # (1, 1, N, H)
        hidden = first(slots).unsqueeze(2) + position_part               # (B, K, N, H)
        output = rest(hidden)                                            # (B, K, N, D + 1)
        features, alpha_logits = output[..., :-1], output[..., -1]
        masks = alpha_logits.softmax(dim=1)                          # over the slots
        reconstruction = (masks.unsqueeze(-1) * features).sum(dim=1)
        return MLPDecoderOutput(reconstruction=reconstruction, masks=masks)


def instance_guidance_loss(reconstruction: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """MSE between the MLP decoder's reconstruction and the encoder features (the target is
    detached: the encoder is frozen and never a loss path). Computed in float32."""
    return F.mse_loss(reconstruction.float(), features.detach().float())
