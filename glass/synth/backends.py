"""Building a synthesis backend from params, inside whichever process generates (a Ray worker).

``build_generator`` is what the shard workers call: ``backend`` picks the image generator
(``stable_diffusion`` or ``toy``), ``mask_source`` where the pseudo masks come from (``attention``:
the generator's own; ``sam2``: SAM 2's automatic masks labelled by the attention classes, the
paper's "GLASS w/ SAMv2" ablation, Table 6c).
"""

from __future__ import annotations

import numpy as np

from glass.synth.generator import SkipSample, SynthSample
from glass.synth.params import GeneratorSettings


class SamRelabelledGenerator:
    """Wraps a generator: its attention masks only label SAM 2's masks of the same image."""

    def __init__(self, inner, mask_source):
        self.inner = inner
        self.mask_source = mask_source
        self.name = f"{inner.name}+sam2"

    def relabel(self, sample: SynthSample) -> SynthSample:
        if sample.mask is None:
            return sample
        sample.mask = np.asarray(self.mask_source.label_masks(sample.image, sample.mask), np.uint8)
        sample.metadata = dict(sample.metadata, mask_source="sam2")
        return sample

    def generate_batch(self, records: list[dict], seeds: list[int]) -> list[SynthSample | SkipSample]:
        return [self.relabel(result) if isinstance(result, SynthSample) else result
                for result in self.inner.generate_batch(records, seeds)]


def build_generator(settings: GeneratorSettings):
    """The generator ``settings`` describe (its models resolved to ``from_pretrained`` refs)."""
    if settings.backend == "toy":
        from glass.synth.toy_generator import ToyGenerator
        generator = ToyGenerator.from_settings(settings.toy)
    else:
        from glass.synth.stable_diffusion import StableDiffusionGenerator
        generator = StableDiffusionGenerator(settings.models["stable_diffusion"],
                                             **settings.stable_diffusion.as_dict(),
                                             store_attention=settings.store_attention)
    if settings.mask_source == "attention":
        return generator
    from glass.synth.sam2_masks import Sam2MaskSource
    return SamRelabelledGenerator(generator, Sam2MaskSource(settings.models["sam2"],
                                                            **settings.sam2.as_dict()))
