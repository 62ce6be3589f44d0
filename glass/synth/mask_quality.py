"""Pseudo-mask quality of toy-world shards, measured against the judge (glass.pretrain.judge): a
segmenter trained on the toy world's exact ground truth that never sees attention.

For every sample the judge segments the generated image; then

- **class presence**: a prompted class is present when the judge gives it at least
  ``min_presence`` of the image's pixels (about a quarter of the smallest toy object at 64 px by
  default);
- **IoU**: per label (background and each toy class), intersection and union of the pseudo mask
  and the judge's map are summed over all samples on the pixels the pseudo mask is sure about
  (255 pixels are ignored, as the training losses ignore them); the mean IoU is over the labels
  that occur;
- **unsure share**: the share of pixels labelled 255;
- what the mean IoU is made of, on the same sure pixels: **object IoU** (object vs background,
  whatever the class) and **class agreement** (of the pixels both call an object, the share on
  which they name the same class). A mask can fail by spill (low object IoU) or by naming the
  wrong class where it does find an object (low class agreement); the levers differ.

Pseudo-mask label k is the sample's k-th prompted class (the shard format), mapped to the judge's
label of that class. The judge's map is resized (nearest) to the mask's size when they differ.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from glass.io import write_json
from glass.pretrain.judge import ToySegmenter
from glass.viz import colourise_labels, save_grid
from glass.shard_format import (IMAGE_MEMBER, MASK_MEMBER, METADATA_MEMBER, UNSURE_LABEL,
                                read_samples)

DEFAULT_MIN_PRESENCE = 0.004     # of the image's pixels: 16 px at 64 px


@dataclass
class MaskQuality:
    """Running sums; ``summary()`` gives the reported numbers."""

    class_names: tuple[str, ...]                     # the judge's labels 1..K
    min_presence: float = DEFAULT_MIN_PRESENCE
    intersection: np.ndarray = field(init=False)
    union: np.ndarray = field(init=False)
    prompted: np.ndarray = field(init=False)         # per class: times prompted
    present: np.ndarray = field(init=False)          # per class: times the judge found it
    samples: int = 0
    pixels: int = 0
    unsure: int = 0
    shared_object: int = 0        # sure pixels both call an object (the object intersection)
    object_union: int = 0         # sure pixels either calls an object
    same_class: int = 0           # shared object pixels both give the same class

    def __post_init__(self) -> None:
        labels = 1 + len(self.class_names)
        self.intersection = np.zeros(labels, dtype=np.int64)
        self.union = np.zeros(labels, dtype=np.int64)
        self.prompted = np.zeros(labels, dtype=np.int64)
        self.present = np.zeros(labels, dtype=np.int64)

    def add(self, mask: np.ndarray, judged: np.ndarray, classes: list[str]) -> None:
        """One sample: its pseudo mask (H, W) uint8, the judge's labels (H, W), its classes."""
        lookup = judge_label_lookup(classes, self.class_names)
        sure = mask != UNSURE_LABEL
        self.samples += 1
        self.pixels += mask.size
        self.unsure += int((~sure).sum())
        pseudo = lookup[mask[sure]]
        judge = judged[sure].astype(np.int64)
        labels = len(self.intersection)
        both = np.bincount(pseudo[pseudo == judge], minlength=labels)
        self.intersection += both
        self.union += np.bincount(pseudo, minlength=labels) + np.bincount(judge, minlength=labels) - both
        pseudo_object, judge_object = pseudo > 0, judge > 0
        shared = pseudo_object & judge_object
        self.object_union += int((pseudo_object | judge_object).sum())
        self.shared_object += int(shared.sum())
        self.same_class += int((pseudo[shared] == judge[shared]).sum())
        area = np.bincount(judged.ravel().astype(np.int64), minlength=labels) / judged.size
        for name in set(classes):
            label = 1 + self.class_names.index(name)
            self.prompted[label] += 1
            self.present[label] += int(area[label] >= self.min_presence)

    def summary(self) -> dict:
        names = ("background",) + tuple(self.class_names)
        iou = {name: (round(float(i / u), 4) if u else None)
               for name, i, u in zip(names, self.intersection, self.union)}
        occurring = [value for value in iou.values() if value is not None]
        presence = {name: round(float(f / p), 4)
                    for name, f, p in zip(names, self.present, self.prompted) if p}
        prompted = int(self.prompted.sum())
        return {
            "samples": self.samples,
            "miou_vs_judge": round(float(np.mean(occurring)), 4) if occurring else None,
            "iou_vs_judge": iou,
            "class_presence": round(float(self.present.sum() / prompted), 4) if prompted else None,
            "class_presence_per_class": presence,
            "min_presence": self.min_presence,
            "unsure_fraction": round(self.unsure / self.pixels, 4) if self.pixels else None,
            "object_iou_vs_judge": (round(self.shared_object / self.object_union, 4)
                                    if self.object_union else None),
            "class_agreement_on_objects": (round(self.same_class / self.shared_object, 4)
                                           if self.shared_object else None),
        }


