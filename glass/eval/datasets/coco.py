"""COCO-format instance ground truth: COCO val2017 and the toy world's val split.

Read with pycocotools (``annToMask``), as the official GLASS evaluation does. Conventions
(docs/paper-facts.md "Evaluation"; defaults = official GLASS):

- ``crowd``: ``"skip"`` (official: crowd annotations are not used; their pixels stay whatever
  the other annotations make them), ``"ignore"``, ``"background"`` or ``"instance"``
  (see ``glass.eval.datasets.sample.CROWD_MODES``).
- ``overlap``: ``"later_wins"`` (official: the later annotation overwrites) or ``"ignore"``
  (ocl: pixels of several instances leave the metrics), or ``"smaller_wins"``.

Instance ids are 1..n in the annotation file's order (the order ``getAnnIds`` returns), images in
increasing image id. ``boxes`` are the annotation boxes (COCO ``[x, y, w, h]`` as x0, y0, x1, y1).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.coco import COCO_DOWNLOAD_HINT
from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS
from glass.errors import InvalidInput
from glass.eval.datasets.sample import (
    DEFAULT_CROWD, DEFAULT_OVERLAP, CROWD_MODES, OVERLAP_MODES, EvalDataset, EvalSample,
    Preprocess, UnreadableSample, check_option, compose_instances, finish_sample, require,
)

COCO_EVAL_HINT = (COCO_DOWNLOAD_HINT + " Set data.coco.root to that folder (the evaluation "
                  "reads <root>/val2017/ and <root>/annotations/instances_val2017.json), or "
                  "pass images_dir= and annotation_file= explicitly.")
TOY_EVAL_HINT = ("The toy world's val split is written by the prepare stage into "
                 "<config out>/prepared/toy (images/val/, annotations/instances_val.json): run "
                 "`dvc repro` for that configuration first, or point root at a folder written "
                 "by glass.data.toy_world.write_coco_dataset.")


def load_coco_api(annotation_file: Path):
    """A pycocotools ``COCO`` object (its progress prints swallowed); a corrupt file names itself."""
    from pycocotools.coco import COCO   # slow to import; only evaluation needs it

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(annotation_file))
    except (ValueError, KeyError, TypeError) as error:   # JSONDecodeError is a ValueError
        raise InvalidInput(f"{annotation_file}: not a readable COCO annotation file ({error}); "
                         "re-download it") from None


def xywh_to_xyxy(bbox) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


class CocoFormatInstances(EvalDataset):
    """Any COCO-format instances file plus its image folder (the common part of COCO, the toy
    world and Objects365). ``_annotation_masks`` gives one binary mask per annotation."""

    name = "coco-format"

    def __init__(self, images_dir: str | os.PathLike, annotation_file: str | os.PathLike, *,
                 key_prefix: str, hint: str, crowd: str = DEFAULT_CROWD,
                 overlap: str = DEFAULT_OVERLAP, limit: int | None = None,
                 preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(limit=limit, preprocess=preprocess, max_image_pixels=max_image_pixels)
        self.crowd = check_option("crowd", crowd, CROWD_MODES)
        self.overlap = check_option("overlap", overlap, OVERLAP_MODES)
        self.hint = hint
        self.key_prefix = key_prefix
        self.images_dir = require(images_dir, f"{self.name} image folder", hint)
        self.annotation_file = require(annotation_file, f"{self.name} annotation file", hint)
        self.coco = load_coco_api(self.annotation_file)
        self.category_names = {c["id"]: c["name"] for c in self.coco.loadCats(self.coco.getCatIds())}

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "crowd": self.crowd, "overlap": self.overlap,
                "annotation_file": str(self.annotation_file)}

    def _ids(self) -> list[int]:
        return sorted(self.coco.getImgIds())

    def image_path(self, info: dict) -> Path:
        return self.images_dir / info["file_name"]

    def annotations(self, image_id: int) -> list[dict]:
        """The image's annotations, crowd included, in file order."""
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=None))

    def _annotation_masks(self, image_id: int, image: np.ndarray,
                          annotations: list[dict]) -> list[np.ndarray]:
        masks = []
        for annotation in annotations:
            try:
                masks.append(self.coco.annToMask(annotation).astype(bool))
            except (ValueError, TypeError, KeyError, IndexError) as error:
                raise UnreadableSample(image_id, f"annotation {annotation.get('id')} of "
                                                 f"{self.annotation_file} cannot be decoded "
                                                 f"({type(error).__name__}: {error})") from None
        return masks

    def _read_image(self, image_id: int) -> tuple[dict, Path, np.ndarray]:
        """(image info, path, pixels), checked against the size the annotation file states."""
        info = self.coco.loadImgs(image_id)[0]
        path = self.image_path(info)
        image = self.read_rgb(path)
        expected = (int(info["height"]), int(info["width"]))
        if image.shape[:2] != expected:
            raise UnreadableSample(image_id, f"{path}: the image is {image.shape[0]}x"
                                             f"{image.shape[1]} (HxW) but "
                                             f"{self.annotation_file} says {expected[0]}x"
                                             f"{expected[1]}; the image and the annotation file "
                                             "do not belong together")
        return info, path, image

    def _read(self, image_id: int) -> EvalSample:
        info, path, image = self._read_image(image_id)
        annotations = self.annotations(image_id)
        masks = self._annotation_masks(image_id, image, annotations)
        instances, ignore, classes_by_id, ids = compose_instances(
            image.shape[:2], masks,
            [self.category_names[a["category_id"]] for a in annotations],
            [bool(a.get("iscrowd", 0)) for a in annotations],
            crowd=self.crowd, overlap=self.overlap)
        boxes = {iid: xywh_to_xyxy(a["bbox"]) for iid, a in zip(ids, annotations)
                 if iid is not None and "bbox" in a}
        return finish_sample(f"{self.key_prefix}-{image_id:012d}", image, instances, ignore,
                             classes_by_id, boxes,
                             {"image_id": image_id, "file": str(path)})


