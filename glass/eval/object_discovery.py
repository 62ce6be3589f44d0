"""Per-image object-discovery metrics: mIoU (Hungarian), mBO and FG-ARI; same-class merging.

Definitions (glass-facts "Evaluation", after ocl and the official GLASS evaluation):

- Inputs are (H, W) integer maps: ``pred`` = slot index per pixel (argmax of the masks), ``gt`` =
  instance id (0 = background, ids need not be contiguous). ``ignore`` (bool) removes pixels from
  both maps: pixels of several instances, VOC's 255, crowd regions, as the caller's conventions say.
- GT regions are the ids present after ``ignore``; empty ones are dropped. With
  ``include_background=True`` (official GLASS default) id 0 is a region like any other; with False
  it is not a region, but its pixels still belong to the predicted segments (as in ocl, which
  drops the background target mask only).
- mIoU: Hungarian assignment (``scipy.optimize.linear_sum_assignment``) maximising the total IoU
  between GT regions and predicted segments; a GT region left unmatched (more regions than
  segments) scores 0; mean over GT regions.
- mBO: mean over GT regions of the best IoU with any predicted segment.
- FG-ARI: adjusted Rand index between ``gt`` and ``pred`` over the pixels with gt > 0 (equal to
  ``sklearn.metrics.adjusted_rand_score`` on those pixels). With fewer than two such pixels it is
  undefined: ``empty_fg_ari`` (NaN by default, as ocl/sklearn leave no meaningful value; the
  official GLASS evaluation scores such images 1.0).
- NaN where undefined (no GT region). Average over images with ``mean_metrics`` (NaN-aware).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["object_discovery", "same_class_merged", "mean_metrics"]


def _as_label_map(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) map, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise TypeError(f"{name} must hold integer ids, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def _valid_pixels(pred: np.ndarray, gt: np.ndarray,
                  ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _as_label_map("pred", pred), _as_label_map("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    if ignore is None:
        return pred.ravel(), gt.ravel()
    ignore = np.asarray(ignore)
    if ignore.shape != gt.shape or ignore.dtype != bool:
        raise ValueError(f"ignore must be a bool map of shape {gt.shape}, got "
                         f"{ignore.dtype} {ignore.shape}")
    keep = ~ignore.ravel()
    return pred.ravel()[keep], gt.ravel()[keep]


def _contingency(rows: np.ndarray, cols: np.ndarray):
    """(counts[i, j] = #pixels with rows == row_ids[i] and cols == col_ids[j], row_ids, col_ids)."""
    row_ids, row_index = np.unique(rows, return_inverse=True)
    col_ids, col_index = np.unique(cols, return_inverse=True)
    flat = row_index.astype(np.int64) * len(col_ids) + col_index
    counts = np.bincount(flat, minlength=len(row_ids) * len(col_ids))
    return counts.reshape(len(row_ids), len(col_ids)), row_ids, col_ids


def _pairs(counts: np.ndarray) -> int:
    """Σ n·(n-1)/2 as a Python int (exact for any image size)."""
    counts = counts.astype(np.int64, copy=False)
    return int((counts * (counts - 1) // 2).sum())


def adjusted_rand_index(counts: np.ndarray) -> float:
    """ARI from a contingency table, as sklearn computes it (pair counts, exact integers)."""
    n = int(counts.sum())
    same_both = _pairs(counts)
    same_rows, same_cols = _pairs(counts.sum(axis=1)), _pairs(counts.sum(axis=0))
    total = n * (n - 1) // 2
    # pair confusion: tp together in both, fn only in rows (truth), fp only in cols, tn neither
    tp, fn, fp = same_both, same_rows - same_both, same_cols - same_both
    tn = total - tp - fn - fp
    if fn == 0 and fp == 0:  # identical partitions (sklearn's special case)
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def object_discovery(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
                     include_background: bool = True,
                     empty_fg_ari: float = float("nan")) -> dict[str, float | int]:
    """Per-image {"miou", "mbo", "fg_ari", "num_gt_regions", "num_pred_segments"}."""
    pred_pixels, gt_pixels = _valid_pixels(pred, gt, ignore)
    counts, gt_ids, _ = _contingency(gt_pixels, pred_pixels)

    regions = counts if include_background else counts[gt_ids != 0]
    if len(regions):
        gt_area = regions.sum(axis=1, keepdims=True)
        pred_area = counts.sum(axis=0, keepdims=True)  # segments keep all their valid pixels
        iou = regions / (gt_area + pred_area - regions)
        matched_rows, matched_cols = linear_sum_assignment(iou, maximize=True)
        miou = float(iou[matched_rows, matched_cols].sum() / len(regions))
        mbo = float(iou.max(axis=1).mean())
    else:
        miou = mbo = math.nan

    foreground = counts[gt_ids > 0]
    if int(foreground.sum()) < 2:
        fg_ari = float(empty_fg_ari)
    else:
        fg_ari = adjusted_rand_index(foreground[:, foreground.sum(axis=0) > 0])
    return {"miou": miou, "mbo": mbo, "fg_ari": fg_ari, "num_gt_regions": int(len(regions)),
            "num_pred_segments": int(np.count_nonzero(counts.sum(axis=0)))}


def same_class_merged(pred: np.ndarray, gt_instances: np.ndarray, gt_classes: Mapping[int, object],
                      ignore: np.ndarray | None = None) -> bool | None:
    """Whether one predicted segment holds two instances of one class (> 50 % of each one's
    pixels); None when the image has no two (non-empty) instances of one class.

    ``gt_instances``: instance ids, 0 = background (never an instance); ``gt_classes``: class of
    every instance id present.
    """
    pred_pixels, gt_pixels = _valid_pixels(pred, gt_instances, ignore)
    counts, gt_ids, _ = _contingency(gt_pixels, pred_pixels)
    instances = gt_ids != 0
    counts, gt_ids = counts[instances], gt_ids[instances]
    missing = [int(i) for i in gt_ids if int(i) not in gt_classes]
    if missing:
        raise KeyError(f"gt_classes has no class for instance id(s) {missing}")
    classes = [gt_classes[int(i)] for i in gt_ids]
    if len(set(classes)) == len(classes):
        return None
    # A segment holding > 50 % of an instance is that instance's only such segment.
    share = counts / counts.sum(axis=1, keepdims=True)
    majority = np.where(share.max(axis=1) > 0.5, share.argmax(axis=1), -1)
    seen: set[tuple[object, int]] = set()
    for cls, segment in zip(classes, majority.tolist()):
        if segment < 0:
            continue
        if (cls, segment) in seen:
            return True
        seen.add((cls, segment))
    return False


def mean_metrics(per_image: Sequence[Mapping[str, float]],
                 names: Sequence[str] = ("miou", "mbo", "fg_ari")) -> dict[str, float]:
    """Per-image averaging (the official and ocl convention), skipping NaN; plus counts."""
    out: dict[str, float] = {}
    for name in names:
        values = np.array([r[name] for r in per_image], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[name] = float(finite.mean()) if len(finite) else math.nan
        out[f"{name}_images"] = int(len(finite))
    return out
