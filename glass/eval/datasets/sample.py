"""The evaluation sample type, its conventions, and the preprocessing every reader shares.

Every evaluation reader (COCO, toy world, VOC, CLEVRTex, Objects365) yields :class:`EvalSample`:

- ``image``: (H, W, 3) uint8 RGB.
- ``instances``: (H, W) int32 ground-truth instance ids, 0 = background. Ids are the reader's
  own (COCO: 1..n in annotation order; VOC: the SegmentationObject index; CLEVRTex: the
  ``_flat.png`` index) and need not be contiguous.
- ``ignore``: (H, W) bool, pixels to leave out of every metric (VOC's 255 boundary, crowd regions,
  pixels of several instances, as the reader's conventions say). ``instances`` is 0 there.
- ``instance_classes``: {instance id: class name} for exactly the ids present in ``instances``
  (instances that were overwritten, ignored or cropped away are dropped, as the metrics drop
  empty ground-truth regions anyway: docs/paper-facts.md "Evaluation").
- ``boxes``: {instance id: (x0, y0, x1, y1)} in pixels of this sample's image, or None where the
  dataset has no boxes (VOC segmentation, CLEVRTex). For COCO-format data they are the
  annotation boxes (Objects365: the SAM 2 prompts), moved with the preprocessing.

The preprocessing (:class:`Preprocess`) defaults to the official GLASS evaluation's: the shortest
side resized to 256, nearest-neighbour for the label maps, then a 256 x 256 centre crop
(docs/paper-facts.md "Evaluation"). ``resolution=None`` keeps full resolution; other sizes (320 as in
ocl's centre crop, 224, ...) are the "GT resolution" conventions docs/paper-facts.md lists.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from glass.data.coco import DatasetNotFound
from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImage, load_rgb_image
from glass.errors import InvalidInput
from glass.params import Params, param

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

# --- conventions of COCO-format ground truth (COCO, toy world, Objects365) -----------------------

# Crowd annotations (iscrowd = 1): "skip" = not used at all, their pixels stay whatever the other
# annotations make them (official GLASS: docs/paper-facts.md "Evaluation"); "ignore" = their pixels
# leave the metrics; "background" = their pixels become background even where an instance covers
# them; "instance" = painted like any other annotation.
CROWD_MODES = ("skip", "ignore", "background", "instance")
DEFAULT_CROWD = "skip"
# Pixels covered by several instances: "later_wins" = the later annotation overwrites (official
# GLASS); "ignore" = they leave the metrics (ocl); "smaller_wins" = the instance with the smaller
# mask ends on top (our option for SAM masks, where a large box's mask often swallows the small
# objects inside it).
OVERLAP_MODES = ("later_wins", "ignore", "smaller_wins")
DEFAULT_OVERLAP = "later_wins"

# --- preprocessing ---------------------------------------------------------------------------------

OFFICIAL_RESOLUTION = 256          # docs/paper-facts.md "Evaluation": shortest side 256 + centre crop
CROP_MODES = ("center", "none")
IMAGE_RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def check_option(name: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


@dataclass
class EvalSample:
    """One evaluation image with its instance ground truth (see the module docstring)."""

    key: str
    image: np.ndarray
    instances: np.ndarray
    instance_classes: dict[int, str]
    ignore: np.ndarray
    boxes: dict[int, Box] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The encoder's input when it differs from ``image`` (Preprocess.model_resolution): the
    # original image resized for the model, covering the same region as ``image``.
    model_image: np.ndarray | None = None

    def __post_init__(self) -> None:
        image, instances, ignore = self.image, self.instances, self.ignore
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput(f"{self.key}: image must be (H, W, 3) uint8, got {image.dtype} "
                             f"{image.shape}")
        if instances.dtype != np.int32 or instances.shape != image.shape[:2]:
            raise InvalidInput(f"{self.key}: instances must be int32 {image.shape[:2]}, got "
                             f"{instances.dtype} {instances.shape}")
        if ignore.dtype != bool or ignore.shape != image.shape[:2]:
            raise InvalidInput(f"{self.key}: ignore must be bool {image.shape[:2]}, got "
                             f"{ignore.dtype} {ignore.shape}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.image.shape[0], self.image.shape[1]


def finish_sample(key: str, image: np.ndarray, instances: np.ndarray, ignore: np.ndarray,
                  classes: dict[int, str], boxes: dict[int, Box] | None = None,
                  metadata: dict[str, Any] | None = None) -> EvalSample:
    """An :class:`EvalSample` with the shared invariants applied: ``instances`` is 0 wherever
    ``ignore`` is set, and classes / boxes are kept for the ids still present only."""
    instances = np.ascontiguousarray(instances, dtype=np.int32)
    ignore = np.ascontiguousarray(ignore, dtype=bool)
    instances[ignore] = 0
    present = {int(value) for value in np.unique(instances) if value != 0}
    missing = present - set(classes)
    if missing:
        raise InvalidInput(f"{key}: instance ids {sorted(missing)} have no class")
    classes = {iid: classes[iid] for iid in sorted(present)}
    if boxes is not None:
        boxes = {iid: boxes[iid] for iid in sorted(present) if iid in boxes}
    return EvalSample(key=key, image=np.ascontiguousarray(image, dtype=np.uint8),
                      instances=instances, instance_classes=classes, ignore=ignore, boxes=boxes,
                      metadata=dict(metadata or {}))


def compose_instances(shape: tuple[int, int], masks: list[np.ndarray], classes: list[str],
                      crowd_flags: list[bool], *, crowd: str = DEFAULT_CROWD,
                      overlap: str = DEFAULT_OVERLAP
                      ) -> tuple[np.ndarray, np.ndarray, dict[int, str], list[int | None]]:
    """Paint COCO-style annotations (binary masks in annotation order) into an instance map.

    Returns (instances int32, ignore bool, {instance id: class}, the instance id given to each
    annotation or None). Non-crowd annotations (and crowd ones when ``crowd="instance"``) get
    ids 1..n in annotation order; ``overlap`` decides pixels several of them cover; then the
    crowd rule applies (see :data:`CROWD_MODES`), and ignored pixels are set to 0.
    """
    check_option("crowd", crowd, CROWD_MODES)
    check_option("overlap", overlap, OVERLAP_MODES)
    instances = np.zeros(shape, dtype=np.int32)
    ignore = np.zeros(shape, dtype=bool)
    crowd_pixels = np.zeros(shape, dtype=bool)
    ids: list[int | None] = []
    painted: list[tuple[int, np.ndarray]] = []
    names: dict[int, str] = {}
    for mask, name, is_crowd in zip(masks, classes, crowd_flags):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != tuple(shape):
            raise InvalidInput(f"annotation mask {mask.shape} does not match the image {shape}")
        if is_crowd and crowd != "instance":
            crowd_pixels |= mask
            ids.append(None)
            continue
        instance_id = len(names) + 1
        names[instance_id] = name
        ids.append(instance_id)
        painted.append((instance_id, mask))

    if overlap == "smaller_wins":
        # largest first, so smaller masks end on top; ties keep annotation order (later wins)
        order = sorted(range(len(painted)), key=lambda i: -int(painted[i][1].sum()))
        painted = [painted[i] for i in order]
    coverage = np.zeros(shape, dtype=np.int32)
    for instance_id, mask in painted:
        instances[mask] = instance_id
        coverage += mask
    if overlap == "ignore":
        ignore |= coverage > 1

    if crowd == "ignore":
        ignore |= crowd_pixels
    elif crowd == "background":
        instances[crowd_pixels] = 0
    instances[ignore] = 0
    return instances, ignore, names, ids


@dataclass(frozen=True)
class Preprocess(Params):
    """How ground truth and image are brought to the evaluation resolution.

    ``resolution``: the shortest side is resized to it, then with ``crop="center"`` a
    ``resolution`` x ``resolution`` centre crop is taken; ``None`` = full resolution, nothing
    changes. Label maps (instances, ignore) always use nearest neighbour, so no new ids appear.
    ``rules`` says how exactly (docs/paper-facts.md "Evaluation"):

    - ``official`` (default): the official GLASS evaluation's cv2 code, bit for bit: scale
      factor ``max(r / h, r / w)``, sides ``int(round(h * factor))``, ``int(round(w * factor))``
      (Python rounding), labels ``cv2.INTER_NEAREST`` (source index ``floor(dst * src / dst')``,
      i.e. top-left sampling), image ``cv2.INTER_LINEAR`` (``INTER_CUBIC`` for
      ``image_resample: bicubic``) without antialiasing, crop offset ``(size - r) // 2``;
    - ``torchvision``: torchvision's ``Resize(int)`` + ``CenterCrop`` on PIL images: the long
      side ``int(r * long / short)``, labels PIL ``NEAREST`` (pixel-centre sampling), image
      PIL ``image_resample`` (antialiased), crop offset ``round((size - r) / 2)``.
    """

    resolution: int | None = param(OFFICIAL_RESOLUTION, min=1)
    crop: Literal["center", "none"] = "center"
    image_resample: Literal["bilinear", "bicubic"] = "bilinear"
    rules: Literal["official", "torchvision"] = "official"
    # The official evaluation feeds the encoder its own view of the ORIGINAL image (short side to
    # the encoder's input size, 448 for DINOv2 in GLASS, same rules and crop) instead of
    # upsampling the 256-px ground-truth crop (docs/paper-facts.md "Evaluation"); None = the model
    # sees ``image``. Set from the trained model by the evaluate stage, never in a params file.
    model_resolution: int | None = param(None, min=1, optional=True)

    def resized_size(self, height: int, width: int,
                     size: int | None | str = "resolution") -> tuple[int, int]:
        """(height, width) after the shortest-side resize to ``size`` (default: ``resolution``),
        before the crop."""
        if size == "resolution":
            size = self.resolution
        if size is None:
            return height, width
        if self.rules == "official":
            factor = max(size / height, size / width)
            return int(round(height * factor)), int(round(width * factor))
        if width <= height:
            return int(size * height / width), size
        return size, int(size * width / height)

    def crop_offset(self, length: int, size: int) -> int:
        """Where a centre crop of ``size`` starts along a side of ``length``."""
        if self.rules == "official":
            return (length - size) // 2
        return int(round((length - size) / 2.0))

    def resize_image(self, image: np.ndarray, height: int, width: int) -> np.ndarray:
        if self.rules == "official":
            import cv2

            interpolation = cv2.INTER_LINEAR if self.image_resample == "bilinear" \
                else cv2.INTER_CUBIC
            return cv2.resize(image, (width, height), interpolation=interpolation)
        return np.asarray(Image.fromarray(image).resize((width, height),
                                                        IMAGE_RESAMPLING[self.image_resample]))

    def resize_labels(self, labels: np.ndarray, height: int, width: int) -> np.ndarray:
        if self.rules == "official":
            import cv2

            return cv2.resize(np.ascontiguousarray(labels), (width, height),
                              interpolation=cv2.INTER_NEAREST)
        return resize_labels(labels, height, width)

    def model_input(self, image: np.ndarray) -> np.ndarray:
        """The encoder's view of the original ``image``: short side to ``model_resolution``,
        then the same kind of crop as the ground truth (so both cover the same region)."""
        height, width = image.shape[:2]
        new_height, new_width = self.resized_size(height, width, self.model_resolution)
        resized = self.resize_image(image, new_height, new_width)
        if self.crop != "center" or self.resolution is None:
            return resized
        size = self.model_resolution
        top, left = self.crop_offset(new_height, size), self.crop_offset(new_width, size)
        return resized[top:top + size, left:left + size]

    def __call__(self, sample: EvalSample) -> EvalSample:
        model_image = (self.model_input(sample.image) if self.model_resolution is not None
                       else None)
        out = self._resize_ground_truth(sample)
        out.model_image = model_image
        return out

    def _resize_ground_truth(self, sample: EvalSample) -> EvalSample:
        if self.resolution is None:
            return sample
        height, width = sample.size
        new_height, new_width = self.resized_size(height, width)
        image, instances, ignore = sample.image, sample.instances, sample.ignore
        if (new_height, new_width) != (height, width):
            image = self.resize_image(image, new_height, new_width)
            instances = self.resize_labels(instances.astype(np.int32), new_height,
                                           new_width).astype(np.int32)
            ignore = self.resize_labels(ignore.astype(np.uint8), new_height,
                                        new_width).astype(bool)
        top = left = 0
        out_height, out_width = new_height, new_width
        if self.crop == "center":
            out_height = out_width = self.resolution
            top = self.crop_offset(new_height, out_height)
            left = self.crop_offset(new_width, out_width)
            image = image[top:top + out_height, left:left + out_width]
            instances = instances[top:top + out_height, left:left + out_width]
            ignore = ignore[top:top + out_height, left:left + out_width]
        boxes = None
        if sample.boxes is not None:
            scale_x, scale_y = new_width / width, new_height / height
            boxes = {}
            for iid, (x0, y0, x1, y1) in sample.boxes.items():
                boxes[iid] = (float(np.clip(x0 * scale_x - left, 0, out_width)),
                              float(np.clip(y0 * scale_y - top, 0, out_height)),
                              float(np.clip(x1 * scale_x - left, 0, out_width)),
                              float(np.clip(y1 * scale_y - top, 0, out_height)))
        metadata = dict(sample.metadata, original_size=[height, width],
                        preprocess=self.as_dict())
        return finish_sample(sample.key, image, instances.copy(), ignore.copy(),
                             sample.instance_classes, boxes, metadata)


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (PIL's NEAREST, like torchvision's
    ``Resize(interpolation=NEAREST)`` on PIL images; the ``torchvision`` rules)."""
    labels = np.asarray(labels)
    mode_array = labels.astype(np.int32) if labels.dtype != np.uint8 else labels
    resized = Image.fromarray(mode_array).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized)


