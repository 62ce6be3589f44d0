"""Held-out reference for per-image object-discovery metrics (mIoU, mBO, FG-ARI).

Written only from the written specification, without looking at glass/eval, so that a test can
compare the two independently. It is deliberately slow and literal: pixels are handled as Python
sets of flat indices, the optimal assignment is found by trying every permutation, and the ARI is
computed by classifying every pair of pixels. Keep maps small (a few hundred pixels, at most about
six regions and six segments) when calling it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

NAN = float("nan")


def _remaining_pixels(pred, gt, ignore):
    """(pred id, gt id) for each pixel not ignored, in row-major order.

    Ignored pixels are dropped before anything else, so they count in no region, no segment
    and no pair."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must be the same (H, W) shape")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore {ignore.shape} must match gt {gt.shape}")
    height, width = gt.shape
    pixels = []
    for i in range(height):
        for j in range(width):
            if ignore is not None and ignore[i, j]:
                continue
            pixels.append((int(pred[i, j]), int(gt[i, j])))
    return pixels


def _group(labels):
    """id -> set of positions (indices into the remaining-pixel list) carrying that id."""
    groups: dict[int, set[int]] = {}
    for position, label in enumerate(labels):
        groups.setdefault(label, set()).add(position)
    return groups


def _iou(a: set[int], b: set[int]) -> float:
    union = a | b
    # Both sets come from present ids, so they are non-empty and the union never is.
    return len(a & b) / len(union)


def _best_assignment_total(iou: list[list[float]]) -> float:
    """Largest total IoU over one-to-one matchings of rows (regions) to columns (segments).

    Every way to pair min(rows, cols) of them is tried: when there are at most as many regions
    as segments, each region gets a distinct segment (ordered choices of segments); otherwise
    each segment gets a distinct region and the remaining regions are unmatched (score 0)."""
    n_regions = len(iou)
    n_segments = len(iou[0]) if n_regions else 0
    if n_regions == 0 or n_segments == 0:
        return 0.0
    best = -1.0
    if n_regions <= n_segments:
        for segs in itertools.permutations(range(n_segments), n_regions):
            total = sum(iou[r][segs[r]] for r in range(n_regions))
            best = max(best, total)
    else:
        for regs in itertools.permutations(range(n_regions), n_segments):
            total = sum(iou[regs[s]][s] for s in range(n_segments))
            best = max(best, total)
    return best


def pair_counts(labels_a, labels_b) -> tuple[int, int, int, int]:
    """Classify every unordered pair of items by whether each labelling puts it together.

    Returns (both_same, only_a_same, only_b_same, both_different)."""
    if len(labels_a) != len(labels_b):
        raise ValueError("labellings must have the same length")
    both_same = only_a = only_b = both_diff = 0
    n = len(labels_a)
    for x in range(n):
        ax, bx = labels_a[x], labels_b[x]
        for y in range(x + 1, n):
            same_a = ax == labels_a[y]
            same_b = bx == labels_b[y]
            if same_a and same_b:
                both_same += 1
            elif same_a:
                only_a += 1
            elif same_b:
                only_b += 1
            else:
                both_diff += 1
    return both_same, only_a, only_b, both_diff


def adjusted_rand_index(labels_a, labels_b) -> float:
    """Hubert-Arabie ARI from pair counts; NaN for fewer than two items.

    With a = pairs together in both, b = together only in A, c = together only in B,
    d = apart in both, ARI = 2(ad - bc) / ((a + b)(b + d) + (a + c)(c + d)), which is the usual
    (index - expected) / (max - expected) written in pair counts. As in
    sklearn.metrics.adjusted_rand_score, two partitions that never disagree on a pair (b = c = 0,
    i.e. identical up to relabelling, including both all-one-cluster) score exactly 1."""
    if len(labels_a) < 2:
        return NAN
    a, b, c, d = pair_counts(labels_a, labels_b)
    if b == 0 and c == 0:
        return 1.0
    # With b > 0 or c > 0 the denominator is at least b*b or c*c, so never zero here.
    return 2.0 * (a * d - b * c) / ((a + b) * (b + d) + (a + c) * (c + d))


def reference_object_discovery(pred, gt, ignore=None, include_background=True) -> dict:
    """Per-image {"miou", "mbo", "fg_ari", "num_gt_regions", "num_pred_segments"}."""
    pixels = _remaining_pixels(pred, gt, ignore)
    pred_labels = [p for p, _ in pixels]
    gt_labels = [g for _, g in pixels]

    # Segments: every pred id on a remaining pixel, background pixels included.
    segments = _group(pred_labels)
    # Regions: every gt id on a remaining pixel; id 0 only when the background counts as one.
    # Dropping region 0 does not touch the segments, so background pixels still enlarge them.
    regions = _group(gt_labels)
    if not include_background:
        regions.pop(0, None)

    region_ids = sorted(regions)
    segment_ids = sorted(segments)
    iou = [[_iou(regions[r], segments[s]) for s in segment_ids] for r in region_ids]

    if region_ids:
        # A region has at least one remaining pixel, so there is always at least one segment.
        mbo = sum(max(row) for row in iou) / len(region_ids)
        # Unmatched regions add 0 to the total but still count in the denominator.
        miou = _best_assignment_total(iou) / len(region_ids)
    else:
        mbo = NAN
        miou = NAN

    fg = [(p, g) for p, g in pixels if g > 0]
    fg_ari = adjusted_rand_index([g for _, g in fg], [p for p, _ in fg])

    return {
        "miou": float(miou),
        "mbo": float(mbo),
        "fg_ari": float(fg_ari),
        "num_gt_regions": len(region_ids),
        "num_pred_segments": len(segment_ids),
    }


def same_value(x: float, y: float, tol: float = 1e-6) -> bool:
    """Equal within tol, with NaN equal only to NaN."""
    x, y = float(x), float(y)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= tol
