"""Objects365 (Shao et al., ICCV 2019) zero-shot ground truth: boxes turned into masks by SAM 2.

The paper (Sec. 5.1, Table 4): "We obtained the masks for the Obj365 dataset by prompting SAMv2
with ground-truth bounding boxes" (docs/paper-facts.md "Evaluation"). Objects365 has boxes only; here
each box of an image is a box prompt to ``SAM2ImagePredictor`` with ``multimask_output=False``
(one mask per box), on the full-resolution image, and the masks are then composed like COCO
annotations (same ``crowd`` / ``overlap`` options and defaults).

Data: Objects365 v2 val is distributed as a COCO-format file, ``zhiyuan_objv2_val.json``
(boxes, 365 categories, ``iscrowd``), and image patches whose ``file_name`` in that file reads
``images/v1/patch0/objects365_v1_00000001.jpg``. Images are looked up as ``images_dir/file_name``,
then ``images_dir/patchN/<name>`` and ``images_dir/<name>`` (layouts that flatten the
``images/v1|v2`` levels). A few images listed in the v2 val file are missing from the download;
``on_missing_image="skip"`` leaves such images out (listed in ``missing_images``), the default raises.

The SAM 2 model is given like everywhere in the project (``glass.sam2_model.load_sam2``): a hub
id (``facebook/sam2.1-hiera-large``, the project's paper setting), a local folder with one config
and one checkpoint (the tiny test model), or the models stage's folder for the ``sam2`` role
(``<out>/models/sam2``, resolved with ``glass.model_reference.model_reference``).

Masks are cached per image, ``<cache_dir>/<fingerprint>/<image id>.npz``, written atomically.
The fingerprint hashes the model files (config and checkpoint bytes), the sam2 version and the
prompting settings, so another model or setting never reads stale masks; the file also records
the annotation ids and boxes it was computed from and is recomputed when they differ. The model
is loaded only when some image is not cached.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from glass.devices import resolve_device
from glass.eval.datasets.coco import CocoFormatInstances, xywh_to_xyxy
from glass.errors import InvalidInput, MissingInput
from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImage
from glass.eval.datasets.sample import (DEFAULT_CROWD, DEFAULT_OVERLAP, Preprocess,
                                        UnreadableSample, require)
from glass.io import atomic_open, file_sha256, fingerprint, write_json
from glass.model_reference import REFERENCE_FILE, model_reference
# glass.sam2_model imports only torch at the top (sam2 itself lazily): cheap to import
# here, and a stage's dependency list (tools/sync_stage_deps.py) then sees it
from glass.sam2_model import load_sam2, model_files, unavailable_model_message

log = logging.getLogger(__name__)

OBJECTS365_HINT = (
    "Objects365 v2 is at https://www.objects365.org/ (val: zhiyuan_objv2_val.json and the image "
    "patches val/images/v1/patch0..15, val/images/v2/patch16..43). Set the Objects365 root "
    "param (root=) to the folder holding zhiyuan_objv2_val.json and images/, or pass "
    "annotation_file= and images_dir=.")
MISSING_IMAGE_MODES = ("raise", "skip")
CACHE_FORMAT = 1          # bump when the cached file's content changes meaning
DEFAULT_BOX_BATCH_SIZE = 64


def resolve_sam2_model(model: str | os.PathLike) -> str:
    """A hub id or model folder; a models-stage folder (with glass-model.json) is resolved."""
    path = Path(model)
    if path.is_dir() and (path / REFERENCE_FILE).is_file():
        return model_reference(path)
    return str(model)


def sam2_model_fingerprint(model: str) -> dict[str, str]:
    """What identifies the model's weights: sha256 of its config and checkpoint files."""
    folder = Path(model)
    if folder.is_dir():
        config, checkpoint = model_files(folder)
        return {"config_sha256": file_sha256(config), "checkpoint_sha256": file_sha256(checkpoint)}
    from huggingface_hub import try_to_load_from_cache
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    if model not in HF_MODEL_ID_TO_FILENAMES:
        raise MissingInput(f"SAM 2 model {model!r} is neither a local folder nor a hub id sam2 "
                           f"knows (known: {', '.join(sorted(HF_MODEL_ID_TO_FILENAMES))})")
    config_name, checkpoint_name = HF_MODEL_ID_TO_FILENAMES[model]
    cached = try_to_load_from_cache(model, checkpoint_name)
    if not isinstance(cached, str):
        raise MissingInput(unavailable_model_message(
            model, FileNotFoundError(f"{checkpoint_name} not in the Hugging Face cache")))
    return {"hub_id": model, "config": config_name, "checkpoint_sha256": file_sha256(cached)}


