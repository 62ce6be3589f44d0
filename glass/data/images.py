"""Reading real images defensively.

Datasets in the wild contain truncated downloads, empty files, CMYK JPEGs, 16-bit PNGs, images
with alpha or palettes, and files whose extension lies about their format. ``load_rgb_image``
turns each into either a plain 8-bit RGB image or an ``UnreadableImage`` error whose message says
what is wrong with which file, so callers can record a skip instead of crashing inside PIL.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL's own name for the format each extension claims; used only to report mislabelled files.
_EXTENSION_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF",
                      ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


class UnreadableImage(Exception):
    """An image that cannot be used; ``reason`` is a short human-readable explanation."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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


def load_rgb_image(path: str | os.PathLike, *, min_side: int = 1) -> tuple[Image.Image, list[str]]:
    """Open ``path`` as 8-bit RGB. Returns (image, notes); raises UnreadableImage with a reason.

    ``notes`` lists harmless oddities worth recording (e.g. a mislabelled extension).
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
            opened.load()  # decodes fully, so truncation surfaces here and not later
            image = to_rgb(opened)
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not a recognisable image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImage(path, f"cannot decode image ({error}); the file is probably "
                                    "truncated or corrupt: re-download it") from None
    except Image.DecompressionBombError as error:
        raise UnreadableImage(path, f"image too large to decode safely ({error})") from None
    width, height = image.size
    if min(width, height) < min_side:
        raise UnreadableImage(path, f"image is {width}x{height} px, smaller than the minimum side "
                                    f"of {min_side} px")
    return image, notes
