"""The ``models`` stage: each model role (blip2, stable_diffusion, sam2, …) resolved to what
``from_pretrained`` loads.

A role's params entry is either a hub model (paper configuration)::

    stable_diffusion: {id: stabilityai/stable-diffusion-2-1-base}

or a tiny random-weight model that the project builds from configs (CPU configuration, tests)::

    stable_diffusion: {tiny: true, seed: 0}

The stage writes one folder per role, ``<out>/models/<role>/``, holding ``glass-model.json`` and,
for tiny models, the saved model itself. Stages that use a model depend on its folder only and
read the reference with ``glass.model_reference.model_reference`` — so the same stage code loads a hub id on a GPU
machine and a local tiny model here, through the same ``from_pretrained`` call. Hub weights are not
downloaded or copied by this stage (they stay in the Hugging Face cache); the consuming stage fails
with a message naming the id and how to get it when it is not available offline.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glass.io import write_json
from glass.model_reference import REFERENCE_FILE
from glass.tiny.blip2 import build_tiny_blip2
from glass.tiny.dinov2 import build_tiny_dinov2
from glass.tiny.sam2 import build_tiny_sam2
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion

TINY_BUILDERS: dict[str, Callable[..., Path]] = {
    "blip2": build_tiny_blip2,
    "stable_diffusion": build_tiny_stable_diffusion,   # the generator (synthesize)
    "sam2": build_tiny_sam2,
    "dinov2": build_tiny_dinov2,                       # GLASS's frozen encoder
    "decoder": build_tiny_stable_diffusion,            # GLASS's image decoder (its UNet)
}


def materialize_model(role: str, spec: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir`` (replacing it) for one role; returns the reference written."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if spec.get("tiny"):
        if role not in TINY_BUILDERS:
            raise ValueError(f"models.{role}: no tiny builder for this role "
                             f"(known: {sorted(TINY_BUILDERS)})")
        TINY_BUILDERS[role](out_dir / "model", seed=int(spec.get("seed", 0)))
        reference = {"role": role, "source": "tiny", "path": "model", "seed": int(spec.get("seed", 0))}
    elif spec.get("id"):
        reference = {"role": role, "source": "hub", "id": str(spec["id"])}
    else:
        raise ValueError(f"models.{role} needs either `id: <hub id>` or `tiny: true`, got {spec}")
    write_json(out_dir / REFERENCE_FILE, reference)
    return reference
