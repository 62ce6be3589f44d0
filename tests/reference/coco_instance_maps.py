"""Reference for the evaluation readers' tests: instance maps read from a COCO-format file with
pycocotools exactly as the official GLASS evaluation does (crowd skipped, later annotation wins)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image


def iter_instance_maps(images_dir: str | Path, instances_json: str | Path, *,
                       limit: int | None = None, skip_crowd: bool = True
                       ) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict[int, str]]]:
    """(image id, RGB image, instance map, {instance id: class name}) per image, in id order.

    Instance ids are 1..n in annotation order; where annotations overlap the later one wins (the
    official GLASS evaluation's convention, docs/paper-facts.md); crowd regions are skipped by default.
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(instances_json))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    for count, image_id in enumerate(sorted(coco.getImgIds())):
        if limit is not None and count >= limit:
            return
        info = coco.loadImgs(image_id)[0]
        image = np.asarray(Image.open(Path(images_dir) / info["file_name"]).convert("RGB"))
        instance_map = np.zeros(image.shape[:2], dtype=np.int32)
        classes: dict[int, str] = {}
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        for annotation in annotations:
            if skip_crowd and annotation.get("iscrowd", 0):
                continue
            instance_id = len(classes) + 1
            instance_map[coco.annToMask(annotation).astype(bool)] = instance_id
            classes[instance_id] = names[annotation["category_id"]]
        yield image_id, image, instance_map, classes
