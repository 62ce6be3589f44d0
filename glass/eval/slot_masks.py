"""Slot masks of trained GLASS modules, as the official GLASS evaluation reads them: the slot
attention (averaged over heads) upsampled bilinearly to the image, then argmax over slots
(glass-facts.md, "Evaluation")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glass.model.encoder import FrozenDinov2Encoder
from glass.model_reference import resolve_reference
from glass.model.slot_attention import SlotAttention
from glass.seeding import sample_seed


class SlotMaskPredictor:
    """Frozen encoder + trained slot attention → (H, W) slot-index maps."""

    def __init__(self, encoder: FrozenDinov2Encoder, slot_attention: SlotAttention, seed: int = 0):
        self.encoder = encoder.eval()
        self.slot_attention = slot_attention.eval()
        self.seed = seed

    @classmethod
    def from_trained(cls, model_dir: str | Path, seed: int = 0) -> "SlotMaskPredictor":
        """From a train stage's output folder (``glass.json`` + ``slot_attention/``)."""
        model_dir = Path(model_dir)
        info = json.loads((model_dir / "glass.json").read_text())
        encoder = FrozenDinov2Encoder(resolve_reference(info["encoder"], model_dir),
                                      image_size=int(info["encoder_image_size"]))
        return cls(encoder, SlotAttention.from_pretrained(model_dir / "slot_attention"), seed)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, keys: list[str]) -> np.ndarray:
        """``images`` (B, 3, H, W) in [0, 1] → (B, H, W) int64 slot indices. Slot initialisation
        noise is seeded per image key, so a prediction does not depend on the batch."""
        maps = []
        for image, key in zip(images, keys, strict=True):
            generator = torch.Generator().manual_seed(sample_seed(self.seed, key, "slot-init"))
            features = self.encoder(image[None])
            attention = self.slot_attention(features, generator=generator).attention
            grid = attention.reshape(1, attention.shape[1], *self.encoder.grid_size)
            upsampled = F.interpolate(grid, size=image.shape[-2:], mode="bilinear",
                                      align_corners=False)
            maps.append(upsampled.argmax(dim=1)[0].cpu().numpy())
        return np.stack(maps).astype(np.int64)
