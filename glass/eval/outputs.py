"""What the evaluation stages write for DVC and for people: metrics JSON without NaN,
best-overlap curves as CSV plots, the conventions in force as one flat table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from glass.io import atomic_open


def finite_or_none(value: Any) -> Any:
    """NaN / infinity (undefined metrics, e.g. FG-ARI without foreground under the NaN
    convention) become null: JSON has no such numbers and ``dvc metrics`` cannot read them."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_curve(path: Path, curve: list[dict[str, float]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["threshold", "objects_found"])
        writer.writeheader()
        writer.writerows(curve)


def flatten_conventions(recorded: dict[str, Any]) -> dict[str, Any]:
    flat = dict(recorded["discovery"])
    for name, values in recorded["datasets"].items():
        for key, value in values.items():
            flat[f"{name}.{key}"] = value
    return flat
