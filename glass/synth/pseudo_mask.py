"""Pseudo semantic masks from Stable Diffusion attention (paper Sec. 4 and supplement "Pseudo
labels", following Dataset Diffusion).

Each class's cross-attention map is resized (bicubic) to the self-attention resolution and
refined by propagating it ``tau`` times through the self-attention matrix,
``refined_c = (A_self)^tau · a_c`` with tau = 4; each refined map is min–max normalised, upsampled
(bicubic) to the image size, and the pixel is labelled by the strongest class. Its strength
("objectness") decides: below ``low`` (0.4) → background, at or above ``high`` (0.6) → the class,
in between → 255 (unsure, ignored by the training loss). The thresholds are the GLASS supplement's;
Dataset Diffusion's defaults are 0.5 / 0.6 (docs/paper-facts.md).

``normalisation="mass"`` is ours, an option for generators whose class maps all light up on every
object (the toy world's tiny SD: its maps find objects but tell classes apart on only about half
of them, reports/pseudo_mask_normalisation.md): objectness is the min–max normalised *sum* of the
refined class maps, and a pixel goes to the class that puts the largest share of its own
attention mass there (each map divided by its total). Per-class min–max instead stretches every
map to [0, 1], so a class whose attention is nearly flat still claims the pixels where it peaks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from glass.errors import InvalidInput
from glass.shard_format import BACKGROUND_LABEL, UNSURE_LABEL



def self_attention_grid(n: int, cross_shape: tuple[int, int]) -> tuple[int, int]:
    """(h', w') of an n-token self-attention map whose aspect ratio matches the cross maps'."""
    h, w = cross_shape
    height = round(math.sqrt(n * h / w))
    width = n // height if height else 0
    if height * width != n or height * w != width * h:
        raise InvalidInput(f"self-attention has {n} tokens, which is no grid with the cross-attention "
                         f"maps' aspect ratio {h}x{w}")
    return height, width


NORMALISATIONS = ("minmax", "mass")


def propagate_with_self_attention(cross_maps: torch.Tensor, self_attn: torch.Tensor,
                                  tau: int) -> torch.Tensor:
    """(K, h, w) cross maps, (n, n) self-attention → (K, h', w') refined maps, not normalised."""
    num_classes = cross_maps.shape[0]
    grid = self_attention_grid(self_attn.shape[0], tuple(cross_maps.shape[1:]))
    resized = F.interpolate(cross_maps[None].double(), size=grid, mode="bicubic",
                            align_corners=False)[0]
    propagation = torch.linalg.matrix_power(self_attn.double(), tau)
    return (propagation @ resized.reshape(num_classes, -1).T).T.reshape(num_classes, *grid)


def minmax_per_map(maps: torch.Tensor) -> torch.Tensor:
    """(K, h, w) → each map min–max normalised to [0, 1]."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    # A flat map carries no location: it normalises to zeros (background), not to NaN.
    return torch.where(span > 0, (maps - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


def refine_with_self_attention(cross_maps: torch.Tensor, self_attn: torch.Tensor,
                               tau: int) -> torch.Tensor:
    """(K, h, w) cross maps, (n, n) self-attention → (K, h', w') refined maps, min–max normalised."""
    return minmax_per_map(propagate_with_self_attention(cross_maps, self_attn, tau))


def thresholded_labels(objectness: torch.Tensor, strongest: torch.Tensor, low: float,
                       high: float) -> np.ndarray:
    """(H, W) objectness and class index (0-based) → uint8 labels: 0 background, 1..K class,
    255 unsure."""
    labels = (strongest + 1).to(torch.uint8)
    labels[objectness < high] = UNSURE_LABEL
    labels[objectness < low] = BACKGROUND_LABEL
    return labels.cpu().numpy()


def label_from_objectness(maps: torch.Tensor, low: float, high: float) -> np.ndarray:
    """(K, H, W) normalised maps → uint8 labels (objectness = the strongest class's value)."""
    objectness, strongest = maps.max(dim=0)
    return thresholded_labels(objectness, strongest, low, high)


def label_by_class_mass(refined: torch.Tensor, size: tuple[int, int], low: float,
                        high: float) -> np.ndarray:
    """(K, h', w') unnormalised refined maps → uint8 labels at ``size`` (``normalisation="mass"``)."""
    objectness = minmax_per_map(refined.sum(dim=0, keepdim=True))
    mass = refined.sum(dim=(1, 2), keepdim=True)
    share = torch.where(mass > 0, refined / mass.clamp_min(1e-300), torch.zeros_like(refined))
    objectness, share = (F.interpolate(maps[None], size=size, mode="bicubic",
                                       align_corners=False)[0] for maps in (objectness, share))
    return thresholded_labels(objectness[0], share.argmax(dim=0), low, high)


def pseudo_mask(cross_maps, self_attn, image_size, tau: int = 4, low: float = 0.4,
                high: float = 0.6, normalisation: str = "minmax") -> np.ndarray:
    """Pseudo semantic mask of one image.

    cross_maps: (K, h, w) cross-attention of the K class tokens (K may be 0);
    self_attn: (n, n) self-attention with n = h'·w' and rows summing to 1;
    image_size: (H, W) or an int for square images;
    normalisation: "minmax" (the paper's, per class) or "mass" (see the module docstring).
    Returns a uint8 (H, W) array: 0 = background, 1..K = class index, 255 = unsure.
    """
    if not 0.0 <= low <= high <= 1.0:
        raise InvalidInput(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    if tau < 0:
        raise InvalidInput(f"tau must be >= 0, got {tau}")
    if normalisation not in NORMALISATIONS:
        raise InvalidInput(f"unknown normalisation {normalisation!r}; expected one of "
                           f"{', '.join(NORMALISATIONS)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    cross = torch.as_tensor(np.asarray(cross_maps, dtype=np.float64))
    attention = torch.as_tensor(np.asarray(self_attn, dtype=np.float64))
    if cross.ndim != 3 or attention.ndim != 2 or attention.shape[0] != attention.shape[1]:
        raise InvalidInput(f"expected cross_maps (K, h, w) and self_attn (n, n), got "
                         f"{tuple(cross.shape)} and {tuple(attention.shape)}")
    if cross.shape[0] == 0:
        return np.zeros((height, width), dtype=np.uint8)
    if normalisation == "mass":
        return label_by_class_mass(propagate_with_self_attention(cross, attention, tau),
                                   (height, width), low, high)
    refined = refine_with_self_attention(cross, attention, tau)
    upsampled = F.interpolate(refined[None], size=(height, width), mode="bicubic",
                              align_corners=False)[0]
    return label_from_objectness(upsampled, low, high)
