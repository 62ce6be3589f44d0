"""The ``train`` params section (defaults: the paper configuration, ``params.yaml``; paper Sec. 4,
supplement Sec. 2 and Table 10)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glass.params import Params, nested, param


@dataclass(frozen=True)
class ModelParams(Params):
    """``train.model``: the GLASS modules' sizes."""

    encoder_image_size: int = param(448, min=1)     # DINOv2 ViT-B/14 → 32x32 patch tokens
    decoder_image_size: int = param(256, min=8)     # SD 2.1 UNet at 256 px → 32x32 latents
    num_slots: int = param(7, min=1)
    num_iterations: int = param(5, min=1)
    slot_size: int = param(768, min=1)
    mlp_hidden_size: int = param(768, min=1)
    mlp_decoder_hidden_size: int = param(1536, min=1)   # Table 10
    # Table 10's "3 layers", read as the official code builds them: 3 hidden layers (4 Linear)
    mlp_decoder_hidden_layers: int = param(3, min=1)


@dataclass(frozen=True)
class LossParams(Params):
    """``train.loss``: L = recon·L_recon + semantic·L_semantic + instance·L_instance."""

    recon: float = param(1.0, min=0.0)
    semantic: float = param(0.7, min=0.0)     # GLASS-Sem: semantic 1.0, instance 0.1
    instance: float = param(0.9, min=0.0)

    def validate(self) -> None:
        if self.recon == self.semantic == self.instance == 0.0:
            raise self.invalid("recon", "every loss weight is 0: nothing would be learned")


@dataclass(frozen=True)
class TrainDataParams(Params):
    """``train.data``: the shard loader."""

    batch_size: int = param(32, min=1)
    num_workers: int = param(8, min=0)
    mask_size: int = param(512, min=1)    # pseudo masks at generation resolution
    flip: bool = True                     # random horizontal flip (LSD reference)
    feature_cache: bool = False           # cache the frozen encoder's features
    on_corrupt: Literal["raise", "skip"] = "raise"


@dataclass(frozen=True)
class OptimParams(Params):
    """``train.optim``."""

    # fp8 needs specific GPUs and libraries that glass does not set up
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"   # CPU runs always use fp32
    gradient_accumulation_steps: int = param(1, min=1)
    max_grad_norm: float | None = param(1.0, gt=0.0)       # null: no clipping (LSD: 1.0)


@dataclass(frozen=True)
class LoggingParams(Params):
    """``train.logging``: what is logged and saved, and how often (never what is learned)."""

    log_every: int = param(50, min=1)
    grid_every: int = param(5000, min=1)
    grid_reconstruction_steps: int = param(50, min=0)   # DDIM steps of the grid's column (0: none)
    checkpoint_every: int = param(5000, min=1)
    checkpoint_limit: int = param(3, min=1)


@dataclass(frozen=True)
class Phase1Params(Params):
    """``train.phase1``: slot attention + MLP decoder, UNet frozen (Adam, constant lr)."""

    steps: int = param(400_000, min=1)    # COCO: 500K iterations, the last 100K are phase 2
    lr: float = param(2.0e-5, gt=0.0)


@dataclass(frozen=True)
class Phase2Params(Params):
    """``train.phase2``: the UNet fine-tuned, the rest nearly frozen."""

    steps: int = param(100_000, min=1)
    unet_lr: float = param(4.0e-5, gt=0.0)
    slot_lr: float = param(1.0e-8, min=0.0)


@dataclass(frozen=True)
class TrainParams(Params):
    """``train``: both phases of GLASS training."""

    model: ModelParams = nested(ModelParams)
    loss: LossParams = nested(LossParams)
    data: TrainDataParams = nested(TrainDataParams)
    optim: OptimParams = nested(OptimParams)
    logging: LoggingParams = nested(LoggingParams)
    phase1: Phase1Params = nested(Phase1Params)
    phase2: Phase2Params = nested(Phase2Params)

    def steps(self, phase: int) -> int:
        return self.phase1.steps if phase == 1 else self.phase2.steps

    def learning(self) -> dict:
        """The settings that change the weights (``logging`` only changes what is recorded)."""
        return {key: value for key, value in self.as_dict().items() if key != "logging"}
