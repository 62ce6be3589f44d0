import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from glass.eval import object_discovery, same_class_merged
from glass.eval.object_discovery import mean_metrics

# 4×4: background 0 (8 px), instance 1 (left 2×2), instance 2 (right 2×2, rows 2-3)
GT = np.array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 2, 2],
               [0, 0, 2, 2]])
# slot 0 covers background + one pixel of instance 1, slot 1 the rest of instance 1,
# slot 2 exactly instance 2
PRED = np.array([[0, 1, 0, 0],
                 [1, 1, 0, 0],
                 [0, 0, 2, 2],
                 [0, 0, 2, 2]])


def test_hand_computed_case_with_and_without_background():
    # IoU(bg, slot0) = 8/9, IoU(inst1, slot1) = 3/4, IoU(inst2, slot2) = 1
    result = object_discovery(PRED, GT)
    assert result["num_gt_regions"] == 3 and result["num_pred_segments"] == 3
    assert result["miou"] == pytest.approx((8 / 9 + 3 / 4 + 1) / 3)
    assert result["mbo"] == pytest.approx((8 / 9 + 3 / 4 + 1) / 3)
    fg = object_discovery(PRED, GT, include_background=False)
    assert fg["num_gt_regions"] == 2
    assert fg["miou"] == pytest.approx((3 / 4 + 1) / 2) == fg["mbo"]


def test_hungarian_is_one_to_one_while_best_overlap_is_not():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[0, 0, 0, 0]])  # one slot covers both objects
    result = object_discovery(pred, gt, include_background=False)
    # each object has IoU 1/2 with the slot; only one may be matched
    assert result["mbo"] == pytest.approx(0.5)
    assert result["miou"] == pytest.approx(0.25)


def test_more_gt_regions_than_slots_scores_unmatched_regions_zero():
    gt = np.array([[1, 2, 3, 4]])
    pred = np.array([[0, 1, 0, 1]])
    result = object_discovery(pred, gt, include_background=False)
    # two regions matched with IoU 1/2 each, two unmatched → (0.5 + 0.5 + 0 + 0) / 4
    assert result["miou"] == pytest.approx(0.25) and result["mbo"] == pytest.approx(0.5)


def test_ignored_pixels_leave_both_maps_and_empty_regions_drop():
    gt = np.array([[1, 1, 2, 2, 3]])
    pred = np.array([[0, 0, 1, 5, 5]])
    ignore = np.array([[False, False, False, True, True]])  # region 3 disappears entirely
    result = object_discovery(pred, gt, ignore=ignore, include_background=False)
    assert result["num_gt_regions"] == 2
    assert result["miou"] == pytest.approx(1.0) and result["num_pred_segments"] == 2
    with pytest.raises(ValueError, match="bool"):
        object_discovery(pred, gt, ignore=ignore.astype(int))


def test_ids_need_not_be_contiguous():
    base = object_discovery(PRED, GT)
    relabelled = object_discovery(np.choose(PRED, [40, 7, 13]), np.choose(GT, [0, 901, 55]))
    assert relabelled == base


def test_no_gt_region_is_nan_and_empty_foreground_follows_the_option():
    gt = np.zeros((3, 3), int)
    pred = np.arange(9).reshape(3, 3) % 2
    only_background = object_discovery(pred, gt, include_background=False)
    assert math.isnan(only_background["miou"]) and math.isnan(only_background["mbo"])
    assert math.isnan(only_background["fg_ari"])
    assert object_discovery(pred, gt, empty_fg_ari=1.0)["fg_ari"] == 1.0  # official GLASS
    assert object_discovery(pred, gt)["num_gt_regions"] == 1  # background counts by default
    one_pixel = gt.copy()
    one_pixel[0, 0] = 4
    assert math.isnan(object_discovery(pred, one_pixel)["fg_ari"])
    everything_ignored = object_discovery(pred, gt, ignore=np.ones((3, 3), bool))
    assert math.isnan(everything_ignored["miou"]) and everything_ignored["num_gt_regions"] == 0


