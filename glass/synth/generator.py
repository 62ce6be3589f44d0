"""What every synthesis backend produces, and the interface they share.

A backend turns prompt records (from the prompts stage) into ``SynthSample``s: the generated image,
its pseudo semantic mask (0 = background, k = ``classes[k-1]``, 255 = unsure), and the metadata
that makes the sample reproducible. The seed of each sample comes from (global seed, sample key),
never from its position in a batch, so a sample is the same however work is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from glass.errors import InvalidInput
from glass.data.classes import COCO_CATEGORY_IDS
from glass.seeding import sample_seed


@dataclass
class SynthSample:
    key: str                                  # WebDataset __key__: the sample id
    image: np.ndarray                         # (H, W, 3) uint8
    mask: np.ndarray | None                   # (H, W) uint8 label map, None = generated without
    classes: list[str]                        # label k ↔ classes[k - 1]
    metadata: dict[str, Any] = field(default_factory=dict)
    attention: np.ndarray | None = None       # (K, h, w) float16 refined maps (optional)

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise InvalidInput(f"{self.key}: image must be (H, W, 3) uint8, got "
                             f"{self.image.dtype} {self.image.shape}")
        if self.mask is not None:
            if self.mask.dtype != np.uint8 or self.mask.shape != self.image.shape[:2]:
                raise InvalidInput(f"{self.key}: mask must be uint8 {self.image.shape[:2]}, got "
                                 f"{self.mask.dtype} {self.mask.shape}")
            labels = set(np.unique(self.mask).tolist()) - {0, 255}
            if labels and max(labels) > len(self.classes):
                raise InvalidInput(f"{self.key}: mask label {max(labels)} has no class "
                                 f"(classes: {self.classes})")


def label_to_coco_id(classes: list[str]) -> dict[str, int]:
    """{"1": 18, "2": 17, ...}: mask label → official COCO category id (JSON-friendly keys)."""
    return {str(k): COCO_CATEGORY_IDS[name] for k, name in enumerate(classes, start=1)}


def synthesis_seed(seed: int, key: str) -> int:
    """The per-sample generation seed (32 bits, as torch generators and numpy both accept)."""
    return sample_seed(seed, key, "synthesis") % (2**32)


class SkipSample(Exception):
    """A prompt that cannot be synthesised; the reason goes to the shard manifest."""


class Generator(Protocol):
    """A synthesis backend. ``generate`` returns one SynthSample per prompt record, or raises
    SkipSample for one record (the shard writer then records it and goes on)."""

    name: str

    def generate(self, record: dict, seed: int) -> SynthSample: ...

    def generate_batch(self, records: list[dict], seeds: list[int]) -> list[SynthSample | SkipSample]:
        ...
