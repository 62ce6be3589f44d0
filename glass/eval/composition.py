"""Compositional generation (paper Sec. 5.2, Fig. 6): remove an object by removing its slot, or add
an object by appending a slot taken from another image, then generate with the diffusion decoder.

The UNet cross-attends to however many slots it is given (they replace the text tokens), so an
edit is a change of the conditioning set. The original reconstruction and both edits of an image
share their diffusion noise (seeded by the image key), so the differences come from the edit.
The edited slot is the one that best overlaps (IoU) the largest ground-truth instance; its mask is
outlined in the grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from glass.model import GlassModel
from glass.model.inference import add_slot, remove_slot, slot_masks_to_labels
from glass.viz import tensor_to_image

OUTLINE_COLOUR = (255, 32, 32)


def object_slot(slot_map: np.ndarray, instances: np.ndarray | None) -> int:
    """The slot with the highest IoU against the largest ground-truth instance (id > 0); without
    instances, the slot covering the most pixels."""
    slot_ids, slot_areas = np.unique(slot_map, return_counts=True)
    if instances is None or not np.any(instances > 0):
        return int(slot_ids[np.argmax(slot_areas)])
    ids, areas = np.unique(instances[instances > 0], return_counts=True)
    target = instances == ids[np.argmax(areas)]
    best, best_iou = int(slot_ids[0]), -1.0
    for slot in slot_ids:
        region = slot_map == slot
        iou = np.logical_and(region, target).sum() / np.logical_or(region, target).sum()
        if iou > best_iou:
            best, best_iou = int(slot), float(iou)
    return best


def outline(image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = OUTLINE_COLOUR,
            width: int = 1) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with the boundary of ``mask`` drawn in ``colour``
    (mask pixels with a 4-neighbour outside the mask, grown ``width`` times)."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(width):
        padded = np.pad(inner, 1, mode="constant", constant_values=False)
        inner = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
                 & padded[1:-1, :-2] & padded[1:-1, 2:])
    out = np.array(image, dtype=np.uint8, copy=True)
    out[mask & ~inner] = np.asarray(colour, dtype=np.uint8)
    return out


def composition_rows(model: GlassModel, images: Sequence[torch.Tensor], keys: list[str],
                     instances: Sequence[np.ndarray | None], num_inference_steps: int,
                     mask_source: str = "slot_attention", seed: int = 0, *,
                     sampler: str = "ddim",
                     guidance_scale: float = 1.0) -> list[list[np.ndarray]]:
    """One grid row per image i (``images``: (1, 3, H, W) tensors, any size), with image i+1
    (cyclically) as the donor: [input with the edited slot outlined, slot masks, reconstruction,
    slot removed, donor with its slot outlined, donor slot added]. ``instances``: ground truth
    at each image's size (or None). ``sampler``, ``guidance_scale``: ``GlassModel.generate``."""
    if len(images) < 2:
        raise ValueError("compositional generation needs at least two images (one is the donor)")
    conditioning, maps = [], []
    for image, key in zip(images, keys, strict=True):
        slots = model.infer_slots(image, [key], seed)
        conditioning.append(slots.conditioning[0])
        maps.append(slot_masks_to_labels(model.soft_masks(slots, tuple(image.shape[-2:]),
                                                          mask_source))[0].cpu().numpy())
    chosen = [object_slot(maps[i], instances[i]) for i in range(len(keys))]
    rows = []
    for i, key in enumerate(keys):
        donor = (i + 1) % len(keys)
        def generate(slot_set: torch.Tensor) -> torch.Tensor:
            return model.generate(slot_set[None], [key], seed, num_inference_steps,
                                  sampler=sampler, guidance_scale=guidance_scale)[0]

        reconstruction = generate(conditioning[i])
        removed = generate(remove_slot(conditioning[i], chosen[i]))
        added = generate(add_slot(conditioning[i], conditioning[donor][chosen[donor]]))
        rows.append([outline(tensor_to_image(images[i][0]), maps[i] == chosen[i]), maps[i] + 1,
                     tensor_to_image(reconstruction), tensor_to_image(removed),
                     outline(tensor_to_image(images[donor][0]), maps[donor] == chosen[donor]),
                     tensor_to_image(added)])
    return rows
