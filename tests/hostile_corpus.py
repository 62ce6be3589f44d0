"""A corpus of hostile inputs, each with the outcome the pipeline must give it.

``write_hostile_images(folder)`` writes image files that real datasets contain or that an
attacker could craft — truncated, empty, CMYK, 16-bit, with alpha, palette, 1×1, extreme aspect,
a decompression-bomb header, animated, a mislabelled extension, a non-ASCII name, a directory
named like an image, an image above a pixel limit — and returns one :class:`HostileImage` per
file: whether it must be loaded (and how it must look) or skipped (and a fragment of the
reason). ``HOSTILE_CAPTIONS`` does the same for caption text: empty, huge, NUL, control
characters, right-to-left text, zero-width characters, a lone UTF-16 surrogate.

``write_hostile_coco(root, ...)`` lays both out as a COCO 2017 folder (``val2017/``,
``train2017/``, ``annotations/``) whose annotation files state each image's real size, so the
prepare, caption, prompts and evaluate stages read them exactly as they read COCO.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# images larger than this (in pixels) must be reduced or skipped; tests pass it as the
# max_image_pixels params of the caption and evaluate sections
PIXEL_LIMIT = 40_000


@dataclass(frozen=True)
class HostileImage:
    """One hostile image file and what each stage must make of it. ``*_skip``: a fragment of
    the reason the stage records, or None when the stage must use the image (``caption_note``:
    a fragment of the note it records then, "" for none)."""

    name: str
    size: tuple[int, int]             # (width, height) the annotation file states
    caption_skip: str | None = None   # caption stage (BLIP-2, min side 16, PIXEL_LIMIT)
    caption_note: str = ""
    evaluate_skip: str | None = None  # evaluate stage (PIXEL_LIMIT, the ground truth needs
                                      # every pixel, so nothing is decoded reduced)


def _rgb(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(max(1, height // 8 + 1), max(1, width // 8 + 1), 3))
    return np.kron(base, np.ones((8, 8, 1)))[:height, :width].astype(np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def decompression_bomb_png(width: int = 12000, height: int = 12000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` RGB pixels (12000 x 12000 by
    default: ~0.4 GB decoded); its data is a short deflate stream of zeros, so a loader must
    judge it by the header, before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


def write_hostile_images(folder: str | Path) -> list[HostileImage]:
    """Write the hostile image files into ``folder``; return each with its expected outcomes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[HostileImage] = []

    def save(data: bytes, case: HostileImage) -> None:
        (folder / case.name).write_bytes(data)
        cases.append(case)

    save(_jpeg_bytes(Image.fromarray(_rgb(64, 48, 0))), HostileImage("plain.jpg", (64, 48)))
    full = _jpeg_bytes(Image.fromarray(_rgb(64, 48, 1)))
    save(full[: len(full) // 2], HostileImage("truncated.jpg", (64, 48), "truncated or corrupt",
                                              evaluate_skip="truncated or corrupt"))
    save(b"", HostileImage("zero_bytes.jpg", (64, 48), "empty file", evaluate_skip="empty file"))
    save(_jpeg_bytes(Image.fromarray(_rgb(40, 40, 2)).convert("CMYK")),
         HostileImage("cmyk.jpg", (40, 40)))
    sixteen = Image.fromarray((np.arange(48 * 32, dtype=np.uint16).reshape(32, 48) * 40))
    save(_png_bytes(sixteen), HostileImage("sixteen_bit.png", (48, 32)))
    rgba = np.dstack([_rgb(32, 32, 3), np.full((32, 32), 128, np.uint8)])
    save(_png_bytes(Image.fromarray(rgba, mode="RGBA")), HostileImage("alpha.png", (32, 32)))
    palette = Image.fromarray(_rgb(32, 32, 4)).convert("P", palette=Image.Palette.ADAPTIVE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=0)
    save(buffer.getvalue(), HostileImage("palette.png", (32, 32)))
    # too small to caption (min_image_side), but a valid ground-truth image
    save(_png_bytes(Image.fromarray(_rgb(1, 1, 5))),
         HostileImage("one_pixel.png", (1, 1), "smaller than the minimum side"))
    save(_png_bytes(Image.fromarray(_rgb(400, 2, 6))),
         HostileImage("extreme_aspect.png", (400, 2), "smaller than the minimum side"))
    save(decompression_bomb_png(), HostileImage("bomb.png", (12000, 12000), "above",
                                                evaluate_skip="above evaluate.max_image_pixels"))
    frames = [Image.fromarray(_rgb(24, 24, 7 + k)).convert("P") for k in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    save(buffer.getvalue(), HostileImage("animated.gif", (24, 24), caption_note="animated"))
    save(_png_bytes(Image.fromarray(_rgb(30, 20, 10))),
         HostileImage("png_named.jpg", (30, 20), caption_note="extension says JPEG"))
    save(_png_bytes(Image.fromarray(_rgb(20, 20, 11))), HostileImage("ünïcødé 画像.png", (20, 20)))
    (folder / "folder.jpg").mkdir(exist_ok=True)
    cases.append(HostileImage("folder.jpg", (10, 10), "not a regular file",
                              evaluate_skip="not a regular file"))
    # above PIXEL_LIMIT: captioning decodes a JPEG reduced (BLIP-2 sees 224 px anyway); the
    # evaluation needs every pixel of the ground truth, so it skips it
    save(_jpeg_bytes(Image.fromarray(_rgb(320, 240, 12))),
         HostileImage("large.jpg", (320, 240), caption_note="decoded reduced",
                      evaluate_skip="above evaluate.max_image_pixels"))
    save(_png_bytes(Image.fromarray(_rgb(320, 240, 13))),
         HostileImage("large.png", (320, 240), "above caption.max_image_pixels",
                      evaluate_skip="above evaluate.max_image_pixels"))
    cases.append(HostileImage("missing.jpg", (16, 16), "file not found",
                              evaluate_skip="file not found"))
    return cases


@dataclass(frozen=True)
class HostileCaption:
    name: str
    text: str
    # outcome after the caption and prompts stages: "prompt" (a prompt is made), or the stage
    # and a fragment of the skip reason
    outcome: str
    expect: str = ""          # for prompts: the cleaned caption
    classes: tuple[str, ...] = ("dog", "couch")   # for prompts: the COCO classes found in it


HOSTILE_CAPTIONS = [
    HostileCaption("plain", "A dog on a sofa.", "prompt", "A dog on a sofa."),
    HostileCaption("empty", "", "caption: the dataset has no caption"),
    HostileCaption("whitespace", " \t\n ", "caption: the dataset has no caption"),
    HostileCaption("huge", "a cat " * 2000, "prompts: prompts.max_caption_chars"),
    HostileCaption("nul", "A dog\x00 on a sofa.", "prompt", "A dog on a sofa."),
    HostileCaption("control", "A \x07dog\x1b[31m on a sofa.", "prompt", "A dog[31m on a sofa."),
    HostileCaption("only_controls", "\x00\x01\x02", "caption: the caption is empty"),
    HostileCaption("rtl", "כלב על ספה \u202edog", "prompt", "כלב על ספה dog", ("dog",)),
    HostileCaption("zero_width", "A d\u200bog on a so\u200dfa.", "prompt", "A dog on a sofa."),
    HostileCaption("surrogate", "A dog \ud83d on a sofa.", "prompt", "A dog \ufffd on a sofa."),
    HostileCaption("surrogate_pair", "A dog \ud83d\udc36 on a sofa.", "prompt",
                   "A dog \U0001f436 on a sofa."),
    HostileCaption("not_text", None, "caption: the dataset has no caption"),   # type: ignore
]


def write_hostile_coco(root: str | Path, *, caption_split: str = "train2017",
                       eval_split: str = "val2017") -> tuple[list[HostileImage],
                                                             dict[int, HostileCaption]]:
    """A COCO 2017 layout of the hostile corpus: the images in both splits with one "dog"
    annotation (a box-shaped polygon) each, sized as each image really is, and one hostile
    caption per caption-split image (the corpus' captions cycle over the images). Returns the
    images and {image id: caption} of the caption split."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    captions_by_id: dict[int, HostileCaption] = {}
    cases: list[HostileImage] = []
    for split in (caption_split, eval_split):
        cases = write_hostile_images(root / split)
        images, annotations, captions = [], [], []
        for index, case in enumerate(cases, start=1):
            width, height = case.size
            images.append({"id": index, "file_name": case.name, "width": width,
                           "height": height})
            x1, y1 = max(1, width // 2), max(1, height // 2)
            annotations.append({"id": index, "image_id": index, "category_id": 18,
                                "iscrowd": 0, "area": float(x1 * y1),
                                "bbox": [0.0, 0.0, float(x1), float(y1)],
                                "segmentation": [[0, 0, x1, 0, x1, y1, 0, y1]]})
            if split == caption_split:
                caption = HOSTILE_CAPTIONS[(index - 1) % len(HOSTILE_CAPTIONS)]
                captions_by_id[index] = caption
                captions.append({"id": index, "image_id": index, "caption": caption.text})
        categories = [{"id": 18, "name": "dog", "supercategory": "animal"}]
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}),
            encoding="utf-8")
        # ensure_ascii: lone surrogates are written as \\ud83d escapes, as a dataset's JSON may
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": captions}, ensure_ascii=True), encoding="utf-8")
    return cases, captions_by_id
