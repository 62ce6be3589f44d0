"""A trained GLASS model read back for evaluation: slots, slot masks and reconstructions.

Loads what a train stage saved (``glass.json`` + ``slot_attention/`` + ``mlp_decoder/`` and, after
phase 2, ``unet/``) through ``from_pretrained``. Masks follow the official GLASS evaluation by
default (glass-facts.md "Evaluation"): the last iteration's slot attention (averaged over heads),
upsampled bilinearly to the image, argmax over slots; the MLP decoder's alpha masks are the
alternative ``mask_source``. Every random draw (slot initialisation, diffusion noise) is seeded by
the evaluation seed and the image's key, so results never depend on batch composition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glass.errors import InvalidInput, MissingInput
from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.mlp_decoder import MLPDecoder
from glass.model.slot_attention import SlotAttention
from glass.model_reference import load_pretrained, resolve_reference
from glass.seeding import sample_seed

MASK_SOURCES = ("slot_attention", "mlp_decoder")


@dataclass
class Slots:
    """Per-image slot outputs, stacked over a batch."""

    slots: torch.Tensor          # (B, K, slot_size)
    conditioning: torch.Tensor   # (B, K, C): the slots as the UNet's encoder_hidden_states
    attention: torch.Tensor      # (B, K, N): last slot-attention iteration, softmax over slots
    features: torch.Tensor       # (B, N, D): frozen encoder features


def read_trained_info(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "glass.json"
    if not path.is_file():
        raise MissingInput(
            f"{path} not found: {model_dir} is not a trained GLASS folder (run the train_phase1 / "
            "train_phase2 stages first, `dvc repro`)")
    return json.loads(path.read_text())


class TrainedGlass:
    """Frozen encoder, slot attention and MLP decoder of a trained model; the diffusion decoder
    is loaded on first use (object discovery never needs it)."""

    def __init__(self, model_dir: str | Path, seed: int = 0, device: str | torch.device = "cpu"):
        self.model_dir = Path(model_dir)
        self.info = read_trained_info(self.model_dir)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.encoder = FrozenDinov2Encoder(resolve_reference(self.info["encoder"], self.model_dir),
                                           image_size=int(self.info["encoder_image_size"]))
        self.slot_attention = load_pretrained(SlotAttention, self.model_dir / "slot_attention",
                                              "trained slot attention")
        self.mlp_decoder = load_pretrained(MLPDecoder, self.model_dir / "mlp_decoder",
                                           "trained MLP decoder")
        for module in (self.encoder, self.slot_attention, self.mlp_decoder):
            module.to(self.device).eval()
        self._decoder: DiffusionDecoder | None = None

    @property
    def grid_size(self) -> tuple[int, int]:
        rows, columns = self.slot_attention.config.grid_size
        return int(rows), int(columns)

    @property
    def decoder_reference(self) -> str:
        """The Stable Diffusion model (VAE, scheduler and, before phase 2, the UNet)."""
        return resolve_reference(self.info["stable_diffusion"], self.model_dir)

    @property
    def decoder(self) -> DiffusionDecoder:
        """SD VAE + UNet (the phase-2 fine-tuned UNet when the folder has one)."""
        if self._decoder is None:
            decoder = DiffusionDecoder.from_pretrained(
                self.decoder_reference, image_size=int(self.info["decoder_image_size"]))
            if self.info.get("unet"):
                from diffusers import UNet2DConditionModel

                decoder.unet = load_pretrained(UNet2DConditionModel,
                                               self.model_dir / self.info["unet"],
                                               "fine-tuned decoder UNet")
            self._decoder = decoder.to(self.device).eval()
        return self._decoder

    def _generator(self, key: str, purpose: str) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(sample_seed(self.seed, key, purpose))
        return generator

    @torch.no_grad()
    def slots(self, images: torch.Tensor, keys: list[str]) -> Slots:
        """``images`` (B, 3, H, W) in [0, 1]; slot initialisation seeded per key."""
        if len(keys) != images.shape[0]:
            raise InvalidInput(f"{images.shape[0]} images but {len(keys)} keys")
        features = self.encoder(images.to(self.device))
        outputs = [self.slot_attention(features[i:i + 1], generator=self._generator(key, "slot-init"))
                   for i, key in enumerate(keys)]
        return Slots(slots=torch.cat([o.slots for o in outputs]),
                     conditioning=torch.cat([o.conditioning for o in outputs]),
                     attention=torch.cat([o.attention for o in outputs]), features=features)

    @torch.no_grad()
    def soft_masks(self, slots: Slots, size: tuple[int, int],
                   source: str = "slot_attention") -> torch.Tensor:
        """(B, K, H, W) masks upsampled bilinearly to ``size``."""
        if source == "slot_attention":
            masks = slots.attention
        elif source == "mlp_decoder":
            masks = self.mlp_decoder(slots.slots).masks
        else:
            raise InvalidInput(f"mask source {source!r} is not one of {MASK_SOURCES}")
        grid = masks.reshape(masks.shape[0], masks.shape[1], *self.grid_size).float()
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)

    def predict_masks(self, images: torch.Tensor, keys: list[str],
                      source: str = "slot_attention",
                      size: tuple[int, int] | None = None) -> np.ndarray:
        """(B, H, W) int64 slot index per pixel (argmax of the upsampled masks)."""
        size = tuple(size or images.shape[-2:])
        masks = self.soft_masks(self.slots(images, keys), size, source)
        return masks.argmax(dim=1).cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def generate(self, conditioning: torch.Tensor, keys: list[str],
                 num_inference_steps: int) -> torch.Tensor:
        """Images (B, 3, S, S) in [0, 1] from slot ``conditioning`` (B, K', C), the diffusion
        noise seeded per key, so an edited slot set and the original share their noise."""
        images = [self.decoder.reconstruct(conditioning[i:i + 1].to(self.device),
                                           num_inference_steps=num_inference_steps,
                                           generator=self._generator(key, "generate"))
                  for i, key in enumerate(keys)]
        return torch.cat(images)
