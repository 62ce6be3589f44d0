"""Image grids for people: images beside their label maps (pseudo masks, slot masks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from glass.io import atomic_open
from glass.shard_format import UNSURE_LABEL

UNSURE_COLOUR = (255, 255, 255)
BACKGROUND_COLOUR = (0, 0, 0)


def label_palette(count: int) -> np.ndarray:
    """``count`` well-separated colours (golden-ratio hues); index 0 is background (black)."""
    colours = [BACKGROUND_COLOUR]
    for k in range(1, count):
        hue = (k * 0.618033988749895) % 1.0
        sector, fraction = divmod(hue * 6.0, 1.0)
        value, low = 230, 60
        rising, falling = low + (value - low) * fraction, value - (value - low) * fraction
        rgb = [(value, rising, low), (falling, value, low), (low, value, rising),
               (low, falling, value), (rising, low, value), (value, low, falling)][int(sector)]
        colours.append(tuple(int(c) for c in rgb))
    return np.array(colours, dtype=np.uint8)


def colourise_labels(labels: np.ndarray, unsure: int | None = UNSURE_LABEL) -> np.ndarray:
    """(H, W) integer labels → (H, W, 3) uint8; ``unsure`` pixels are white."""
    labels = np.asarray(labels)
    finite = labels[labels != unsure] if unsure is not None else labels
    palette = label_palette(int(finite.max()) + 1 if finite.size else 1)
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = labels != unsure if unsure is not None else np.ones(labels.shape, bool)
    out[valid] = palette[labels[valid].astype(np.int64)]
    if unsure is not None:
        out[~valid] = UNSURE_COLOUR
    return out


def tensor_to_image(image) -> np.ndarray:
    """A (3, H, W) torch tensor in [0, 1] → (H, W, 3) uint8 for a grid panel."""
    array = image.detach().float().cpu().permute(1, 2, 0).numpy()
    return (array * 255).round().clip(0, 255).astype(np.uint8)


def _to_rgb_tile(panel: np.ndarray, size: int) -> np.ndarray:
    if panel.ndim == 2:
        panel = colourise_labels(panel)
    image = Image.fromarray(panel.astype(np.uint8))
    return np.asarray(image.resize((size, size), Image.NEAREST))


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]], *, tile: int = 128,
              gap: int = 2) -> None:
    """One row per sample; each panel an (H, W, 3) image or an (H, W) label map (colourised)."""
    if not rows:
        raise ValueError("save_grid needs at least one row")
    columns = max(len(row) for row in rows)
    height = len(rows) * tile + (len(rows) - 1) * gap
    width = columns * tile + (columns - 1) * gap
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            y, x = r * (tile + gap), c * (tile + gap)
            canvas[y:y + tile, x:x + tile] = _to_rgb_tile(np.asarray(panel), tile)
    with atomic_open(path, "wb") as handle:
        Image.fromarray(canvas).save(handle, format="PNG")
