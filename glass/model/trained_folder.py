"""The trained GLASS folder: its index file and the models it builds on.

A folder follows diffusers' pipeline-folder idiom: an index JSON (``glass.json``) names each
component's subfolder and class, and every component is a ``from_pretrained``-loadable
``ModelMixin``/``ConfigMixin`` folder::

    glass.json          {"_class_name": "GlassModel", "format": 1, "phase": 2,
                         "components": {"slot_attention": "SlotAttention",
                                        "mlp_decoder": "MLPDecoder",
                                        "unet": "UNet2DConditionModel"},
                         "encoder": {...}, "stable_diffusion": {...},
                         "encoder_image_size": 448, "decoder_image_size": 256, ...}
    slot_attention/     glass.model.slot_attention.SlotAttention
    mlp_decoder/        glass.model.mlp_decoder.MLPDecoder (absent in the official release)
    unet/               diffusers UNet2DConditionModel, after phase 2 (else the SD reference's)

The frozen encoder and the Stable Diffusion parts are not copied: the index references them
(``ModelReference``). Only ``GlassModel.save_pretrained`` / ``GlassModel.from_pretrained``
(``glass.model.glass``) call this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glass.errors import InvalidInput, MissingInput
from glass.model_reference import is_local_folder, portable_path

INDEX_NAME = "glass.json"
FOLDER_FORMAT = 1
CLASS_NAME = "GlassModel"
# role → (subfolder, class); the only classes a trained folder may name
COMPONENT_CLASSES = {"slot_attention": "SlotAttention", "mlp_decoder": "MLPDecoder",
                     "unet": "UNet2DConditionModel"}
@dataclass(frozen=True)
class ModelReference:
    """A model a trained folder builds on: a hub id, or a local folder (``path``: relative to
    the trained folder when inside the same repository, else absolute)."""

    source: str                 # "hub" | "local"
    value: str                  # the hub id, or the stored path

    @classmethod
    def of(cls, reference: str | Path, base_dir: str | Path) -> "ModelReference":
        """The reference a ``from_pretrained`` string becomes when saved in ``base_dir``."""
        text = str(reference)
        if is_local_folder(text):
            return cls("local", portable_path(Path(text).expanduser(), base_dir))
        return cls("hub", text)

    @classmethod
    def parse(cls, entry: Any, where: str) -> "ModelReference":
        if isinstance(entry, dict) and entry.get("source") == "hub" and entry.get("id"):
            return cls("hub", str(entry["id"]))
        if isinstance(entry, dict) and entry.get("source") == "local" and entry.get("path"):
            return cls("local", str(entry["path"]))
        raise InvalidInput(f"{where}: model reference {entry!r} is not {{source: hub, id: ...}} "
                           "or {source: local, path: ...}")

    def as_dict(self) -> dict[str, str]:
        return {"source": "hub", "id": self.value} if self.source == "hub" else \
            {"source": "local", "path": self.value}

    def resolve(self, base_dir: str | Path) -> str:
        """The ``from_pretrained`` string: the hub id, or the local folder's absolute path."""
        if self.source == "hub":
            return self.value
        path = Path(self.value)
        return str(path if path.is_absolute() else (Path(base_dir) / path).resolve())