def as_preprocess(preprocess: Preprocess | dict | None) -> Preprocess:
    """``Preprocess`` from an instance, a dict of its fields, or None (= the official default)."""
    if preprocess is None:
        return Preprocess()
    if isinstance(preprocess, Preprocess):
        return preprocess
    if isinstance(preprocess, dict):
        return Preprocess(**preprocess)
    raise TypeError(f"preprocess must be a Preprocess, a dict or None, got {preprocess!r}")


def require(path: str | os.PathLike, what: str, hint: str) -> Path:
    """``path`` if it exists, else :class:`DatasetNotFound` naming it, the data and the param."""
    path = Path(path)
    if not path.exists():
        raise DatasetNotFound(f"{what} not found at {path}. {hint}")
    return path


class UnreadableSample(InvalidInput):
    """One image of a dataset cannot be used (its image or mask file cannot be decoded, or they
    disagree); the evaluation skips it and records ``reason``."""

    def __init__(self, image_id: Any, reason: str):
        super().__init__(f"image {image_id}: {reason}")
        self.image_id = image_id
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.image_id, self.reason)


def check_limit(limit: int | None) -> int | None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidInput(f"limit must be a non-negative integer or None, got {limit!r}")
    return limit


class EvalDataset(ABC):
    """Base of the readers: a deterministic, ordered list of images, read one at a time.

    Subclasses set ``name`` and implement ``_ids()`` (every image id, in order) and
    ``_read(image_id)`` (the full-resolution :class:`EvalSample`). Iterating yields the samples
    in order, preprocessed; ``limit`` keeps the first ``limit`` images of that order.
    """

    name = "dataset"

    def __init__(self, *, limit: int | None = None,
                 preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.limit = check_limit(limit)
        self.preprocess = as_preprocess(preprocess)
        self.max_image_pixels = max_image_pixels
        self._cached_ids: list | None = None
        # image id → why it could not be used (readable() records each once, whichever task
        # read it)
        self.unreadable: dict[str, str] = {}

    @abstractmethod
    def _ids(self) -> list:
        """Every image id of the dataset, in the reader's fixed order."""

    @abstractmethod
    def _read(self, image_id) -> EvalSample:
        """The full-resolution sample of one image."""

    def conventions(self) -> dict[str, Any]:
        """Every choice that changes the ground truth, for the evaluation's records."""
        return {"dataset": self.name, "limit": self.limit, **self.preprocess.as_dict(),
                "max_image_pixels": self.max_image_pixels}

    @property
    def image_ids(self) -> list:
        if self._cached_ids is None:
            ids = list(self._ids())
            self._cached_ids = ids if self.limit is None else ids[:self.limit]
        return self._cached_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> EvalSample:
        return self.load(self.image_ids[index])

    def load(self, image_id) -> EvalSample:
        """One image's sample, preprocessed; UnreadableSample when its files cannot be used."""
        try:
            return self.preprocess(self._read(image_id))
        except UnreadableImage as error:
            raise UnreadableSample(image_id, f"{error.path}: {error.reason}") from None

    def __iter__(self):
        for image_id in self.image_ids:
            yield self.load(image_id)

    def readable(self, limit: int | None = None):
        """The samples in order, unreadable images skipped (their reasons kept in ``unreadable``),
        at most ``limit`` of them (None: all)."""
        count = 0
        for image_id in self.image_ids:
            if limit is not None and count >= limit:
                return
            try:
                sample = self.load(image_id)
            except UnreadableSample as error:
                if str(image_id) not in self.unreadable:
                    log.warning("%s: skipping unreadable image %s", self.name, error)
                self.unreadable[str(image_id)] = error.reason
                continue
            count += 1
            yield sample

    def probe(self, image_id) -> None:
        """Read what ``load`` would, for the check before any model is loaded (readers whose
        samples need a model, Objects365, check less)."""
        self.load(image_id)

    def first_readable(self) -> Any:
        """The id of the first usable image, reading no further than it; InvalidInput naming
        the reasons when no image of the dataset can be used."""
        reasons: dict[str, str] = {}
        for image_id in self.image_ids:
            try:
                self.probe(image_id)
                return image_id
            except UnreadableSample as error:
                reasons[str(image_id)] = error.reason
        shown = "; ".join(f"{key}: {reason}" for key, reason in list(reasons.items())[:3])
        raise InvalidInput(f"none of its {len(reasons)} images can be read ({shown}"
                           f"{' …' if len(reasons) > 3 else ''})")

    def read_rgb(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W, 3) uint8 of an image file (``read_rgb`` with this reader's pixel limit)."""
        return read_rgb(path, max_pixels=self.max_image_pixels)


def read_rgb(path: str | os.PathLike,
             max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 of an image file, or :class:`glass.data.images.UnreadableImage` naming the
    file and the reason (missing, empty, corrupt, declaring more than ``max_pixels`` pixels)."""
    image, _ = load_rgb_image(path, max_pixels=max_pixels,
                              pixel_limit_key="evaluate.max_image_pixels")
    return np.asarray(image, dtype=np.uint8)
