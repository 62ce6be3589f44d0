"""The 80 COCO object classes (official names and category ids) and the VOC → COCO name map.

Every class name in the project is one of ``COCO_CLASSES``; datasets with other label sets
(VOC) are mapped onto these names when they are loaded.
"""

from __future__ import annotations
from glass.errors import InvalidInput

# Official COCO 2017 category ids (they skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
COCO_CATEGORY_IDS: dict[str, int] = {
    "person": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "airplane": 5, "bus": 6, "train": 7,
    "truck": 8, "boat": 9, "traffic light": 10, "fire hydrant": 11, "stop sign": 13,
    "parking meter": 14, "bench": 15, "bird": 16, "cat": 17, "dog": 18, "horse": 19, "sheep": 20,
    "cow": 21, "elephant": 22, "bear": 23, "zebra": 24, "giraffe": 25, "backpack": 27,
    "umbrella": 28, "handbag": 31, "tie": 32, "suitcase": 33, "frisbee": 34, "skis": 35,
    "snowboard": 36, "sports ball": 37, "kite": 38, "baseball bat": 39, "baseball glove": 40,
    "skateboard": 41, "surfboard": 42, "tennis racket": 43, "bottle": 44, "wine glass": 46,
    "cup": 47, "fork": 48, "knife": 49, "spoon": 50, "bowl": 51, "banana": 52, "apple": 53,
    "sandwich": 54, "orange": 55, "broccoli": 56, "carrot": 57, "hot dog": 58, "pizza": 59,
    "donut": 60, "cake": 61, "chair": 62, "couch": 63, "potted plant": 64, "bed": 65,
    "dining table": 67, "toilet": 70, "tv": 72, "laptop": 73, "mouse": 74, "remote": 75,
    "keyboard": 76, "cell phone": 77, "microwave": 78, "oven": 79, "toaster": 80, "sink": 81,
    "refrigerator": 82, "book": 84, "clock": 85, "vase": 86, "scissors": 87, "teddy bear": 88,
    "hair drier": 89, "toothbrush": 90,
}

COCO_CLASSES: tuple[str, ...] = tuple(COCO_CATEGORY_IDS)
COCO_NAME_BY_ID: dict[int, str] = {cid: name for name, cid in COCO_CATEGORY_IDS.items()}

# PASCAL VOC 2012's 20 classes under their COCO names (VOC's own spelling on the left).
VOC_TO_COCO: dict[str, str] = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "diningtable": "dining table", "dog": "dog", "horse": "horse", "motorbike": "motorcycle",
    "person": "person", "pottedplant": "potted plant", "sheep": "sheep", "sofa": "couch",
    "train": "train", "tvmonitor": "tv",
}
# VOC's class index order in SegmentationClass PNGs (0 = background, 255 = boundary/ignore).
VOC_CLASSES: tuple[str, ...] = tuple(VOC_TO_COCO)

assert len(COCO_CLASSES) == 80
assert all(name in COCO_CATEGORY_IDS for name in VOC_TO_COCO.values())


def check_coco_class(name: str) -> str:
    """Return ``name`` if it is an official COCO class name, else raise a ValueError saying so."""
    if name not in COCO_CATEGORY_IDS:
        raise InvalidInput(
            f"{name!r} is not one of the 80 COCO class names (see glass.data.classes.COCO_CLASSES)"
        )
    return name
