"""The frozen DINOv2 encoder (supplement Sec. 2, Table 10; docs/paper-facts.md "Model").

GLASS (like LSD) feeds 448×448 images to DINOv2 ViT-B/14 and uses the last layer's patch tokens
after the final LayerNorm (``x_norm_patchtokens`` in the DINOv2 code, ``last_hidden_state``
without the CLS token in transformers): 32×32 tokens of 768 dims. Inputs are normalised with the
ImageNet mean/std. The encoder is never trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Dinov2Model
from glass.model_reference import load_errors, load_failure

# ImageNet statistics (DINOv2's preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FrozenDinov2Encoder(nn.Module):
    """DINOv2 patch features of images in [0, 1].

    ``model``: hub id (e.g. ``facebook/dinov2-base``) or a local folder (e.g. the tiny model from
    ``glass.tiny.dinov2``). ``image_size``: side the images are resized to (paper: 448; must be a
    multiple of the patch size). ``dtype``: weight dtype (default: the checkpoint's float32);
    features are always returned as float32.
    """

    def __init__(self, model: str, image_size: int, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.backbone = load_dinov2(model, dtype)
        patch_size = self.backbone.config.patch_size
        if image_size % patch_size:
            raise ValueError(f"encoder image_size {image_size} is not a multiple of the DINOv2 "
                             f"patch size {patch_size} ({model!r})")
        self.model_id = model
        self.image_size = image_size
        self.patch_size = patch_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenDinov2Encoder:
        """Whatever the parent does, the frozen backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def feature_dim(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of patch tokens."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_tokens(self) -> int:
        rows, columns = self.grid_size
        return rows * columns

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, H, W) floats in [0, 1] → patch tokens (B, N, D), row-major over the
        ``grid_size`` grid, after DINOv2's final LayerNorm."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        pixels = images.float()
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size),
                                   mode="bilinear", antialias=True, align_corners=False)
        pixels = (pixels - self.mean) / self.std
        weight_dtype = self.backbone.embeddings.patch_embeddings.projection.weight.dtype
        tokens = self.backbone(pixel_values=pixels.to(weight_dtype)).last_hidden_state
        # Drop the CLS token (and register tokens, for checkpoints that have them): the patch
        # tokens are the last N.
        return tokens[:, -self.num_tokens:].float()


def load_dinov2(model: str, dtype: torch.dtype | None = None) -> Dinov2Model:
    """Load the backbone, turning 'not available here' into an actionable error; there is no
    fallback model."""
    try:
        return Dinov2Model.from_pretrained(model, dtype=dtype)
    except load_errors() as error:
        raise load_failure("DINOv2 encoder", model, error) from error
