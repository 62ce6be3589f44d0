"""PASCAL VOC 2012 segmentation val as instance ground truth.

Files (the official VOCtrainval_11-May-2012 layout, under ``VOCdevkit/VOC2012``):

- ``ImageSets/Segmentation/val.txt``: the 1,449 val ids (the paper's VOC evaluation set);
- ``JPEGImages/<id>.jpg``;
- ``SegmentationObject/<id>.png``: palette PNG whose indices are instance ids (0 background,
  1..n objects, 255 boundary / void);
- ``SegmentationClass/<id>.png``: palette PNG of VOC class indices (0 background, 1..20 in
  ``glass.data.classes.VOC_CLASSES`` order, 255 boundary / void).

An instance's class is the majority VOC class of its pixels in SegmentationClass (void pixels
do not vote; ties go to the smaller class index), named by its COCO name like everything in
the project (``VOC_TO_COCO``). ``voc_boundary``: ``"ignore"`` (default, ocl: the 255 pixels leave
the metrics) or ``"background"`` (they count as background); docs/paper-facts.md "Evaluation".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.classes import VOC_CLASSES, VOC_TO_COCO
from glass.data.images import decode_image
from glass.data.voc import VOC_DOWNLOAD_HINT, read_id_list
from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS
from glass.eval.datasets.sample import (
    EvalDataset, EvalSample, Preprocess, UnreadableSample, check_option, finish_sample, require,
)

VOC_VOID = 255
VOC_BOUNDARY_MODES = ("ignore", "background")
DEFAULT_VOC_BOUNDARY = "ignore"
VOC_EVAL_HINT = (VOC_DOWNLOAD_HINT.split(" The trainaug")[0] + " The evaluation reads "
                 "ImageSets/Segmentation/val.txt, JPEGImages/, SegmentationObject/ and "
                 "SegmentationClass/ (data.voc.eval_list names the id list).")


def read_index_png(path: Path, what: str, image_id: str,
                   max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """The palette indices of a VOC label PNG as (H, W) uint8; UnreadableSample when missing or
    corrupt.

    An RGB rendering of the same PNG (e.g. re-saved by an image editor) has lost the indices;
    it is refused rather than misread.
    """
    image, _ = decode_image(path, max_pixels=max_pixels,
                            pixel_limit_key="evaluate.max_image_pixels")
    if image.mode not in ("P", "L"):
        raise UnreadableSample(image_id, f"{path}: {what} must be a palette (P) or greyscale (L) "
                                         f"PNG holding label indices, got mode {image.mode}; "
                                         "re-extract it from the VOC tar")
    return np.asarray(image, dtype=np.uint8).copy()


def majority_class(class_pixels: np.ndarray) -> int | None:
    """Most frequent object class index (1..20) among ``class_pixels``; background and void do
    not vote; ties go to the smaller index; None when nothing votes."""
    labels = class_pixels[(class_pixels != VOC_VOID) & (class_pixels != 0)]
    if labels.size == 0:
        return None
    return int(np.argmax(np.bincount(labels)))   # argmax: the smallest index among ties


class VocInstances(EvalDataset):
    """VOC 2012 instance ground truth for the ids in ``image_list`` (sorted)."""

    name = "voc"

    def __init__(self, root: str | os.PathLike, *,
                 image_list: str = "ImageSets/Segmentation/val.txt",
                 voc_boundary: str = DEFAULT_VOC_BOUNDARY, limit: int | None = None,
                 preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(limit=limit, preprocess=preprocess, max_image_pixels=max_image_pixels)
        self.voc_boundary = check_option("voc_boundary", voc_boundary, VOC_BOUNDARY_MODES)
        self.root = require(Path(root).expanduser(), "VOC 2012 root (data.voc.root)",
                            VOC_EVAL_HINT)
        self.list_path = require(self.root / image_list, "VOC image list (data.voc.eval_list)",
                                 VOC_EVAL_HINT)

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "voc_boundary": self.voc_boundary,
                "image_list": str(self.list_path)}

    def _ids(self) -> list[str]:
        return sorted(read_id_list(self.list_path))

    def _read(self, voc_id: str) -> EvalSample:
        image_path = self.root / "JPEGImages" / f"{voc_id}.jpg"
        image = self.read_rgb(image_path)
        object_path = self.root / "SegmentationObject" / f"{voc_id}.png"
        class_path = self.root / "SegmentationClass" / f"{voc_id}.png"
        objects = read_index_png(object_path, "VOC SegmentationObject mask", voc_id,
                                 self.max_image_pixels)
        class_map = read_index_png(class_path, "VOC SegmentationClass mask", voc_id,
                                   self.max_image_pixels)
        if objects.shape != image.shape[:2] or class_map.shape != image.shape[:2]:
            raise UnreadableSample(voc_id, f"image {image.shape[:2]}, {object_path.name} "
                                           f"{objects.shape} and {class_path.name} "
                                           f"{class_map.shape} differ")
        void = objects == VOC_VOID
        instances = np.where(void, 0, objects).astype(np.int32)
        classes: dict[int, str] = {}
        for instance_id in np.unique(instances):
            if instance_id == 0:
                continue
            index = majority_class(class_map[instances == instance_id])
            if index is None or index > len(VOC_CLASSES):
                raise UnreadableSample(voc_id, f"object {instance_id} of {object_path} has "
                                 f"{'no object class' if index is None else f'class {index}'} "
                                 f"in {class_path}; the masks are not VOC 2012's")
            classes[int(instance_id)] = VOC_TO_COCO[VOC_CLASSES[index - 1]]
        ignore = void if self.voc_boundary == "ignore" else np.zeros_like(void)
        return finish_sample(f"voc-{voc_id}", image, instances, ignore, classes, None,
                             {"image_id": voc_id, "file": str(image_path)})