class CocoInstances(CocoFormatInstances):
    """COCO 2017 (``split="val2017"``, the paper's evaluation set) from the dataset root.

    ``root`` holds ``<split>/`` and ``annotations/instances_<split>.json`` (the layout of the
    official download); ``images_dir`` / ``annotation_file`` override either path.
    """

    name = "coco"

    def __init__(self, root: str | os.PathLike | None = None, *, split: str = "val2017",
                 images_dir: str | os.PathLike | None = None,
                 annotation_file: str | os.PathLike | None = None,
                 crowd: str = DEFAULT_CROWD, overlap: str = DEFAULT_OVERLAP,
                 limit: int | None = None, preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if root is None and (images_dir is None or annotation_file is None):
            raise InvalidInput("coco: give root= (data.coco.root) or both images_dir= and "
                               "annotation_file=")
        if root is not None:
            root = require(Path(root).expanduser(), "COCO root", COCO_EVAL_HINT)
        images_dir = images_dir if images_dir is not None else root / split
        annotation_file = (annotation_file if annotation_file is not None
                           else root / "annotations" / f"instances_{split}.json")
        super().__init__(images_dir, annotation_file, key_prefix=f"coco-{split}",
                         hint=COCO_EVAL_HINT, crowd=crowd, overlap=overlap, limit=limit,
                         preprocess=preprocess, max_image_pixels=max_image_pixels)


class ToyInstances(CocoFormatInstances):
    """The toy world's COCO-format split (``glass.data.toy_world.write_coco_dataset``):
    ``root/images/<split>/`` and ``root/annotations/instances_<split>.json``."""

    name = "toy"

    def __init__(self, root: str | os.PathLike, *, split: str = "val",
                 crowd: str = DEFAULT_CROWD, overlap: str = DEFAULT_OVERLAP,
                 limit: int | None = None, preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        root = require(Path(root).expanduser(), "toy world folder", TOY_EVAL_HINT)
        super().__init__(root / "images" / split,
                         root / "annotations" / f"instances_{split}.json",
                         key_prefix=f"toy-{split}", hint=TOY_EVAL_HINT, crowd=crowd,
                         overlap=overlap, limit=limit, preprocess=preprocess,
                         max_image_pixels=max_image_pixels)
