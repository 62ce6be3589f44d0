"""What a trained GLASS model gives at inference, as plain tensor functions: soft slot masks at an
image's size, the slot index per pixel, and slot-set edits for compositional generation (paper
Sec. 5.2, Fig. 6). ``GlassModel`` (``glass.model.glass``) wraps them with its modules.

Masks follow the official GLASS evaluation (docs/paper-facts.md "Evaluation"): the last
iteration's slot attention on the token grid, upsampled bilinearly (align_corners False) to the
image, argmax over slots, the first slot winning ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MASK_SOURCES = ("slot_attention", "mlp_decoder")


@dataclass
class Slots:
    """Per-image slot outputs, stacked over a batch."""

    slots: torch.Tensor          # (B, K, slot_size)
    conditioning: torch.Tensor   # (B, K, C): the slots as the UNet's encoder_hidden_states
    attention: torch.Tensor      # (B, K, N): last slot-attention iteration, softmax over slots
    features: torch.Tensor       # (B, N, D): frozen encoder features


def upsample_masks(masks: torch.Tensor, grid_size: tuple[int, int],
                   size: tuple[int, int]) -> torch.Tensor:
    """(B, K, N) masks over the row-major token grid → (B, K, H, W), bilinear."""
    grid = masks.reshape(masks.shape[0], masks.shape[1], *grid_size).float()
    return F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)


def slot_masks_to_labels(masks: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) soft masks → (B, H, W) int64 slot index per pixel (argmax over slots; the
    lowest slot index wins a tie, as ``torch.argmax`` in the official evaluation)."""
    if masks.ndim != 4:
        raise ValueError(f"expected masks (B, K, H, W), got {tuple(masks.shape)}")
    return masks.argmax(dim=1).to(torch.int64)


def remove_slot(conditioning: torch.Tensor, index: int) -> torch.Tensor:
    """(K, C) → (K-1, C) without slot ``index``: the object it binds leaves the generated scene."""
    if not 0 <= index < conditioning.shape[0]:
        raise IndexError(f"slot {index} out of range for {conditioning.shape[0]} slots")
    keep = [k for k in range(conditioning.shape[0]) if k != index]
    return conditioning[keep]


def add_slot(conditioning: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """(K, C) and one donor slot (C,) → (K+1, C): the UNet cross-attends to however many slots
    it is given (they take the text tokens' place), so an added slot adds its object."""
    if slot.shape != conditioning.shape[1:]:
        raise ValueError(f"donor slot of shape {tuple(slot.shape)} does not fit slots of width "
                         f"{conditioning.shape[1]}")
    return torch.cat([conditioning, slot[None]], dim=0)
