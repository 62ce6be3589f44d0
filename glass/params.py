"""Reading a configuration's params file (``params.yaml`` or ``configs/cpu/params.yaml``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def load_params(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file {path} not found (run from the repository root)")
    with open(path, encoding="utf-8") as handle:
        params = yaml.safe_load(handle)
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    return params


def section(params: dict[str, Any], dotted_key: str) -> Any:
    """``section(params, "caption.blip2")`` with an error naming the missing key."""
    node: Any = params
    walked = []
    for part in dotted_key.split("."):
        walked.append(part)
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"params key {'.'.join(walked)!r} is missing")
        node = node[part]
    return node
