"""PASCAL VOC 2012 as per-image index records (same layout as ``glass.data.coco``).

Class labels come from the XML annotations, mapped to COCO names (``VOC_TO_COCO``). The image
list to caption is ``trainaug`` (10,582 ids: VOC 2012 train plus SBD, paper Sec. 5) by default.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

from glass.data.classes import VOC_TO_COCO
from glass.errors import InvalidInput
from glass.data.coco import require_path

VOC_DOWNLOAD_HINT = (
    "VOC 2012 is at http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); "
    "set data.voc.root to its VOCdevkit/VOC2012 folder. The trainaug list (10,582 ids) comes "
    "with the SBD augmentation (e.g. the 'trainaug.txt' shipped by DeepLab ports); put it in "
    "ImageSets/Segmentation/ or point data.voc.caption_list at ImageSets/Segmentation/train.txt."
)


def read_id_list(path: Path) -> list[str]:
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise InvalidInput(f"{path}: the image list is empty")
    return ids


def _objects_in_annotation(xml_path: Path) -> tuple[list[str], tuple[int, int]]:
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise InvalidInput(f"{xml_path}: malformed XML ({error})") from None
    names = []
    for obj in root.iter("object"):
        voc_name = (obj.findtext("name") or "").strip()
        if voc_name not in VOC_TO_COCO:
            raise InvalidInput(f"{xml_path}: unknown VOC class {voc_name!r}")
        names.append(VOC_TO_COCO[voc_name])
    size = root.find("size")
    width = int(size.findtext("width")) if size is not None else 0
    height = int(size.findtext("height")) if size is not None else 0
    return names, (width, height)


def load_voc_index(root: str | os.PathLike, image_list: str, *, id_prefix: str = "voc") -> list[dict]:
    root = require_path(Path(root), "VOC 2012 root", VOC_DOWNLOAD_HINT)
    list_path = require_path(root / image_list, "VOC image list", VOC_DOWNLOAD_HINT)
    records = []
    for voc_id in sorted(read_id_list(list_path)):
        xml_path = require_path(root / "Annotations" / f"{voc_id}.xml",
                                f"annotation of VOC image {voc_id}", VOC_DOWNLOAD_HINT)
        names, (width, height) = _objects_in_annotation(xml_path)
        counts = Counter(names)
        classes = list(dict.fromkeys(names))  # order of appearance in the annotation
        records.append({
            "image_id": f"{id_prefix}-{voc_id}",
            "source_id": voc_id,
            "file": str(root / "JPEGImages" / f"{voc_id}.jpg"),
            "width": width,
            "height": height,
            "classes": classes,
            "instance_counts": {name: counts[name] for name in classes},
            "captions": [],
        })
    return records
