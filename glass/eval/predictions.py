"""What the ``predict`` stage stores of the trained model's outputs, for the ``evaluate`` stage.

Per dataset, in the reader's order, for every readable image: its sample key and reader id, the
slot-index map of each mask source at the ground truth's resolution (``slot_attention``: the
last iteration's attention, upsampled bilinearly, argmax, the official GLASS evaluation;
``mlp_decoder``: the MLP decoder's alpha masks, the same way), and the slot vectors. Images that
could not be read are listed with their reasons.

Layout of the folder (``<out>/eval/predictions/``)::

    index.json                    datasets: reader kind and params, keys, ids, parts, unreadable
    <dataset>/part-000000.npz     PART_SIZE images: "<i>.slot_attention", "<i>.mlp_decoder"
                                  (uint8 maps), "<i>.slots" (float16, K x slot size)

Parts are written in a scratch folder under a fingerprint of everything that decides them, each
atomically, so an interrupted run resumes at the first missing part; the folder is published
whole at the end (``glass.io.publish_directory``).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glass.errors import InvalidInput, MissingInput
from glass.model.inference import MASK_SOURCES
from glass.io import atomic_open, write_json

PART_SIZE = 256
INDEX_FILE = "index.json"
FORMAT = 1


@dataclass
class PredictedImage:
    """One image's stored outputs."""

    key: str
    image_id: Any                         # the reader's id (int or str), to read it again
    masks: dict[str, np.ndarray]          # mask source → (H, W) slot index map
    slots: np.ndarray                     # (K, slot size) float32


@dataclass
class DatasetPredictions:
    """One dataset's entry in the index."""

    name: str
    kind: str
    reader: dict[str, Any]                # load_eval_dataset params (preprocess as a dict)
    keys: list[str] = field(default_factory=list)
    image_ids: list[Any] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    num_slots: int = 0
    mask_sources: list[str] = field(default_factory=lambda: list(MASK_SOURCES))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "reader": self.reader, "keys": self.keys,
                "image_ids": self.image_ids, "parts": self.parts,
                "unreadable": self.unreadable, "num_slots": self.num_slots,
                "mask_sources": self.mask_sources}


def open_reader(settings: dict[str, Any], ground_truth: dict[str, Any] | None = None):
    """The evaluation reader a dataset's recorded ``reader`` settings describe (kind, params,
    preprocessing, pixel limit), with ``ground_truth`` conventions (crowd, overlap, ...)."""
    from glass.eval.datasets import Preprocess, load_eval_dataset

    return load_eval_dataset(settings["kind"], preprocess=Preprocess(**settings["preprocess"]),
                             max_image_pixels=settings["max_image_pixels"],
                             **settings["params"], **(ground_truth or {}))


def part_name(index: int) -> str:
    return f"part-{index:06d}.npz"


def write_part(path: Path, images: list[PredictedImage]) -> None:
    """An ``.npz`` (readable by ``np.load``) whose bytes depend only on the arrays: numpy's own
    ``savez`` stamps every member with the current time, which would change DVC's hash of the
    predictions on every run."""
    arrays: dict[str, np.ndarray] = {}
    for i, image in enumerate(images):
        for source, mask in image.masks.items():
            if mask.max(initial=0) > 255:
                raise InvalidInput(f"{image.key}: more than 255 slots do not fit a uint8 map")
            arrays[f"{i}.{source}"] = mask.astype(np.uint8)
        arrays[f"{i}.slots"] = image.slots.astype(np.float16)
        arrays[f"{i}.key"] = np.array(image.key)
    with atomic_open(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array,
                                          allow_pickle=False)
                archive.writestr(member, buffer.getvalue())


def read_part(path: Path) -> list[tuple[str, dict[str, np.ndarray], np.ndarray]]:
    """(key, {source: map}, slots) of every image of a part, in order."""
    with np.load(path) as stored:
        count = len({name.split(".", 1)[0] for name in stored.files})
        # a model without an MLP decoder (the official release) stores slot attention only
        sources = [source for source in MASK_SOURCES if f"0.{source}" in stored.files]
        out = []
        for i in range(count):
            masks = {source: stored[f"{i}.{source}"].astype(np.int64) for source in sources}
            out.append((str(stored[f"{i}.key"]), masks, stored[f"{i}.slots"].astype(np.float32)))
    return out


def write_index(folder: Path, datasets: dict[str, DatasetPredictions],
                settings: dict[str, Any]) -> None:
    write_json(folder / INDEX_FILE, {"format": FORMAT, "settings": settings,
                                     "datasets": {name: entry.as_dict()
                                                  for name, entry in sorted(datasets.items())}})


class Predictions:
    """A published predictions folder, read by the ``evaluate`` stage."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / INDEX_FILE
        if not path.is_file():
            raise MissingInput(f"{path} not found: run the predict stage first (dvc repro)")
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != FORMAT:
            raise InvalidInput(f"{path}: predictions format {index.get('format')!r}, this code "
                               f"reads {FORMAT}; rerun the predict stage")
        self.settings = index["settings"]
        self.datasets = {name: DatasetPredictions(name=name, **entry)
                         for name, entry in index["datasets"].items()}

    def dataset(self, name: str) -> DatasetPredictions:
        if name not in self.datasets:
            raise InvalidInput(f"{self.folder} holds no predictions for dataset {name!r} (it "
                               f"has {sorted(self.datasets)}): rerun the predict stage with it "
                               "listed under evaluate.object_discovery or property_prediction")
        return self.datasets[name]

    def images(self, name: str, limit: int | None = None) -> Iterator[PredictedImage]:
        """The stored images of ``name`` in order, at most ``limit``."""
        entry = self.dataset(name)
        count = 0
        positions = iter(zip(entry.keys, entry.image_ids))
        for part in entry.parts:
            for stored_key, masks, slots in read_part(self.folder / name / part):
                key, image_id = next(positions)
                if stored_key != key:
                    raise InvalidInput(f"{self.folder / name / part}: holds {stored_key!r} where "
                                       f"{INDEX_FILE} says {key!r}; rerun the predict stage")
                if limit is not None and count >= limit:
                    return
                count += 1
                yield PredictedImage(key=key, image_id=image_id, masks=masks, slots=slots)