@dataclass(frozen=True)
class TrainedFolderIndex:
    """``glass.json``: which components the folder holds and what it builds on."""

    phase: int
    components: dict[str, str]              # role → class name, for the subfolders present
    encoder: ModelReference                 # the frozen DINOv2
    stable_diffusion: ModelReference        # VAE, scheduler (and the UNet before phase 2)
    encoder_image_size: int
    decoder_image_size: int
    origin: str = "glass"                   # "glass" (trained here) | "official" (converted)
    data_skipped: dict | None = None        # corrupt shards/samples training left out
    extra: dict[str, Any] = field(default_factory=dict)   # e.g. the converted checkpoint's source

    def as_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "_class_name": CLASS_NAME, "format": FOLDER_FORMAT, "origin": self.origin,
            "phase": self.phase, "components": dict(sorted(self.components.items())),
            "encoder": self.encoder.as_dict(), "stable_diffusion": self.stable_diffusion.as_dict(),
            "encoder_image_size": self.encoder_image_size,
            "decoder_image_size": self.decoder_image_size}
        if self.data_skipped:
            info["data_skipped"] = self.data_skipped
        info.update(self.extra)
        return info

    @classmethod
    def from_dict(cls, info: dict[str, Any], where: str) -> "TrainedFolderIndex":
        if info.get("_class_name") != CLASS_NAME or info.get("format") != FOLDER_FORMAT:
            raise InvalidInput(
                f"{where} is not a GLASS model index of format {FOLDER_FORMAT} (it was written by "
                "an older version of this project, or by something else): retrain it (`dvc "
                "repro -f -s train_phase1`), or convert an official checkpoint with "
                "`python -m glass.convert official`")
        components = dict(info.get("components") or {})
        unknown = {role: name for role, name in components.items()
                   if COMPONENT_CLASSES.get(role) != name}
        if unknown or "slot_attention" not in components:
            raise InvalidInput(f"{where}: components {components} must include slot_attention and "
                               f"may only be {COMPONENT_CLASSES}")
        known = {"_class_name", "format", "origin", "phase", "components", "encoder",
                 "stable_diffusion", "encoder_image_size", "decoder_image_size", "data_skipped"}
        return cls(phase=int(info["phase"]), components=components,
                   encoder=ModelReference.parse(info.get("encoder"), f"{where} encoder"),
                   stable_diffusion=ModelReference.parse(info.get("stable_diffusion"),
                                                         f"{where} stable_diffusion"),
                   encoder_image_size=int(info["encoder_image_size"]),
                   decoder_image_size=int(info["decoder_image_size"]),
                   origin=str(info.get("origin", "glass")), data_skipped=info.get("data_skipped"),
                   extra={key: value for key, value in info.items() if key not in known})


def read_index(folder: str | Path) -> TrainedFolderIndex:
    """The index of the trained folder ``folder``, or a MissingInput naming what to run."""
    path = Path(folder) / INDEX_NAME
    if not path.is_file():
        raise MissingInput(
            f"{path} not found: {folder} is not a trained GLASS folder (run the train_phase1 / "
            "train_phase2 stages first, `dvc repro`, or convert an official checkpoint with "
            "`python -m glass.convert official <checkpoint> <folder>`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"{path} is not valid JSON ({error}): the folder is damaged; rewrite "
                           "it (rerun the train stage or the conversion)") from error
    return TrainedFolderIndex.from_dict(info, str(path))


def folder_problems(folder: str | Path) -> list[str]:
    """What is missing to load the trained folder: its index, its component subfolders and the
    models it references (a local folder must exist; a hub id must be in the cache when the hub
    is offline). Empty when it can be loaded; nothing is loaded to find out."""
    from glass.model_reference import model_problem

    folder = Path(folder)
    try:
        index = read_index(folder)
    except (MissingInput, InvalidInput) as error:
        return [str(error)]
    problems = [f"{folder / role} is missing or incomplete (rerun the stage that wrote it)"
                for role in index.components if not (folder / role / "config.json").is_file()]
    for role in ("encoder", "stable_diffusion"):
        reference: ModelReference = getattr(index, role)
        resolved = reference.resolve(folder)
        if reference.source == "local" and not Path(resolved).is_dir():
            problems.append(f"{role} folder {resolved} (recorded in {folder / INDEX_NAME} as "
                            f"{reference.value!r}) is missing: rerun the models stage (dvc "
                            "repro), or restore the folder")
        elif reference.source == "hub":
            problem = model_problem(resolved, role)
            if problem:
                problems.append(problem)
    return problems
