"""Semantic guidance: Hungarian slot matching and the BCE loss (paper Sec. 4 "Slot matching",
Eqs. 2–3; supplement "Pseudo labels"; docs/paper-facts.md "Model").

The pseudo mask of a generated image holds 0 for background, 1..K for its classes and 255 for
"unsure" pixels (objectness between 0.4 and 0.6), which the loss ignores. Each label present is one
segment. The slots' attention masks are resized to the pseudo-mask resolution, matched one-to-one
to the segments by maximising IoU (Hungarian algorithm; with more segments than slots only as many
segments as slots are matched), and each matched slot's mask is pulled towards its segment with a
binary cross-entropy over the certain pixels. Unmatched slots get no semantic loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from glass.shard_format import UNSURE_LABEL

Match = tuple[int, int]  # (slot index, segment index)


def pseudo_mask_segments(mask: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask`` (H, W) uint8 → (segments (F, H, W) bool, valid (H, W) bool).

    One segment per label present among the certain pixels, in ascending label order: the
    background (label 0) first when it has any pixel, then the classes. ``valid`` is
    ``mask != 255``. An image whose pixels are all 255 has no segment (F = 0).
    """
    mask = torch.as_tensor(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a pseudo mask of shape (H, W), got {tuple(mask.shape)}")
    valid = mask != UNSURE_LABEL
    labels = torch.unique(mask[valid])  # sorted ascending
    segments = mask.unsqueeze(0) == labels.view(-1, 1, 1)
    return segments, valid


def soft_iou(slot_masks: torch.Tensor, segments: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(K, F) soft IoU between slot probabilities (K, H, W) and binary segments (F, H, W) over the
    valid pixels only: Σ p·s / Σ (p + s − p·s). 0 where both are empty."""
    valid = valid.to(slot_masks.dtype)
    probabilities = slot_masks * valid
    targets = segments.to(slot_masks.dtype) * valid
    intersection = torch.einsum("khw,fhw->kf", probabilities, targets)
    union = (probabilities.sum(dim=(1, 2)).unsqueeze(1) + targets.sum(dim=(1, 2)).unsqueeze(0)
             - intersection)
    return intersection / union.clamp_min(1e-12)


def hungarian_match(slot_masks: torch.Tensor, segments: torch.Tensor,
                    valid: torch.Tensor) -> list[Match]:
    """One-to-one assignment of slots to segments maximising the total soft IoU (paper Eq. 2, cost
    −IoU). Returns min(K, F) pairs (slot, segment), sorted by slot; [] when F == 0."""
    if slot_masks.shape[0] == 0 or segments.shape[0] == 0:
        return []
    iou = soft_iou(slot_masks.detach().float(), segments, valid)
    slots, segment_ids = linear_sum_assignment(iou.cpu().double().numpy(), maximize=True)
    return [(int(slot), int(segment)) for slot, segment in zip(slots, segment_ids)]


def semantic_guidance_loss(
    slot_attention: torch.Tensor,
    grid_size: tuple[int, int] | list[int],
    pseudo_masks: torch.Tensor,
) -> tuple[torch.Tensor, list[list[Match]]]:
    """BCE between matched slot masks and pseudo-mask segments.

    ``slot_attention`` (B, K, N): softmax-over-slots attention, N = rows·columns of ``grid_size``
    (row-major). ``pseudo_masks`` (B, H, W) uint8. The slot masks are resized bilinearly to
    (H, W); matching uses them detached, the BCE the live ones, over pixels != 255 only. The loss
    is the mean over matched pairs (and their certain pixels) per image, then over the images that
    have certain pixels; 0 (still attached to the graph) when no image has any. Returns the loss and
    the matches of every image.
    """
    batch, num_slots, num_tokens = slot_attention.shape
    rows, columns = grid_size
    if rows * columns != num_tokens:
        raise ValueError(f"grid {rows}x{columns} does not match {num_tokens} attention tokens")
    if pseudo_masks.ndim != 3 or pseudo_masks.shape[0] != batch:
        raise ValueError(f"expected pseudo masks (B={batch}, H, W), "
                         f"got {tuple(pseudo_masks.shape)}")
    height, width = pseudo_masks.shape[-2:]
    pseudo_masks = pseudo_masks.to(slot_attention.device)
    # BCE is not autocast-safe: compute in float32 whatever the surrounding precision.
    with torch.autocast(device_type=slot_attention.device.type, enabled=False):
        masks = slot_attention.float().reshape(batch, num_slots, rows, columns)
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)
        # Bilinear weights are convex, so this only removes rounding overshoot.
        masks = masks.clamp(0.0, 1.0)
        image_losses: list[torch.Tensor] = []
        all_matches: list[list[Match]] = []
        for index in range(batch):
            segments, valid = pseudo_mask_segments(pseudo_masks[index])
            matches = hungarian_match(masks[index], segments, valid)
            all_matches.append(matches)
            if not matches:
                continue
            slot_ids = torch.tensor([slot for slot, _ in matches], device=masks.device)
            segment_ids = torch.tensor([segment for _, segment in matches], device=masks.device)
            predicted = masks[index, slot_ids][:, valid]          # (M, valid pixels)
            target = segments[segment_ids][:, valid].float()
            image_losses.append(F.binary_cross_entropy(predicted, target))
        if not image_losses:
            return slot_attention.sum() * 0.0, all_matches
        return torch.stack(image_losses).mean(), all_matches