class Sam2BoxMasks:
    """One SAM 2 mask per box prompt (``multimask_output=False``), cached on disk per image."""

    def __init__(self, model: str | os.PathLike, *, cache_dir: str | os.PathLike | None,
                 device: str = "auto", box_batch_size: int = DEFAULT_BOX_BATCH_SIZE) -> None:
        if box_batch_size < 1:
            raise InvalidInput(f"box_batch_size must be >= 1, got {box_batch_size}")
        self.model_id = resolve_sam2_model(model)
        self.device = device
        self.box_batch_size = int(box_batch_size)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._fingerprint: str | None = None
        self._predictor = None
        self.computed = 0        # images whose masks were computed (not read from the cache)

    def settings(self) -> dict[str, Any]:
        """Everything that decides the masks (the cache key's content)."""
        from importlib.metadata import version

        return {"format": CACHE_FORMAT, "model": sam2_model_fingerprint(self.model_id),
                "sam2_version": version("sam2"), "multimask_output": False,
                "mask_threshold": 0.0, "box_batch_size": self.box_batch_size,
                "dtype": "float32"}

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            settings = self.settings()
            self._fingerprint = fingerprint(settings)
            if self.cache_dir is not None:
                record = self.cache_dir / self._fingerprint[:16] / "settings.json"
                if not record.exists():
                    write_json(record, {"model_id": self.model_id, **settings})
        return self._fingerprint

    def cache_path(self, image_id: int) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self.fingerprint[:16] / f"{int(image_id):012d}.npz"

    def masks(self, image_id: int, image: np.ndarray, annotation_ids: list[int],
              boxes: np.ndarray) -> np.ndarray:
        """(N, H, W) bool, one mask per box (x0, y0, x1, y1 in pixels of ``image``)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        ids = np.asarray(annotation_ids, dtype=np.int64)
        path = self.cache_path(image_id)
        if path is not None and path.exists():
            cached = self._read_cache(path, ids, boxes, image.shape[:2])
            if cached is not None:
                return cached
        masks = self._predict(image, boxes)
        self.computed += 1
        if path is not None:
            with atomic_open(path, "wb") as handle:
                np.savez_compressed(handle, annotation_ids=ids, boxes=boxes,
                                    shape=np.array(masks.shape, dtype=np.int64),
                                    packed=np.packbits(masks.reshape(len(masks), -1), axis=1))
        return masks

    @staticmethod
    def _read_cache(path: Path, ids: np.ndarray, boxes: np.ndarray,
                    size: tuple[int, int]) -> np.ndarray | None:
        try:
            with np.load(path) as stored:
                same = (np.array_equal(stored["annotation_ids"], ids)
                        and np.array_equal(stored["boxes"], boxes)
                        and tuple(stored["shape"][1:]) == tuple(size))
                if not same:
                    log.info("%s: computed for other boxes; recomputing", path)
                    return None
                count, height, width = (int(v) for v in stored["shape"])
                flat = np.unpackbits(stored["packed"], axis=1, count=height * width)
                return flat.reshape(count, height, width).astype(bool)
        except (OSError, ValueError, KeyError) as error:   # torn or foreign file: recompute
            log.warning("%s: unreadable mask cache (%s); recomputing", path, error)
            return None

    def _load_predictor(self):
        if self._predictor is None:
            from sam2.sam2_image_predictor import SAM2ImagePredictor


            model = load_sam2(self.model_id, resolve_device(self.device))
            self._predictor = SAM2ImagePredictor(model)
        return self._predictor

    def _predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        import torch

        height, width = image.shape[:2]
        masks = np.zeros((len(boxes), height, width), dtype=bool)
        # a box without area cannot prompt anything: its mask stays empty
        valid = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        if len(valid) == 0:
            return masks
        predictor = self._load_predictor()
        with torch.inference_mode():   # float32, no autocast: masks independent of GPU kernels
            predictor.set_image(np.array(image, dtype=np.uint8, copy=True))   # writable for torch
            for start in range(0, len(valid), self.box_batch_size):
                chosen = valid[start:start + self.box_batch_size]
                predicted, _, _ = predictor.predict(box=boxes[chosen], multimask_output=False)
                # (1, H, W) for one box, (B, 1, H, W) for several
                masks[chosen] = np.asarray(predicted).reshape(len(chosen), -1, height, width)[:, 0] > 0
        return masks


class Objects365Instances(CocoFormatInstances):
    """Objects365 (v2 val by default) with SAM 2 masks from the ground-truth boxes.

    ``clip_masks_to_boxes`` (default False: the paper prompts SAM 2 and uses its masks as they
    are) removes mask pixels outside each mask's own box.
    """

    name = "objects365"

    def __init__(self, root: str | os.PathLike | None = None, *,
                 sam2_model: str | os.PathLike, cache_dir: str | os.PathLike | None,
                 annotation_file: str | os.PathLike | None = None,
                 images_dir: str | os.PathLike | None = None,
                 crowd: str = DEFAULT_CROWD, overlap: str = DEFAULT_OVERLAP,
                 clip_masks_to_boxes: bool = False, on_missing_image: str = "raise",
                 device: str = "auto", box_batch_size: int = DEFAULT_BOX_BATCH_SIZE,
                 limit: int | None = None, preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if root is None and (annotation_file is None or images_dir is None):
            raise InvalidInput("objects365: give root= or both annotation_file= and images_dir=")
        if on_missing_image not in MISSING_IMAGE_MODES:
            raise InvalidInput(f"on_missing_image must be one of {list(MISSING_IMAGE_MODES)}, got "
                             f"{on_missing_image!r}")
        if root is not None:
            root = require(Path(root).expanduser(), "Objects365 root", OBJECTS365_HINT)
        annotation_file = (annotation_file if annotation_file is not None
                           else root / "zhiyuan_objv2_val.json")
        images_dir = images_dir if images_dir is not None else root
        self.on_missing_image = on_missing_image
        self.clip_masks_to_boxes = bool(clip_masks_to_boxes)
        self.missing_images: list[int] = []
        super().__init__(images_dir, annotation_file, key_prefix="objects365",
                         hint=OBJECTS365_HINT, crowd=crowd, overlap=overlap, limit=limit,
                         preprocess=preprocess, max_image_pixels=max_image_pixels)
        self.sam = Sam2BoxMasks(sam2_model, cache_dir=cache_dir, device=device,
                                box_batch_size=box_batch_size)

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "masks": "sam2 box prompts",
                "sam2_model": self.sam.model_id, "clip_masks_to_boxes": self.clip_masks_to_boxes,
                "on_missing_image": self.on_missing_image}

    def probe(self, image_id) -> None:
        """The image alone: its masks would need SAM 2, which is not loaded before the check."""
        try:
            self._read_image(image_id)
        except UnreadableImage as error:
            raise UnreadableSample(image_id, f"{error.path}: {error.reason}") from None

    def image_path(self, info: dict) -> Path:
        relative = Path(info["file_name"])
        candidates = [self.images_dir / relative,
                      self.images_dir / relative.parent.name / relative.name,
                      self.images_dir / relative.name]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return candidates[0]   # missing: the error names the documented location

    def _ids(self) -> list[int]:
        ids = super()._ids()
        if self.on_missing_image == "raise":
            return ids
        kept = []
        for image_id in ids:
            if self.image_path(self.coco.imgs[image_id]).exists():
                kept.append(image_id)
            else:
                self.missing_images.append(image_id)
        if self.missing_images:
            log.warning("objects365: %d images listed in %s are missing and skipped",
                        len(self.missing_images), self.annotation_file)
        return kept

    def _annotation_masks(self, image_id: int, image: np.ndarray,
                          annotations: list[dict]) -> list[np.ndarray]:
        boxes = np.array([xywh_to_xyxy(a["bbox"]) for a in annotations],
                         dtype=np.float64).reshape(-1, 4)
        masks = self.sam.masks(image_id, image, [int(a["id"]) for a in annotations], boxes)
        if self.clip_masks_to_boxes:
            height, width = image.shape[:2]
            for mask, (x0, y0, x1, y1) in zip(masks, boxes):
                inside = np.zeros((height, width), dtype=bool)
                inside[max(0, int(np.floor(y0))):max(0, int(np.ceil(y1))),
                       max(0, int(np.floor(x0))):max(0, int(np.ceil(x1)))] = True
                mask &= inside
        return list(masks)
