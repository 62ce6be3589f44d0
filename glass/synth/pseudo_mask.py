"""Pseudo semantic masks from Stable Diffusion attention (paper Sec. 4 and supplement "Pseudo
labels", following Dataset Diffusion).

Each class's cross-attention map is resized (bicubic) to the self-attention resolution and
refined by propagating it ``tau`` times through the self-attention matrix,
``refined_c = (A_self)^tau · a_c`` with tau = 4; each refined map is min–max normalised, upsampled
(bicubic) to the image size, and the pixel is labelled by the strongest class. Its strength
("objectness") decides: below ``low`` (0.4) → background, at or above ``high`` (0.6) → the class,
in between → 255 (unsure, ignored by the training loss). The thresholds are the GLASS supplement's;
Dataset Diffusion's defaults are 0.5 / 0.6 (docs/paper-facts.md).
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


def refine_with_self_attention(cross_maps: torch.Tensor, self_attn: torch.Tensor,
                               tau: int) -> torch.Tensor:
    """(K, h, w) cross maps, (n, n) self-attention → (K, h', w') refined maps, min–max normalised."""
    num_classes = cross_maps.shape[0]
    grid = self_attention_grid(self_attn.shape[0], tuple(cross_maps.shape[1:]))
    resized = F.interpolate(cross_maps[None].double(), size=grid, mode="bicubic",
                            align_corners=False)[0]
    propagation = torch.linalg.matrix_power(self_attn.double(), tau)
    refined = (propagation @ resized.reshape(num_classes, -1).T).T.reshape(num_classes, *grid)
    low = refined.amin(dim=(1, 2), keepdim=True)
    span = refined.amax(dim=(1, 2), keepdim=True) - low
    # A flat map carries no location: it normalises to zeros (background), not to NaN.
    return torch.where(span > 0, (refined - low) / span.clamp_min(1e-12), torch.zeros_like(refined))


def label_from_objectness(maps: torch.Tensor, low: float, high: float) -> np.ndarray:
    """(K, H, W) normalised maps → uint8 labels: 0 background, 1..K class, 255 unsure."""
    objectness, strongest = maps.max(dim=0)
    labels = (strongest + 1).to(torch.uint8)
    labels[objectness < high] = UNSURE_LABEL
    labels[objectness < low] = BACKGROUND_LABEL
    return labels.cpu().numpy()


def pseudo_mask(cross_maps, self_attn, image_size, tau: int = 4, low: float = 0.4,
                high: float = 0.6) -> np.ndarray:
    """Pseudo semantic mask of one image.

    cross_maps: (K, h, w) cross-attention of the K class tokens (K may be 0);
    self_attn: (n, n) self-attention with n = h'·w' and rows summing to 1;
    image_size: (H, W) or an int for square images.
    Returns a uint8 (H, W) array: 0 = background, 1..K = class index, 255 = unsure.
    """
    if not 0.0 <= low <= high <= 1.0:
        raise InvalidInput(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    if tau < 0:
        raise InvalidInput(f"tau must be >= 0, got {tau}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    cross = torch.as_tensor(np.asarray(cross_maps, dtype=np.float64))
    attention = torch.as_tensor(np.asarray(self_attn, dtype=np.float64))
    if cross.ndim != 3 or attention.ndim != 2 or attention.shape[0] != attention.shape[1]:
        raise InvalidInput(f"expected cross_maps (K, h, w) and self_attn (n, n), got "
                         f"{tuple(cross.shape)} and {tuple(attention.shape)}")
    if cross.shape[0] == 0:
        return np.zeros((height, width), dtype=np.uint8)
    refined = refine_with_self_attention(cross, attention, tau)
    upsampled = F.interpolate(refined[None], size=(height, width), mode="bicubic",
                              align_corners=False)[0]
    return label_from_objectness(upsampled, low, high)
