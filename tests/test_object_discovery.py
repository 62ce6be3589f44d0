import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from glass.eval import class_map, object_discovery, same_class_merged, semantic_discovery
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
    # fewer than two foreground pixels: 1.0 by default (official GLASS, ocl, sklearn), or NaN
    assert only_background["fg_ari"] == 1.0
    assert math.isnan(object_discovery(pred, gt, empty_fg_ari=float("nan"))["fg_ari"])
    assert object_discovery(pred, gt)["num_gt_regions"] == 1  # background counts by default
    one_pixel = gt.copy()
    one_pixel[0, 0] = 4
    assert object_discovery(pred, one_pixel)["fg_ari"] == 1.0
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


# --- per-region arrays and per-object averaging -------------------------------------------

def test_region_arrays_leave_existing_keys_unchanged_and_average_to_the_scores():
    rng = np.random.default_rng(7)
    for _ in range(20):
        gt = rng.integers(0, 5, (9, 11)) * 3
        pred = rng.integers(0, 4, (9, 11))
        ignore = rng.random((9, 11)) < 0.2
        for include_background in (True, False):
            plain = object_discovery(pred, gt, ignore=ignore, include_background=include_background)
            full = object_discovery(pred, gt, ignore=ignore, include_background=include_background,
                                    return_regions=True)
            # bit-identical values (NaN where NaN) for the keys that existed before
            assert all((math.isnan(plain[k]) and math.isnan(full[k])) or plain[k] == full[k]
                       for k in plain)
            ids = np.unique(gt[~ignore])
            if not include_background:
                ids = ids[ids != 0]
            assert full["region_ids"].tolist() == ids.tolist()
            assert full["region_areas"].tolist() == [int(np.sum((gt == i) & ~ignore)) for i in ids]
            if len(ids):
                assert full["region_matched_iou"].mean() == pytest.approx(full["miou"])
                assert full["region_best_iou"].mean() == pytest.approx(full["mbo"])
                assert np.all(full["region_matched_iou"] <= full["region_best_iou"] + 1e-12)


def test_region_arrays_on_the_hand_case():
    result = object_discovery(PRED, GT, return_regions=True)
    assert result["region_ids"].tolist() == [0, 1, 2]
    assert result["region_areas"].tolist() == [8, 4, 4]
    np.testing.assert_allclose(result["region_matched_iou"], [8 / 9, 3 / 4, 1])
    # unmatched region: 0 in the matched array, its best IoU in the other
    gt, pred = np.array([[1, 1, 1, 1, 2, 2, 3, 3]]), np.zeros((1, 8), int)
    result = object_discovery(pred, gt, return_regions=True)
    np.testing.assert_allclose(result["region_matched_iou"], [1 / 2, 0, 0])
    np.testing.assert_allclose(result["region_best_iou"], [1 / 2, 1 / 4, 1 / 4])
    empty = object_discovery(pred, gt, ignore=np.ones((1, 8), bool), return_regions=True)
    assert empty["region_ids"].shape == (0,) and empty["region_matched_iou"].shape == (0,)


def test_per_object_averaging_differs_from_per_image():
    # Image A: one region (id 1, 4 px), one slot covering it: IoU 1.
    #   matched = [1], best = [1]; miou_A = mbo_A = 1; FG-ARI 1 (identical partitions).
    # Image B: regions 1 (4 px), 2 (2 px), 3 (2 px), one slot over all 8 px:
    #   IoU = 4/8, 2/8, 2/8; Hungarian matches the slot to region 1 only:
    #   matched = [1/2, 0, 0] -> miou_B = 1/6; best = [1/2, 1/4, 1/4] -> mbo_B = 1/3;
    #   FG-ARI 0 (one predicted cluster: tp = 6+1+1 = 8, fp = 28-8 = 20, fn = tn = 0 -> 0).
    # Per image:  miou = (1 + 1/6) / 2 = 7/12,  mbo = (1 + 1/3) / 2 = 2/3.
    # Per object: miou = (1 + 1/2 + 0 + 0) / 4 = 3/8,  mbo = (1 + 1/2 + 1/4 + 1/4) / 4 = 1/2.
    # FG-ARI is per image in both modes: (1 + 0 + 1) / 3, image C having no foreground pixel
    # and so FG-ARI 1.0 (the official code's and ocl's convention, the default).
    image_a = object_discovery(np.zeros((1, 4), int), np.ones((1, 4), int), return_regions=True)
    image_b = object_discovery(np.zeros((1, 8), int), np.array([[1, 1, 1, 1, 2, 2, 3, 3]]),
                               return_regions=True)
    # an image without GT region (all ignored) adds nothing to mIoU/mBO in either mode
    image_c = object_discovery(np.zeros((2, 2), int), np.ones((2, 2), int),
                               ignore=np.ones((2, 2), bool), return_regions=True)
    rows = [image_a, image_b, image_c]
    per_image = mean_metrics(rows)
    assert per_image == mean_metrics(rows, averaging="image")
    assert per_image["miou"] == pytest.approx(7 / 12) and per_image["mbo"] == pytest.approx(2 / 3)
    assert per_image["fg_ari"] == pytest.approx(2 / 3) and per_image["miou_images"] == 2
    per_object = mean_metrics(rows, averaging="object")
    assert per_object["miou"] == pytest.approx(3 / 8) and per_object["mbo"] == pytest.approx(1 / 2)
    assert per_object["fg_ari"] == pytest.approx(2 / 3)
    assert per_object["miou_regions"] == 4 and per_object["mbo_regions"] == 4
    assert per_object["miou_images"] == 2 and per_object["fg_ari_images"] == 3
    nothing = mean_metrics([image_c], averaging="object")
    assert math.isnan(nothing["miou"]) and nothing["miou_regions"] == 0
    assert math.isnan(mean_metrics([], averaging="object")["mbo"])


