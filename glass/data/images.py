"""Reading real images defensively.

Datasets in the wild contain truncated downloads, empty files, CMYK JPEGs, 16-bit PNGs, images
with alpha or palettes, and files whose extension lies about their format. ``load_rgb_image``
turns each into either a plain 8-bit RGB image or an ``UnreadableImage`` error whose message says
what is wrong with which file, so callers can record a skip instead of crashing inside PIL.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from glass.errors import InvalidInput

# Default pixel limit: well above COCO (640 x 640) and VOC (500 x 375) images, far below what a
# decompression bomb declares (a 115-byte PNG can claim 12000 x 12000 = 144 M pixels).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# PIL's own name for the format each extension claims; used only to report mislabelled files.
_EXTENSION_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF",
                      ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


class UnreadableImage(InvalidInput):
    """An image that cannot be used; ``reason`` is a short human-readable explanation."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):   # picklable (Ray sends errors between processes)
        return type(self), (self.path, self.reason)


def format_mismatch(path: str | os.PathLike, actual_format: str | None) -> str | None:
    """A note when the file's extension names another format than its content, else None."""
    claimed = _EXTENSION_FORMATS.get(Path(path).suffix.lower())
    if claimed and actual_format and claimed != actual_format:
        return f"extension says {claimed} but the content is {actual_format}; decoded by content"
    return None


def _high_bit_depth_to_uint8(image: Image.Image) -> Image.Image:
    """Scale 16-bit / 32-bit integer and float greyscale to 8 bits (PIL's convert would clip)."""
    array = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    else:
        max_value = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
        scaled = array.astype(np.float64) / max_value
    return Image.fromarray(np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Plain 8-bit RGB: transparency is composited onto ``background`` (white by default),
    CMYK/YCbCr/LAB are colour-converted, high-bit-depth greyscale is rescaled."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _high_bit_depth_to_uint8(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, background + (255,))
        return Image.alpha_composite(canvas, image).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _reduce_on_load(opened: Image.Image, max_pixels: int) -> str | None:
    """Ask the decoder for a reduced image (JPEG's DCT scaling by 1/2, 1/4 or 1/8) so that it
    holds at most ``max_pixels`` pixels; a note saying so, or None when the format cannot."""
    if opened.format != "JPEG":
        return None
    width, height = opened.size
    scale = next((s for s in (2, 4, 8) if math.ceil(width / s) * math.ceil(height / s)
                  <= max_pixels), 8)
    opened.draft(opened.mode, (max(1, width // scale), max(1, height // scale)))
    if opened.size[0] * opened.size[1] > max_pixels:
        return None
    return (f"decoded reduced to {opened.size[0]}x{opened.size[1]} from {width}x{height} "
            "(above the pixel limit)")


def decode_image(path: str | os.PathLike, *, max_pixels: int | None = None,
                 reduce_large: bool = False, pixel_limit_key: str = "max_image_pixels",
                 convert: Callable[[Image.Image], Image.Image] | None = None
                 ) -> tuple[Image.Image, list[str]]:
    """Open and fully decode ``path`` (then ``convert`` it, e.g. to RGB): (image, notes), or
    UnreadableImage with the reason.

    ``notes`` lists harmless oddities worth recording (a mislabelled extension, an animation of
    which the first frame was used, a reduced decode). An image whose header declares more than
    ``max_pixels`` pixels is refused before it is decoded (a few bytes can declare gigabytes),
    unless ``reduce_large`` and the format can decode it reduced below the limit (JPEG).
    ``pixel_limit_key`` names the param in the refusal.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableImage(path, "file not found")
    if not path.is_file():
        raise UnreadableImage(path, "not a regular file")
    if path.stat().st_size == 0:
        raise UnreadableImage(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as opened:
            notes = [note] if (note := format_mismatch(path, opened.format)) else []
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                reduced = _reduce_on_load(opened, max_pixels) if reduce_large else None
                if reduced is None:
                    raise UnreadableImage(path, f"image declares {width}x{height} = "
                                                f"{width * height:,} pixels, above "
                                                f"{pixel_limit_key} = {max_pixels:,}; raise the "
                                                "param if the image is genuine")
                notes.append(reduced)
            if getattr(opened, "n_frames", 1) > 1:
                notes.append(f"animated ({opened.n_frames} frames): the first frame is used")
            opened.load()  # decodes fully, so truncation surfaces here and not later
            image = convert(opened) if convert is not None else opened.copy()
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not a recognisable image format") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImage(path, f"image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImage(path, f"cannot decode image ({error}); the file is probably "
                                    "truncated or corrupt: re-download it") from None
    return image, notes


def load_rgb_image(path: str | os.PathLike, *, min_side: int = 1, max_pixels: int | None = None,
                   reduce_large: bool = False,
                   pixel_limit_key: str = "max_image_pixels") -> tuple[Image.Image, list[str]]:
    """Open ``path`` as 8-bit RGB (``decode_image`` with ``to_rgb``). Returns (image, notes);
    raises UnreadableImage with a reason, also for images with a side below ``min_side``."""
    image, notes = decode_image(path, max_pixels=max_pixels, reduce_large=reduce_large,
                                pixel_limit_key=pixel_limit_key, convert=to_rgb)
    width, height = image.size
    if min(width, height) < min_side:
        raise UnreadableImage(path, f"image is {width}x{height} px, smaller than the minimum side "
                                    f"of {min_side} px")
    return image, notes
