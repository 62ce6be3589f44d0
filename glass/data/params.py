"""The ``data`` params section: which dataset the pipeline captions and evaluates on.

Defaults are the paper configuration's (``params.yaml``): COCO 2017, captions of train2017 drive
generation, val2017 is held out (paper Sec. 5); VOC 2012 trainaug / val.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glass.data.toy_world import ToyWorldConfig
from glass.params import Params, nested, param


@dataclass(frozen=True)
class CocoDataParams(Params):
    """``data.coco``: ``root`` holds ``train2017/``, ``val2017/`` and ``annotations/``."""

    root: str = "/datasets/coco"
    caption_split: str = "train2017"
    eval_split: str = "val2017"


@dataclass(frozen=True)
class VocDataParams(Params):
    """``data.voc``: ``root`` is ``VOCdevkit/VOC2012``; lists are relative to it."""

    root: str = "/datasets/VOCdevkit/VOC2012"
    caption_list: str = "ImageSets/Segmentation/trainaug.txt"   # 10,582 images (paper Sec. 5)
    eval_list: str = "ImageSets/Segmentation/val.txt"


@dataclass(frozen=True)
class ToyDataParams(Params):
    """``data.toy``: split sizes, and the toy world's settings beside them (all optional)."""

    train_images: int = param(0, min=0)
    val_images: int = param(0, min=0)
    world: ToyWorldConfig = nested(ToyWorldConfig, flatten=True)


@dataclass(frozen=True)
class DataParams(Params):
    """``data``: the dataset to caption (and evaluate on) and at most how many images."""

    dataset: Literal["coco", "voc", "toy"] = "coco"
    max_images: int | None = param(None, min=1)   # seeded subset of the caption split
    coco: CocoDataParams = nested(CocoDataParams)
    voc: VocDataParams = nested(VocDataParams)
    toy: ToyDataParams = nested(ToyDataParams)
