"""``pretrain``: the toy world's own foundation models (configs/toy-pretrain/params.yaml)."""

from __future__ import annotations

import dataclasses

from glass.data.toy_world import ToyWorldConfig
from glass.params import Params, nested, param


@dataclasses.dataclass(frozen=True)
class SelfDistillationSettings(Params):
    """``pretrain.dinov2``: DINO + iBOT self-distillation of the tiny DINOv2
    (glass.pretrain.dinov2_ssl). Defaults are the committed run's."""

    steps: int = param(1000, min=1)
    batch_size: int = param(32, min=2)
    lr: float = param(5e-4, gt=0)
    weight_decay: float = param(0.04, min=0)
    warmup_steps: int = param(100, min=1)
    teacher_momentum: float = param(0.996, min=0, max=1)   # rises to 1 on a cosine, as DINO
    student_temperature: float = param(0.1, gt=0)
    teacher_temperature: float = param(0.04, gt=0)
    center_momentum: float = param(0.9, min=0, max=1)
    prototypes: int = param(256, min=2)
    head_hidden: int = param(256, min=1)
    head_bottleneck: int = param(64, min=1)
    mask_ratio: float = param(0.3, gt=0, max=1)   # share of patches the student sees masked
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area share of the random resized crops
    pool_size: int = param(4000, min=1)           # scenes rendered once, drawn from each step
    model_seed: int = param(0, min=0)             # the random initial weights (glass.tiny.dinov2)
    eval_images: int = param(100, min=1)          # held-out scenes of the structure measure

    def validate(self) -> None:
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise self.invalid("crop_scale", f"must be 0 < min <= max <= 1, got {self.crop_scale}")


@dataclasses.dataclass(frozen=True)
class PretrainParams(Params):
    """``pretrain``: the toy world the models learn from, and each model's settings."""

    world: ToyWorldConfig = nested(ToyWorldConfig)
    dinov2: SelfDistillationSettings = nested(SelfDistillationSettings)
