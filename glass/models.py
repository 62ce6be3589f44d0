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

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glass.io import folder_digest, publish_directory, staging_directory, write_json
from glass.errors import MissingInput
from glass.model_reference import REFERENCE_FILE, is_local_folder, portable_path
from glass.params import Params, ParamsError, describe_value, param
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


MODEL_SPEC_FORMS = ("{id: <hub id or local folder>}", "{tiny: true, seed: <int>}")


@dataclasses.dataclass(frozen=True)
class ModelSpec(Params):
    """One model role: a hub model (``id``) or a tiny model built from configs (``tiny``)."""

    id: str | None = param(None, optional=True)
    tiny: bool = param(False, optional=True)
    seed: int = param(0, min=0, optional=True)   # the tiny model's weight seed

    @classmethod
    def from_params(cls, value: Any, key: str) -> "ModelSpec":
        if isinstance(value, str):
            raise ParamsError(key, f"must be a mapping, {' or '.join(MODEL_SPEC_FORMS)}; got "
                                   f"{describe_value(value)} (write `{{id: {value}}}`)")
        return cls.parse(value, key)

    def validate(self) -> None:
        if self.tiny and self.id is not None:
            raise self.invalid("id", "give either id or tiny: true, not both")
        if not self.tiny and not self.id:
            raise self.invalid("id", f"is missing: give {' or '.join(MODEL_SPEC_FORMS)}")


@dataclasses.dataclass(frozen=True)
class ModelsParams(Params):
    """``models``: every model role the graph uses (paper configuration by default)."""

    blip2: ModelSpec = param(ModelSpec(id="Salesforce/blip2-opt-2.7b"))
    stable_diffusion: ModelSpec = param(ModelSpec(id="stabilityai/stable-diffusion-2-1-base"))
    sam2: ModelSpec = param(ModelSpec(id="facebook/sam2.1-hiera-large"))
    dinov2: ModelSpec = param(ModelSpec(id="facebook/dinov2-base"))
    decoder: ModelSpec = param(ModelSpec(id="stabilityai/stable-diffusion-2-1"))

    def roles(self) -> dict[str, ModelSpec]:
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}


def materialize_model(role: str, spec: ModelSpec, out_dir: str | Path) -> dict[str, Any]:
    """Write ``out_dir`` for one role; returns the reference written. The folder is built beside
    its destination and replaces it only when complete, so an interrupted build never leaves a
    half-written model where a finished one was."""
    out_dir = Path(out_dir)
    if spec.tiny and role not in TINY_BUILDERS:
        raise ParamsError(f"models.{role}", f"no tiny builder for this role (known: "
                                            f"{sorted(TINY_BUILDERS)})")
    with staging_directory(out_dir) as staged:
        if spec.tiny:
            TINY_BUILDERS[role](staged / "model", seed=spec.seed)
            reference = {"role": role, "source": "tiny", "path": "model", "seed": spec.seed}
        elif is_local_folder(str(spec.id)):
            # a folder, not a hub id: recorded as local (relative inside the repository), and
            # checked now; DVC tracks it only if it is a dependency (README "Local models")
            folder = Path(str(spec.id)).expanduser()
            if not folder.is_dir():
                raise MissingInput(f"models.{role}.id: the folder {spec.id} does not exist; give "
                                   "an existing model folder or a hub id")
            # the folder's content hash: a retrained model changes this reference, so every
            # stage that depends on the role's folder reruns (the path alone would not change)
            reference = {"role": role, "source": "local", "path": portable_path(folder, out_dir),
                         "content_sha256": folder_digest(folder)}
        else:
            reference = {"role": role, "source": "hub", "id": str(spec.id)}
        write_json(staged / REFERENCE_FILE, reference)
        publish_directory(staged, out_dir)
    return reference
