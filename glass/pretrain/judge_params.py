"""``pretrain.judge``: settings of the toy-world segmenter (glass.pretrain.judge), apart from
the model so that reading params never imports torch."""

from __future__ import annotations

import dataclasses

from glass.params import Params, param


@dataclasses.dataclass(frozen=True)
class JudgeSettings(Params):
    """``pretrain.judge``: the toy-world segmenter (glass.pretrain.judge)."""

    image_size: int = param(64, min=16)       # the tiny SD's image size
    steps: int = param(1000, min=1)
    batch_size: int = param(16, min=1)
    lr: float = param(2e-3, gt=0)
    warmup_steps: int = param(50, min=1)
    pool_size: int = param(4000, min=1)
    width: int = param(16, min=8)             # channels of the first level (doubled below)
    model_seed: int = param(0, min=0)
    eval_images: int = param(200, min=1)      # held-out renders of its own accuracy
