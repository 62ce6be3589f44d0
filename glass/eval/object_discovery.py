"""Per-image object-discovery metrics: mIoU (Hungarian), mBO and FG-ARI; same-class merging.

Definitions (docs/paper-facts.md "Evaluation", after ocl and the official GLASS evaluation):

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
  ``sklearn.metrics.adjusted_rand_score`` on those pixels). With fewer than two such pixels the
  index has no pairs to count: ``empty_fg_ari``, 1.0 by default, as the official GLASS evaluation,
  ocl (``torch.where(denominator > 0, ari, 1)``) and sklearn (identical labelings) all give;
  NaN leaves such images out of the mean.
- NaN where undefined (no GT region). Average over images with ``mean_metrics`` (NaN-aware).

Averaging (docs/paper-facts.md "Evaluation": per-image vs per-object averaging differ between papers, so
both are offered). ``mean_metrics(..., averaging="image")`` (default; the official GLASS and ocl
convention) averages the per-image scores. ``averaging="object"`` pools the GT regions of all
images and averages mIoU/mBO over regions, so images with many objects weigh more; it needs the
per-region arrays of ``object_discovery(..., return_regions=True)``. FG-ARI is an image-level
score (a Rand index over one image's pixel pairs) with no per-region part, so it is averaged per
image in both modes.

Class-level metrics (mIoU_c, mBO_c; paper Table 2/9): the same mIoU/mBO with the GT regions being
semantic classes instead of instances: ``class_map`` turns an instance map into a class map and
``semantic_discovery`` scores the predicted segments against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["object_discovery", "same_class_merged", "mean_metrics", "class_map",
           "semantic_discovery"]

# Keys of the per-GT-region arrays added by ``return_regions=True``.
REGION_KEYS = ("region_ids", "region_areas", "region_matched_iou", "region_best_iou")
# metric name -> per-region array that ``averaging="object"`` pools for it
_OBJECT_AVERAGED = {"miou": "region_matched_iou", "mbo": "region_best_iou"}


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


def labels_ari(pred: np.ndarray, truth: np.ndarray) -> float:
    """ARI of two label arrays of the same shape (every element counted)."""
    return adjusted_rand_index(_contingency(np.ravel(pred), np.ravel(truth))[0])


def object_discovery(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
                     include_background: bool = True,
                     empty_fg_ari: float = 1.0,
                     return_regions: bool = False) -> dict:
    """Per-image {"miou", "mbo", "fg_ari", "num_gt_regions", "num_pred_segments"}.

    With ``return_regions=True`` the dict also holds one entry per GT region (in increasing id
    order; the regions the scores average over, so id 0 only with ``include_background``):
    ``region_ids`` (int64), ``region_areas`` (valid pixels, int64), ``region_matched_iou``
    (IoU with the Hungarian-matched segment, 0 for an unmatched region) and ``region_best_iou``
    (best IoU with any segment), both float64. Their means are "miou" and "mbo".
    """
    pred_pixels, gt_pixels = _valid_pixels(pred, gt, ignore)
    counts, gt_ids, _ = _contingency(gt_pixels, pred_pixels)

    keep = np.ones(len(gt_ids), bool) if include_background else gt_ids != 0
    regions = counts[keep]
    matched_iou = np.zeros(len(regions))
    best_iou = np.zeros(len(regions))
    if len(regions):
        gt_area = regions.sum(axis=1, keepdims=True)
        pred_area = counts.sum(axis=0, keepdims=True)  # segments keep all their valid pixels
        iou = regions / (gt_area + pred_area - regions)
        matched_rows, matched_cols = linear_sum_assignment(iou, maximize=True)
        miou = float(iou[matched_rows, matched_cols].sum() / len(regions))
        best_iou = iou.max(axis=1)
        mbo = float(best_iou.mean())
        matched_iou[matched_rows] = iou[matched_rows, matched_cols]
    else:
        miou = mbo = math.nan

    foreground = counts[gt_ids > 0]
    if int(foreground.sum()) < 2:
        fg_ari = float(empty_fg_ari)
    else:
        fg_ari = adjusted_rand_index(foreground[:, foreground.sum(axis=0) > 0])
    result: dict = {"miou": miou, "mbo": mbo, "fg_ari": fg_ari,
                    "num_gt_regions": int(len(regions)),
                    "num_pred_segments": int(np.count_nonzero(counts.sum(axis=0)))}
    if return_regions:
        result.update(region_ids=gt_ids[keep].astype(np.int64),
                      region_areas=regions.sum(axis=1).astype(np.int64),
                      region_matched_iou=matched_iou.astype(np.float64),
                      region_best_iou=np.asarray(best_iou, dtype=np.float64))
    return result


def _class_sort_key(cls: int | str) -> tuple[int, int | str]:
    # ints before strings, then natural order within each kind: a total order even when one
    # mapping mixes both kinds, and independent of the mapping's insertion order
    return (0, cls) if isinstance(cls, int) else (1, cls)


def _class_label(instance_id: int, cls: object) -> int | str:
    if isinstance(cls, (bool, np.bool_)) or not isinstance(cls, (int, np.integer, str)):
        raise TypeError(f"class of instance {instance_id} must be an int or a str, "
                        f"got {type(cls).__name__} {cls!r}")
    return str(cls) if isinstance(cls, str) else int(cls)


def _present_classes(instances: np.ndarray, instance_classes: Mapping[int, object]
                     ) -> tuple[np.ndarray, list[int | str], np.ndarray]:
    """(instance map as int64, sorted classes present, instance id -> position in that list + 1)."""
    instances = _as_label_map("instances", instances)
    ids = np.unique(instances)
    if len(ids) and ids[0] < 0:
        raise ValueError(f"instance ids must be >= 0 (0 = background), got {int(ids[0])}")
    ids = ids[ids > 0]
    missing = [int(i) for i in ids if int(i) not in instance_classes]
    if missing:
        raise KeyError(f"instance_classes has no class for instance id(s) {missing}")
    labels = [_class_label(int(i), instance_classes[int(i)]) for i in ids]
    classes = sorted(set(labels), key=_class_sort_key)
    class_id = {cls: k + 1 for k, cls in enumerate(classes)}
    return instances, classes, np.array([class_id[label] for label in labels], dtype=np.int64)


def class_map(instances: np.ndarray, instance_classes: Mapping[int, object]) -> np.ndarray:
    """(H, W) int64 semantic map from an (H, W) instance map: 0 = background, 1..K = classes.

    ``instances``: instance ids, 0 = background (never an instance; a class given for id 0 is not
    used), ids >= 0. ``instance_classes``: {instance id: class (int or str)}; every id present must
    have one, entries for ids absent from the map are not used. All instances of one class get one
    id. Id assignment is deterministic: the K classes present are sorted (int classes in numeric
    order, then str classes in lexicographic order; an int and a str are distinct classes even
    if they read alike) and get ids 1..K in that order, whatever the mapping's order. Ids depend
    on the classes present in the image, so they are not comparable across images.
    """
    instances, _, class_of_instance = _present_classes(instances, instance_classes)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    out = np.zeros(instances.shape, dtype=np.int64)
    if len(ids):
        foreground = instances > 0
        out[foreground] = class_of_instance[np.searchsorted(ids, instances[foreground])]
    return out


def semantic_discovery(pred: np.ndarray, instances: np.ndarray,
                       instance_classes: Mapping[int, object], ignore: np.ndarray | None = None,
                       include_background: bool = True, return_regions: bool = False) -> dict:
    """Class-level {"miou", "mbo"} (mIoU_c, mBO_c; paper Table 2/9) of one image.

    Exactly ``object_discovery`` scored against ``class_map(instances, instance_classes)``: the
    GT regions are the classes present (plus the background with ``include_background``), so a
    segment covering two instances of one class is rewarded instead of penalised. ``ignore``
    removes pixels from both maps as in ``object_discovery``. With ``return_regions=True`` the
    per-region arrays of ``object_discovery`` are added (ids being class-map ids), together with
    ``region_classes``: the class of each region (None for the background).
    """
    semantic = class_map(instances, instance_classes)
    result = object_discovery(pred, semantic, ignore=ignore, include_background=include_background,
                              return_regions=return_regions)
    out: dict = {"miou": result["miou"], "mbo": result["mbo"]}
    if return_regions:
        _, classes, _ = _present_classes(instances, instance_classes)
        out.update({key: result[key] for key in REGION_KEYS})
        out["region_classes"] = [None if i == 0 else classes[int(i) - 1]
                                 for i in result["region_ids"]]
    return out


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
                 names: Sequence[str] = ("miou", "mbo", "fg_ari"),
                 averaging: str = "image") -> dict[str, float]:
    """Dataset means of per-image results, skipping NaN; plus counts.

    ``averaging="image"`` (official GLASS and ocl default, docs/paper-facts.md "Evaluation"): mean of
    the per-image values; ``{name}_images`` = number of images with a finite value.
    ``averaging="object"``: "miou" and "mbo" are the means over all GT regions pooled across
    images (``region_matched_iou`` / ``region_best_iou`` from
    ``object_discovery(..., return_regions=True)``, ValueError if missing); ``{name}_regions``
    = number of regions pooled and ``{name}_images`` = number of images with at least one.
    Every other name (FG-ARI included: it has no per-region part) is averaged per image in both
    modes.
    """
    if averaging not in ("image", "object"):
        raise ValueError(f'averaging must be "image" or "object", got {averaging!r}')
    out: dict[str, float] = {}
    for name in names:
        if averaging == "object" and name in _OBJECT_AVERAGED:
            key = _OBJECT_AVERAGED[name]
            missing = [k for k, r in enumerate(per_image) if key not in r]
            if missing:
                raise ValueError(f'averaging="object" needs per-region "{key}" in every image '
                                 f"result (object_discovery(..., return_regions=True)); "
                                 f"missing in image(s) {missing[:5]}")
            arrays = [np.asarray(r[key], dtype=np.float64).ravel() for r in per_image]
            pooled = np.concatenate(arrays) if arrays else np.zeros(0)
            pooled = pooled[~np.isnan(pooled)]
            out[name] = float(pooled.mean()) if len(pooled) else math.nan
            out[f"{name}_regions"] = int(len(pooled))
            out[f"{name}_images"] = int(sum(bool(np.isfinite(a).any()) for a in arrays))
            continue
        values = np.array([r[name] for r in per_image], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[name] = float(finite.mean()) if len(finite) else math.nan
        out[f"{name}_images"] = int(len(finite))
    return out