def shard_samples(shard_dir: str | Path) -> Iterable[tuple[str, np.ndarray, np.ndarray, list[str]]]:
    """(key, image (H, W, 3) uint8, mask (H, W) uint8, classes) of every sample with a mask."""
    for tar in sorted(Path(shard_dir).glob("shard-*.tar")):
        samples, error = read_samples(tar)
        if error:
            raise ValueError(f"{tar}: {error}")
        for key, members in samples.items():
            if MASK_MEMBER not in members:
                continue
            image = np.array(Image.open(io.BytesIO(members[IMAGE_MEMBER])).convert("RGB"))
            mask = np.asarray(Image.open(io.BytesIO(members[MASK_MEMBER])))
            classes = json.loads(members[METADATA_MEMBER])["classes"]
            yield key, image, mask, classes


def judge_images(judge, images: list[np.ndarray],
                 sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The judge's labels of (H, W, 3) uint8 images, each resized (nearest) to its ``sizes`` entry
    (the size of the mask it is compared with)."""
    side = judge.config.image_size
    pixels = torch.stack([torch.from_numpy(image).permute(2, 0, 1) for image in images])
    pixels = F.interpolate(pixels.float() / 255, size=(side, side), mode="bilinear",
                           antialias=True, align_corners=False)
    out = []
    for judged, size in zip(judge.segment(pixels), sizes):
        if tuple(judged.shape) != tuple(size):
            judged = F.interpolate(judged[None, None].float(), size=size,
                                   mode="nearest")[0, 0].long()
        out.append(judged.numpy())
    return out


def judge_shards(judge, shard_dir: str | Path, min_presence: float = DEFAULT_MIN_PRESENCE,
                 batch: int = 64) -> dict:
    """The summary above for every masked sample of a shard folder."""
    quality = MaskQuality(tuple(judge.config.class_names), min_presence)
    pending: list[tuple[np.ndarray, np.ndarray, list[str]]] = []

    def flush() -> None:
        judged = judge_images(judge, [image for image, _, _ in pending],
                              [mask.shape for _, mask, _ in pending])
        for (_, mask, classes), labels in zip(pending, judged):
            quality.add(mask, labels, classes)
        pending.clear()

    for _, image, mask, classes in shard_samples(shard_dir):
        pending.append((image, mask, classes))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return quality.summary()



def judge_label_lookup(classes: list[str], class_names: tuple[str, ...]) -> np.ndarray:
    """(256,) map from a pseudo-mask label (k = the sample's k-th class) to the judge's label;
    0 and 255 map to themselves."""
    lookup = np.arange(256, dtype=np.int64)
    for index, name in enumerate(classes, start=1):
        if name not in class_names:
            raise ValueError(f"the judge knows no class {name!r} (knows {class_names})")
        lookup[index] = 1 + class_names.index(name)
    return lookup


def in_judge_labels(mask: np.ndarray, classes: list[str], class_names: tuple[str, ...]) -> np.ndarray:
    """The pseudo mask with prompt indices replaced by the judge's labels (255 kept)."""
    return judge_label_lookup(classes, class_names)[mask].astype(np.uint8)


def run_judge_masks(shard_dir: str | Path, judge_folder: str | None, metrics_path: str | Path,
                    grid_path: str | Path, min_presence: float, grid_samples: int) -> dict:
    """The ``judge_masks`` stage: the summary as metrics, and a grid of image | pseudo mask |
    the judge's map (both in the judge's label colours, 255 white). Without a judge (``None``)
    the metrics say so and the grid shows image | pseudo mask."""
    judge = None
    if judge_folder is not None:
        if not Path(judge_folder).is_dir():
            raise FileNotFoundError(f"synth.judge.model: no judge folder {judge_folder}; train "
                                    "it with `dvc repro configs/toy-pretrain/dvc.yaml` or set "
                                    "synth.judge.model to null")
        judge = ToySegmenter.from_pretrained(judge_folder).eval()
        summary = {"judge": str(judge_folder), **judge_shards(judge, shard_dir, min_presence)}
    else:
        summary = {"judge": None, "why": "synth.judge.model is null: no judge for these images"}
    rows = []
    for index, (_, image, mask, classes) in enumerate(shard_samples(shard_dir)):
        if index == grid_samples:
            break
        if judge is None:
            rows.append([image, mask])
            continue
        # the palette is stable per label index, so both maps share the judge's colours
        pseudo = in_judge_labels(mask, classes, tuple(judge.config.class_names))
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        pixels = F.interpolate(pixels, size=(judge.config.image_size,) * 2, mode="bilinear",
                               antialias=True, align_corners=False)
        judged = judge.segment(pixels)[0].numpy()
        rows.append([image, colourise_labels(pseudo), colourise_labels(judged, unsure=None)])
    if not rows:
        raise ValueError(f"{shard_dir}: no sample with a mask to show")
    save_grid(grid_path, rows, tile=96)
    write_json(metrics_path, summary)
    return summary
