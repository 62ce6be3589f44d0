"""CLEVRTex (Karazija et al., NeurIPS 2021 D&B), the paper's zero-shot set (Sec. 5.1, Table 4).

File layout, as the dataset's own generator writes it and its reference loader reads it
(github.com/karazijal/clevrtex-generation: ``clevrtex-gen/generate.py``, ``clevrtex_eval.py``);
download from https://www.robots.ox.ac.uk/~vgg/data/clevrtex/ and untar::

    <root>/clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>.png       RGB(A) image
    <root>/clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>_flat.png  object mask
    <root>/clevrtex_<variant>/<index // 1000>/CLEVRTEX_<variant>_<index:06d>.json      metadata

(``root`` may also be the ``clevrtex_<variant>`` folder itself; files are found recursively, so
the chunk folders do not matter.) Variants: full (the main benchmark), pbg, vbg, grassbg, camo,
outd. Other files beside them (``_normal``, ``_albedo``, ``_depth``, ``_shadow`` passes) are not
read.

- The ``_flat.png`` is a palette PNG whose index at each pixel is the object there: 0 background,
  i >= 1 the object whose metadata entry has ``"index": i`` (the generator numbers objects from 1
  in ``metadata["objects"]`` order). Up to 10 objects.
- Instance classes are the objects' ``"shape"`` (cube, cylinder, sphere, monkey; outd has more).
- Splits as the reference loader: images sorted by index, test = the first 10 %, val = the next
  10 %, train = the rest (positions ``int(fraction * count)``); ``outd`` has no split (all of
  it). The reference loader also refuses gaps in the numbering, since they shift these splits;
  so does this reader.
- Images are RGBA PNGs: the alpha channel is dropped (as the reference loader's ``[..., :3]``).
- ``center_crop_fraction``: the CLEVRTex benchmark's own protocol centre-crops a square of
  0.8 x the short side before resizing (reference loader, ``crop=True``). The GLASS paper does
  not say which it used; default None = no extra crop, only the shared preprocessing
  (``Preprocess``: shortest side 256, centre crop 256). Set 0.8 for the benchmark's crop.
- No ignore pixels (the renders have exact masks); ``boxes`` is None.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS, decode_image
from glass.errors import InvalidInput
from glass.eval.datasets.sample import (
    EvalDataset, EvalSample, Preprocess, UnreadableSample, check_option, finish_sample, require,
)

CLEVRTEX_VARIANTS = ("full", "pbg", "vbg", "grassbg", "camo", "outd")
# (start, stop) fractions of the sorted images, as in the reference loader
CLEVRTEX_SPLITS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}
DEFAULT_SPLIT = "test"          # the benchmark reports the test split
MASK_SUFFIX = "_flat.png"
CLEVRTEX_HINT = ("CLEVRTex is at https://www.robots.ox.ac.uk/~vgg/data/clevrtex/ (e.g. "
                 "clevrtex_full_part1..5.tar.gz for the main set, clevrtex_outd.tar.gz, ...); "
                 "untar into one folder and set the CLEVRTex root param (root=) to it: it must "
                 "hold clevrtex_<variant>/ with CLEVRTEX_<variant>_NNNNNN.png, "
                 "..._flat.png and .json files.")


def index_clevrtex(folder: Path, variant: str) -> dict[int, Path]:
    """{index: image path} of every ``CLEVRTEX_<variant>_NNNNNN.png`` under ``folder``."""
    pattern = re.compile(rf"CLEVRTEX_{re.escape(variant)}_(\d{{6}})\.png")
    images: dict[int, Path] = {}
    for path in folder.rglob(f"CLEVRTEX_{variant}_*.png"):
        match = pattern.fullmatch(path.name)
        if match is None:   # the _flat.png masks and other passes
            continue
        index = int(match.group(1))
        if index in images:
            raise InvalidInput(f"CLEVRTex index {index} appears twice: {images[index]} and {path}")
        images[index] = path
    return images


class ClevrTexInstances(EvalDataset):
    """CLEVRTex object masks of one variant and split (see the module docstring)."""

    name = "clevrtex"

    def __init__(self, root: str | os.PathLike, *, variant: str = "full",
                 split: str = DEFAULT_SPLIT, center_crop_fraction: float | None = None,
                 limit: int | None = None, preprocess: Preprocess | dict | None = None,
                 max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        super().__init__(limit=limit, preprocess=preprocess, max_image_pixels=max_image_pixels)
        self.variant = check_option("variant", variant, CLEVRTEX_VARIANTS)
        self.split = None if variant == "outd" else check_option("split", split,
                                                                   tuple(CLEVRTEX_SPLITS))
        if center_crop_fraction is not None and not 0.0 < center_crop_fraction <= 1.0:
            raise InvalidInput(f"center_crop_fraction must be in (0, 1] or None, got "
                             f"{center_crop_fraction}")
        self.center_crop_fraction = center_crop_fraction
        root = require(Path(root).expanduser(), "CLEVRTex root", CLEVRTEX_HINT)
        subfolder = f"clevrtex_{variant}"
        self.folder = root if root.name == subfolder else require(
            root / subfolder, f"CLEVRTex variant folder {subfolder}", CLEVRTEX_HINT)
        self._images: dict[int, Path] | None = None

    def conventions(self) -> dict[str, Any]:
        return {**super().conventions(), "variant": self.variant, "split": self.split,
                "center_crop_fraction": self.center_crop_fraction}

    def _ids(self) -> list[int]:
        self._images = index_clevrtex(self.folder, self.variant)
        if not self._images:
            raise InvalidInput(f"no CLEVRTEX_{self.variant}_NNNNNN.png images under "
                             f"{self.folder}. {CLEVRTEX_HINT}")
        indices = sorted(self._images)
        gaps = sorted(set(range(indices[-1] + 1)) - set(indices))
        if gaps:
            raise InvalidInput(f"{self.folder}: {len(gaps)} CLEVRTex indices are missing (first "
                             f"{gaps[:5]}); the splits are fractions of a complete numbering, "
                             "so a partial download would shift them: untar every part")
        if self.split is None:
            return indices
        start, stop = CLEVRTEX_SPLITS[self.split]
        return indices[int(start * len(indices)):int(stop * len(indices))]

    def _read(self, index: int) -> EvalSample:
        if self._images is None:
            self._ids()
        image_path = self._images[index]
        stem = image_path.name[:-len(".png")]
        mask_path = image_path.with_name(stem + MASK_SUFFIX)
        meta_path = image_path.with_name(stem + ".json")
        image = read_rgb_dropping_alpha(image_path, self.max_image_pixels)
        mask = read_index_mask(mask_path, index, self.max_image_pixels)
        if mask.shape != image.shape[:2]:
            raise UnreadableSample(index, f"{mask_path}: mask {mask.shape} and image "
                                          f"{image.shape[:2]} differ")
        try:
            objects = json.loads(meta_path.read_text(encoding="utf-8"))["objects"]
            shapes = {int(obj["index"]): str(obj["shape"]) for obj in objects}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UnreadableSample(index, f"{meta_path}: missing or not CLEVRTex metadata (needs "
                                          f"objects[].index and .shape): {error!r}") from None
        instances = mask.astype(np.int32)
        unknown = sorted(set(np.unique(instances).tolist()) - {0} - set(shapes))
        if unknown:
            raise UnreadableSample(index, f"{mask_path}: mask values {unknown} have no object in "
                                          f"{meta_path}")
        if self.center_crop_fraction is not None:
            image, instances = center_crop(image, instances, self.center_crop_fraction)
        return finish_sample(f"clevrtex-{self.variant}-{index:06d}", image, instances,
                             np.zeros(instances.shape, dtype=bool), shapes, None,
                             {"image_id": index, "file": str(image_path)})


def center_crop(image: np.ndarray, labels: np.ndarray,
                fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Square centre crop of ``fraction`` x the short side, with the reference loader's
    offsets (``(side - crop) // 2``)."""
    height, width = labels.shape
    size = int(fraction * float(min(height, width)))
    top, left = (height - size) // 2, (width - size) // 2
    return (image[top:top + size, left:left + size],
            labels[top:top + size, left:left + size])


def read_rgb_dropping_alpha(path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
                            ) -> np.ndarray:
    """(H, W, 3) uint8; RGBA renders lose their alpha (not composited), like the reference.
    Unreadable files (a decompression bomb too) raise UnreadableImage with the reason."""
    image, _ = decode_image(path, max_pixels=max_pixels,
                            pixel_limit_key="evaluate.max_image_pixels")
    if image.mode == "RGBA":
        return np.asarray(image, dtype=np.uint8)[..., :3].copy()
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_index_mask(path: Path, index: int,
                    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """The object indices of a ``_flat.png`` (palette or greyscale) as (H, W) uint8."""
    image, _ = decode_image(path, max_pixels=max_pixels,
                            pixel_limit_key="evaluate.max_image_pixels")
    if image.mode not in ("P", "L"):
        raise UnreadableSample(index, f"{path}: a CLEVRTex mask must be a palette (P) or "
                                      f"greyscale (L) PNG of object indices, got mode "
                                      f"{image.mode}")
    return np.asarray(image, dtype=np.uint8).copy()
