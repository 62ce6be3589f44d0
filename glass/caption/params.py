"""The ``caption`` params section (defaults: the paper configuration, ``params.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS
from glass.devices import DtypeName, check_device_name
from glass.params import Params, nested, param


@dataclass(frozen=True)
class Blip2Params(Params):
    """``caption.blip2``: BLIP-2 generation (greedy by default, never sampling)."""

    device: str = "auto"                 # cuda if available, else cpu
    dtype: DtypeName = "float16"
    batch_size: int = param(32, min=1)
    max_new_tokens: int = param(30, min=1)
    num_beams: int = param(1, min=1)
    min_length: int = param(0, min=0)
    repetition_penalty: float = param(1.0, gt=0.0)
    prompt: str | None = None

    def validate(self) -> None:
        problem = check_device_name(self.device)
        if problem:
            raise self.invalid("device", problem)


@dataclass(frozen=True)
class TemplateParams(Params):
    """``caption.template``: the supplement's Table 13 captioner."""

    num_captions: int | None = param(None, min=1)   # null = as many as caption-split images
    max_objects: int = param(10, min=1)             # CLIP's 77-token limit


@dataclass(frozen=True)
class CaptionParams(Params):
    """``caption``: which captioner, and which images it refuses."""

    backend: Literal["blip2", "labels", "template", "dataset"] = "blip2"
    min_image_side: int = param(16, min=1)
    # larger images are decoded reduced where the format allows (JPEG), else skipped
    max_image_pixels: int = param(DEFAULT_MAX_IMAGE_PIXELS, min=1)
    blip2: Blip2Params = nested(Blip2Params)
    template: TemplateParams = nested(TemplateParams)