@pytest.mark.parametrize("seed", range(30))
def test_fg_ari_equals_sklearn_on_foreground_pixels(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(4, 20))
    gt = rng.integers(0, int(rng.integers(2, 6)), (size, size)) * int(rng.choice([1, 3]))
    pred = rng.integers(0, int(rng.integers(1, 8)), (size, size))
    if seed % 3 == 0:  # structured: pred follows gt with noise
        pred = np.where(rng.random((size, size)) < 0.8, gt, pred)
    ignore = rng.random((size, size)) < 0.1 if seed % 2 else None
    keep = np.ones_like(gt, bool) if ignore is None else ~ignore
    fg = keep & (gt > 0)
    result = object_discovery(pred, gt, ignore=ignore)
    if fg.sum() >= 2:
        assert result["fg_ari"] == pytest.approx(adjusted_rand_score(gt[fg], pred[fg]), abs=1e-12)


def brute_force_miou(pred, gt, include_background):
    regions = [g for g in np.unique(gt) if include_background or g != 0]
    segments = list(np.unique(pred))
    iou = np.array([[np.sum((gt == g) & (pred == s)) / np.sum((gt == g) | (pred == s))
                     for s in segments] for g in regions])
    best = 0.0
    # pad with dummy segments so that every region may go unmatched
    padded = np.hstack([iou, np.zeros((len(regions), len(regions)))])
    for columns in itertools.permutations(range(padded.shape[1]), len(regions)):
        best = max(best, sum(padded[i, c] for i, c in enumerate(columns)))
    return best / len(regions), iou.max(axis=1).mean()


@pytest.mark.parametrize("seed", range(15))
def test_hungarian_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    gt = rng.integers(0, int(rng.integers(2, 5)), (5, 6))
    pred = rng.integers(0, int(rng.integers(1, 4)), (5, 6))
    for include_background in (True, False):
        if not include_background and not (gt > 0).any():
            continue
        miou, mbo = brute_force_miou(pred, gt, include_background)
        result = object_discovery(pred, gt, include_background=include_background)
        assert result["miou"] == pytest.approx(miou) and result["mbo"] == pytest.approx(mbo)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="shape"):
        object_discovery(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(TypeError, match="integer"):
        object_discovery(np.zeros((2, 2)), np.zeros((2, 2), int))


def test_same_class_merged():
    instances = np.array([[1, 1, 0, 2, 2],
                          [1, 1, 0, 2, 2],
                          [0, 0, 0, 3, 3]])
    classes = {1: "dog", 2: "dog", 3: "cat"}
    merged = np.array([[4, 4, 0, 4, 4],
                       [4, 4, 0, 4, 4],
                       [0, 0, 0, 1, 1]])
    separate = np.array([[4, 4, 0, 5, 5],
                         [4, 4, 0, 5, 5],
                         [0, 0, 0, 5, 5]])  # a dog merged with the cat only: not same-class
    assert same_class_merged(merged, instances, classes) is True
    assert same_class_merged(separate, instances, classes) is False
    half = np.array([[4, 6, 0, 4, 4],
                     [4, 6, 0, 4, 4],
                     [0, 0, 0, 1, 1]])  # exactly 50 % of dog 1 in slot 4: not "mostly"
    assert same_class_merged(half, instances, classes) is False
    assert same_class_merged(merged, instances, {1: "dog", 2: "cat", 3: "bird"}) is None
    # a same-class instance removed by ignore leaves no pair
    assert same_class_merged(merged, instances, classes, ignore=instances == 2) is None
    with pytest.raises(KeyError, match=r"\[3\]"):
        same_class_merged(merged, instances, {1: "dog", 2: "dog"})


def test_per_image_mean_skips_nan():
    rows = [{"miou": 0.5, "mbo": 0.5, "fg_ari": float("nan")},
            {"miou": 1.0, "mbo": 0.7, "fg_ari": 0.2}]
    summary = mean_metrics(rows)
    assert summary["miou"] == pytest.approx(0.75) and summary["fg_ari"] == pytest.approx(0.2)
    assert summary["fg_ari_images"] == 1 and summary["miou_images"] == 2


def test_fast_enough_for_128px_and_7_slots():
    import time

    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 12, (128, 128)), rng.integers(0, 7, (128, 128))
    started = time.perf_counter()
    for _ in range(50):
        object_discovery(pred, gt)
    assert (time.perf_counter() - started) / 50 < 0.02
