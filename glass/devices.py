"""Devices and weight dtypes, shared by every model wrapper."""

from __future__ import annotations

import logging
import re
from typing import Literal

import torch

from glass.errors import InvalidInput

log = logging.getLogger(__name__)

# Weight dtypes a params file may name.
DtypeName = Literal["float16", "bfloat16", "float32"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device_name(device: str) -> str | None:
    """Why ``device`` is not a device name a params file may give, or None."""
    if _DEVICE.match(device):
        return None
    return f"must be auto, cpu, cuda, cuda:<index> or mps, got {device!r}"

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
}


def resolve_device(device: str) -> str:
    """``"auto"`` means the first CUDA GPU when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} is set, but this machine has no CUDA GPU that "
                           "torch can use; set the device param to auto or cpu")
    return device


def resolve_dtype(dtype: str, device: str | torch.device, *, what: str = "model") -> torch.dtype:
    """The weight dtype; on CPU always float32, since half-precision kernels there are slow or
    missing (the switch is logged, never silent)."""
    if dtype not in DTYPES:
        raise InvalidInput(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    if torch.device(device).type == "cpu" and torch_dtype != torch.float32:
        log.info("%s on CPU: using float32 instead of %s", what, dtype)
        return torch.float32
    return torch_dtype


def check_gpu_setting(device: str, dtype: str, key: str) -> str | None:
    """Why ``dtype`` (a half-precision setting meant for a GPU) cannot be honoured with
    ``device: auto`` on a machine without a GPU, or None. ``device: cpu`` set explicitly is the
    user's choice and runs in float32; ``auto`` falling back to the CPU would make a GPU
    configuration run hours on the CPU without saying so."""
    if device == "auto" and dtype != "float32" and not torch.cuda.is_available():
        return (f"{key}.dtype is {dtype}, a GPU setting, but this machine has no CUDA GPU "
                f"({key}.device: auto would fall back to the CPU). Run on a GPU, or set "
                f"{key}.device: cpu to run on the CPU in float32")
    return None