def test_per_object_averaging_needs_region_arrays():
    rows = [object_discovery(PRED, GT, return_regions=True), object_discovery(PRED, GT)]
    with pytest.raises(ValueError, match=r"return_regions=True.*\[1\]"):
        mean_metrics(rows, averaging="object")
    # names without a per-region part need nothing extra
    assert mean_metrics(rows, names=("fg_ari",), averaging="object")["fg_ari_images"] == 2
    with pytest.raises(ValueError, match="averaging"):
        mean_metrics(rows, averaging="region")


# --- class-level metrics --------------------------------------------------------------------

INSTANCES = np.array([[1, 1, 0, 2, 2],
                      [1, 1, 0, 2, 2],
                      [3, 3, 0, 0, 0]])
INSTANCE_CLASSES = {1: "dog", 2: "dog", 3: "cat"}


def test_class_map_assigns_sorted_ids_per_class():
    # classes present sorted: "cat" < "dog" -> cat = 1, dog = 2
    expected = np.array([[2, 2, 0, 2, 2],
                         [2, 2, 0, 2, 2],
                         [1, 1, 0, 0, 0]])
    out = class_map(INSTANCES, INSTANCE_CLASSES)
    assert out.dtype == np.int64 and np.array_equal(out, expected)
    # independent of the mapping's order; unused entries (absent ids, id 0) get no id
    reordered = {9: "zebra", 3: "cat", 2: "dog", 1: "dog", 0: "background"}
    assert np.array_equal(class_map(INSTANCES, reordered), expected)
    # int classes in numeric order, ints before strings, numpy scalars accepted
    assert np.array_equal(class_map(INSTANCES, {1: np.int64(7), 2: 7, 3: 3}), expected)
    mixed = class_map(INSTANCES, {1: "1", 2: "1", 3: 40})
    assert np.array_equal(mixed, expected)  # 40 (int) -> 1, "1" (str) -> 2
    assert np.array_equal(class_map(np.zeros((2, 2), int), {}), np.zeros((2, 2), int))


def test_class_map_checks_inputs():
    with pytest.raises(KeyError, match=r"\[3\]"):
        class_map(INSTANCES, {1: "dog", 2: "dog"})
    with pytest.raises(TypeError, match="int or a str"):
        class_map(INSTANCES, {1: "dog", 2: "dog", 3: 2.5})
    with pytest.raises(ValueError, match=">= 0"):
        class_map(INSTANCES - 1, INSTANCE_CLASSES)
    with pytest.raises(TypeError, match="integer"):
        class_map(INSTANCES.astype(float), INSTANCE_CLASSES)


def test_semantic_discovery_on_two_instances_of_one_class():
    # class map: background (5 px: column 2 and row 2 cols 3-4), dog = 8 px, cat = 2 px.
    separate = np.array([[4, 4, 0, 5, 5],
                         [4, 4, 0, 5, 5],
                         [6, 6, 0, 0, 0]])  # one slot per instance
    # instance level: every region matched exactly -> 1
    assert object_discovery(separate, INSTANCES)["miou"] == pytest.approx(1.0)
    # class level: IoU(bg, slot 0) = 1, IoU(dog, slot 4) = IoU(dog, slot 5) = 4/8, IoU(cat, 6) = 1
    # -> mIoU_c = mBO_c = (1 + 1/2 + 1) / 3 = 5/6; without background (1/2 + 1) / 2 = 3/4
    result = semantic_discovery(separate, INSTANCES, INSTANCE_CLASSES)
    assert set(result) == {"miou", "mbo"}
    assert result["miou"] == pytest.approx(5 / 6) and result["mbo"] == pytest.approx(5 / 6)
    foreground = semantic_discovery(separate, INSTANCES, INSTANCE_CLASSES,
                                    include_background=False)
    assert foreground["miou"] == pytest.approx(3 / 4) == foreground["mbo"]
    # one slot over both dogs: class level perfect, instance level penalised
    merged = np.where(separate == 5, 4, separate)
    assert semantic_discovery(merged, INSTANCES, INSTANCE_CLASSES)["miou"] == pytest.approx(1.0)
    # instance: bg 1, dog1 4/8 (matched), dog2 0 (unmatched), cat 1 -> 5/8
    assert object_discovery(merged, INSTANCES)["miou"] == pytest.approx(5 / 8)
    # same as object_discovery on the class map, ignore included
    ignore = np.zeros_like(INSTANCES, bool)
    ignore[0, 3] = ignore[2, 0] = True
    direct = object_discovery(separate, class_map(INSTANCES, INSTANCE_CLASSES), ignore=ignore)
    via = semantic_discovery(separate, INSTANCES, INSTANCE_CLASSES, ignore=ignore)
    assert via == {"miou": direct["miou"], "mbo": direct["mbo"]}
    regions = semantic_discovery(separate, INSTANCES, INSTANCE_CLASSES, return_regions=True)
    assert regions["region_classes"] == [None, "cat", "dog"]
    np.testing.assert_allclose(regions["region_best_iou"], [1, 1, 1 / 2])
    with pytest.raises(KeyError):
        semantic_discovery(separate, INSTANCES, {1: "dog"})
