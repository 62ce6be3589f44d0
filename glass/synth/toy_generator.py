"""The ``toy`` synthesis backend: renders a toy-world scene with the prompt's classes.

It was the CPU configuration's generator until the toy world's trained tiny SD took over, and it
is the oracle upper bound for ablations: its mask is the scene's exact
semantic map, with a thin unsure band (255) along every boundary so that it looks like a pseudo
mask's ambiguity without erasing small objects (one pixel on each side by default).
"""

from __future__ import annotations

from dataclasses import asdict
import numpy as np
from scipy import ndimage

from glass.errors import InvalidInput
from glass.data.toy_world import TOY_CLASS_STYLES, ToyWorldConfig, render_scene, sample_scene
from glass.synth.generator import SkipSample, SynthSample, label_to_coco_id
from glass.synth.params import SynthToyParams
from glass.shard_format import UNSURE_LABEL


def mark_boundaries_unsure(labels: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` px (Chebyshev) of a label change become 255; band 0 = exact mask."""
    out = labels.astype(np.uint8)
    if band <= 0:
        return out
    size = 2 * band + 1
    boundary = ndimage.maximum_filter(labels, size=size) != ndimage.minimum_filter(labels, size=size)
    out[boundary] = UNSURE_LABEL
    return out


class ToyGenerator:
    name = "toy"

    def __init__(self, world: ToyWorldConfig, *, unsure_band: int = 1):
        if unsure_band < 0:
            raise InvalidInput(f"unsure_band must be >= 0, got {unsure_band}")
        self.world = world
        self.unsure_band = unsure_band

    @classmethod
    def from_settings(cls, settings: SynthToyParams) -> "ToyGenerator":
        return cls(settings.world, unsure_band=settings.unsure_band)

    def generate(self, record: dict, seed: int) -> SynthSample:
        classes = list(record["classes"])
        undrawable = [name for name in classes if name not in TOY_CLASS_STYLES]
        if undrawable:
            raise SkipSample(f"the toy world has no shape for {undrawable}")
        if not classes:
            raise SkipSample("the toy generator needs at least one class")
        scene = sample_scene(np.random.default_rng(seed), self.world, classes)
        rendered = render_scene(scene, self.world)
        semantic = rendered.semantic_map({name: k for k, name in enumerate(classes, start=1)})
        return SynthSample(
            key=record["key"], image=rendered.image,
            mask=mark_boundaries_unsure(semantic, self.unsure_band), classes=classes,
            metadata={"caption": record.get("caption"), "prompt": record.get("prompt"),
                      "classes": classes, "label_to_coco_id": label_to_coco_id(classes),
                      "seed": seed, "generator": self.name, "model": None,
                      "settings": {"world": asdict(self.world), "unsure_band": self.unsure_band},
                      # the instance layout, which only the toy world knows: useful for oracles
                      "instances": rendered.instance_classes})

    def generate_batch(self, records: list[dict], seeds: list[int]) -> list:
        results: list = []
        for record, seed in zip(records, seeds, strict=True):
            try:
                results.append(self.generate(record, seed))
            except SkipSample as skip:
                results.append(skip)
        return results
