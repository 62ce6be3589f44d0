"""The ``prompts`` params section (defaults: the paper configuration, ``params.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from glass.params import Params, param


@dataclass(frozen=True)
class PromptsParams(Params):
    """``prompts``: how captions become "<caption>; <class> <class> …" prompts."""

    # longer captions would push the class list past CLIP's 77 tokens
    max_caption_chars: int = param(300, min=1)
