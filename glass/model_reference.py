"""Reading what the models stage wrote: the string to hand to ``from_pretrained``.

Kept apart from ``glass.models`` (which imports every tiny-model builder) so that a stage using one
model does not import, and depend on, the code that builds the others.
"""

from __future__ import annotations

import json
import os
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


def portable_reference(reference: str, base_dir: str | Path) -> dict[str, str]:
    """How a saved model (a trained folder's ``glass.json``) records a model it builds on: a local
    folder as a path relative to ``base_dir``, so that the outputs stay valid when the repository
    is cloned elsewhere or pulled from a DVC remote; anything else as a hub id."""
    if Path(reference).exists():
        return {"source": "local", "path": os.path.relpath(Path(reference).resolve(),
                                                           Path(base_dir).resolve())}
    return {"source": "hub", "id": reference}


def resolve_reference(entry: dict[str, str] | str, base_dir: str | Path) -> str:
    """The ``from_pretrained`` string for an entry written by ``portable_reference``."""
    if isinstance(entry, str):  # written before references became portable
        return entry
    if entry.get("source") == "local":
        return str((Path(base_dir) / entry["path"]).resolve())
    if entry.get("source") == "hub":
        return entry["id"]
    raise ValueError(f"unknown model reference {entry!r} in {base_dir}: expected source "
                     "'local' or 'hub'")
