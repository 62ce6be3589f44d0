"""COCO-format datasets (real COCO 2017 and the toy world) as per-image index records.

An index record is a plain dict, one per image:
``{"image_id", "source_id", "file", "width", "height", "classes", "instance_counts", "captions"}``
with ``classes`` the COCO class names present, most area first, and ``captions`` the dataset's own
captions (empty if it has none).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from glass.data.classes import COCO_CATEGORY_IDS
from glass.errors import InvalidInput, MissingInput
from glass.io import repair_text

log = logging.getLogger(__name__)

COCO_DOWNLOAD_HINT = (
    "COCO 2017 is at https://cocodataset.org/#download: '2017 Train images', '2017 Val images' "
    "and '2017 Train/Val annotations'; unpack them so that the root holds train2017/, val2017/ "
    "and annotations/."
)


class DatasetNotFound(MissingInput):
    """A dataset path from params does not exist; the message says how to obtain the data."""


def require_path(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise DatasetNotFound(f"{what} not found at {path}. {hint}")
    return path


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
                         "the annotation file is corrupt: re-download it") from None


def load_coco_index(images_dir: str | os.PathLike, instances_json: str | os.PathLike, *,
                    id_prefix: str, captions_json: str | os.PathLike | None = None,
                    hint: str = COCO_DOWNLOAD_HINT) -> list[dict]:
    """Index every image listed in a COCO instances file (images without objects included).

    Category names are mapped through the category table of the file itself and must be COCO
    class names. Crowd annotations count towards the classes present (they are objects of that
    class) but not towards instance counts.
    """
    from pycocotools.coco import COCO  # imported here: it prints on load, and is slow to import

    images_dir = require_path(Path(images_dir), "image folder", hint)
    instances_json = require_path(Path(instances_json), "instances annotation file", hint)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(instances_json))
    except (ValueError, KeyError, TypeError) as error:   # json.JSONDecodeError is a ValueError
        raise InvalidInput(f"{instances_json}: not a readable COCO instances file "
                           f"({type(error).__name__}: {error}); re-download it") from None
    category_names = {}
    for category in coco.loadCats(coco.getCatIds()):
        if category["name"] not in COCO_CATEGORY_IDS:
            raise InvalidInput(f"{instances_json}: category {category['name']!r} is not a COCO class")
        category_names[category["id"]] = category["name"]

    captions: dict[int, list[str]] = defaultdict(list)
    caption_notes: dict[int, list[str]] = defaultdict(list)
    if captions_json is not None and Path(captions_json).exists():
        for annotation in _load_json(Path(captions_json)).get("annotations", []):
            image_id, text = annotation.get("image_id"), annotation.get("caption")
            if not isinstance(text, str):
                log.warning("%s: caption annotation %s of image %s is %s, not text; left out",
                            captions_json, annotation.get("id"), image_id, type(text).__name__)
                caption_notes[image_id].append(f"caption annotation {annotation.get('id')} is "
                                               "not text; left out")
                continue
            # JSON may hold lone UTF-16 surrogates ("\ud800"), which no UTF-8 file can: repair
            # them here, where the caption is read, and say so in the index record
            text, notes = repair_text(text.strip())
            captions[image_id].append(text)
            caption_notes[image_id].extend(
                f"caption annotation {annotation.get('id')}: {note}" for note in notes)

    records = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        area_by_class: dict[str, float] = defaultdict(float)
        instance_counts: dict[str, int] = defaultdict(int)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None)):
            name = category_names[annotation["category_id"]]
            area_by_class[name] += float(annotation.get("area", 0.0))
            if not annotation.get("iscrowd", 0):
                instance_counts[name] += 1
        classes = sorted(area_by_class, key=lambda name: (-area_by_class[name], name))
        records.append({
            "image_id": f"{id_prefix}-{image_id:012d}",
            "source_id": image_id,
            "file": str(images_dir / info["file_name"]),
            "width": int(info["width"]),
            "height": int(info["height"]),
            "classes": classes,
            "instance_counts": {name: instance_counts[name] for name in classes},
            "captions": sorted(captions.get(image_id, [])),
        })
        if caption_notes.get(image_id):
            records[-1]["notes"] = caption_notes[image_id]
    return records
