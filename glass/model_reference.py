"""Reading what the models stage wrote: the string to hand to ``from_pretrained``.

Kept apart from ``glass.models`` (which imports every tiny-model builder) so that a stage using one
model does not import, and depend on, the code that builds the others.
"""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE_FILE = "glass-model.json"


def model_reference(model_dir: str | Path) -> str:
    """Hub id, or the absolute path of a tiny model, for the model folder ``model_dir``."""
    model_dir = Path(model_dir)
    path = model_dir / REFERENCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the models stage first (dvc repro)")
    reference = json.loads(path.read_text())
    if reference["source"] == "tiny":
        # absolute, so that Ray workers with another working directory find it too
        return str((model_dir / reference["path"]).resolve())
    return reference["id"]
