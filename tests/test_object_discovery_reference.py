"""glass.eval.object_discovery checked against a held-out, brute-force reference.

The reference (tests/reference/object_discovery_reference.py) was written from the metric
specification alone, without reading glass/eval, so agreement here is evidence that both follow
the specification rather than that one was copied from the other. Cases are small seeded maps
(6x7 to 16x16, at most six regions and six segments) so that brute-force assignment over
permutations and pair-by-pair ARI stay fast.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from glass.eval import object_discovery

# Loaded by path so the test does not depend on how pytest arranges sys.path.
_REF_PATH = Path(__file__).resolve().parent / "reference" / "object_discovery_reference.py"
_spec = importlib.util.spec_from_file_location("glass_tests_object_discovery_reference", _REF_PATH)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

METRICS = ("miou", "mbo", "fg_ari")
MAX_IDS = 6  # keeps brute force at most 6! = 720 assignments per case
SEEDS_PER_FAMILY = 30


# ---------------------------------------------------------------------------------------------
# Case generation. Every case is (name, pred, gt, ignore); each runs with and without background.
# ---------------------------------------------------------------------------------------------


def _shape(rng):
    return int(rng.integers(6, 17)), int(rng.integers(7, 17))


def _rect_gt(rng, shape, fg_ids, background=True):
    """Rectangles painted over background 0 (or over the first id when background=False)."""
    h, w = shape
    gt = np.zeros(shape, dtype=np.int64) if background else np.full(shape, fg_ids[0], np.int64)
    for gid in fg_ids:
        y0, x0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
        y1, x1 = int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1))
        gt[y0:y1, x0:x1] = gid
    return gt


def _pred_from_gt(rng, gt, slot_ids, flip):
    """Each gt id sent to a random slot (merges possible), then a fraction of pixels flipped."""
    mapping = {int(g): int(rng.choice(slot_ids)) for g in np.unique(gt)}
    pred = np.vectorize(mapping.get, otypes=[np.int64])(gt)
    noise = rng.random(gt.shape) < flip
    pred[noise] = rng.choice(slot_ids, size=int(noise.sum()))
    return pred


def _random_ids(rng, k, pool_max=255):
    """k distinct ids from 1..pool_max, so labels are rarely contiguous."""
    return [int(x) for x in rng.choice(np.arange(1, pool_max + 1), size=k, replace=False)]


def _slots(rng, k):
    return [int(x) for x in rng.choice(np.arange(0, 40), size=k, replace=False)]


def _cases():
    cases = []

    def add(name, pred, gt, ignore=None):
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        keep = np.ones(gt.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
        # Brute force must stay small; the generators below are built to respect this.
        assert len(np.unique(gt[keep])) <= MAX_IDS and len(np.unique(pred[keep])) <= MAX_IDS
        cases.append((name, pred, gt, ignore))

    for seed in range(SEEDS_PER_FAMILY):
        rng = np.random.default_rng(1000 + seed)
        shape = _shape(rng)

        # Structured: rectangles on background, prediction a noisy relabelling.
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(1, 6))))
        pred = _pred_from_gt(rng, gt, _slots(rng, int(rng.integers(1, 7))), rng.uniform(0, 0.4))
        add(f"structured-{seed}", pred, gt)

        # Pure noise in both maps (low IoUs, near-zero ARI).
        gt = rng.choice(_random_ids(rng, int(rng.integers(1, 6))) + [0], size=shape)
        pred = rng.choice(_slots(rng, int(rng.integers(1, 7))), size=shape)
        add(f"noise-{seed}", pred, gt)

        # More regions than slots: 5 foreground ids (+ background) vs 1-3 slots.
        gt = _rect_gt(rng, shape, _random_ids(rng, 5))
        pred = _pred_from_gt(rng, gt, _slots(rng, int(rng.integers(1, 4))), rng.uniform(0, 0.3))
        add(f"more-regions-{seed}", pred, gt)

        # More slots than regions: 1-2 foreground ids vs 5-6 slots, split at random.
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(1, 3))))
        pred = rng.choice(_slots(rng, int(rng.integers(5, 7))), size=shape)
        add(f"more-slots-{seed}", pred, gt)

        # Ignore masks over a structured case: sparse, dense, and one hiding a whole region.
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(2, 6))))
        pred = _pred_from_gt(rng, gt, _slots(rng, int(rng.integers(2, 7))), rng.uniform(0, 0.3))
        add(f"ignore-sparse-{seed}", pred, gt, rng.random(shape) < 0.15)
        add(f"ignore-dense-{seed}", pred, gt, rng.random(shape) < 0.7)
        hidden = int(rng.choice(np.unique(gt)))
        add(f"ignore-region-{seed}", pred, gt, (gt == hidden) | (rng.random(shape) < 0.1))

        # Non-contiguous ids in narrow dtypes (uint8 gt with 250, sparse slot numbers).
        fg = [3, 17, 250][: int(rng.integers(1, 4))]
        gt = _rect_gt(rng, shape, fg).astype(np.uint8)
        pred = _pred_from_gt(rng, gt, [2, 9, 31, 200][: int(rng.integers(1, 5))], 0.1)
        add(f"noncontig-{seed}", pred.astype(np.int32), gt)

        # No background at all (every pixel belongs to some object).
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(1, 6))), background=False)
        pred = _pred_from_gt(rng, gt, _slots(rng, int(rng.integers(1, 7))), rng.uniform(0, 0.3))
        add(f"no-background-{seed}", pred, gt)

        # Empty foreground: gt all 0, with and without an ignore mask.
        gt = np.zeros(shape, np.int64)
        pred = rng.choice(_slots(rng, int(rng.integers(1, 7))), size=shape)
        add(f"empty-fg-{seed}", pred, gt)
        add(f"empty-fg-ignore-{seed}", pred, gt, rng.random(shape) < 0.5)

        # gt entirely ignored, and foreground entirely ignored (background left).
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(1, 5))))
        pred = _pred_from_gt(rng, gt, _slots(rng, int(rng.integers(1, 7))), 0.2)
        add(f"all-ignored-{seed}", pred, gt, np.ones(shape, bool))
        add(f"fg-ignored-{seed}", pred, gt, gt > 0)

        # A single foreground pixel (FG-ARI undefined), then exactly two (smallest defined).
        gt = np.zeros(shape, np.int64)
        y, x = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        gt[y, x] = int(rng.integers(1, 256))
        pred = rng.choice(_slots(rng, int(rng.integers(1, 4))), size=shape)
        add(f"single-fg-pixel-{seed}", pred, gt)
        flat = rng.choice(shape[0] * shape[1], size=2, replace=False)
        gt2 = np.zeros(shape, np.int64)
        gt2.flat[flat] = rng.choice([5, 6], size=2)
        add(f"two-fg-pixels-{seed}", pred, gt2)
        # Foreground reduced to one pixel by the ignore mask.
        gt3 = _rect_gt(rng, shape, [7])
        keep_one = np.flatnonzero(gt3 > 0)[0]
        ign = gt3 > 0
        ign.flat[keep_one] = False
        add(f"ignore-to-one-fg-{seed}", pred, gt3, ign)

        # Perfect prediction up to relabelling (ARI 1, mIoU 1) and constant prediction.
        gt = _rect_gt(rng, shape, _random_ids(rng, int(rng.integers(1, 6))))
        ids = np.unique(gt)
        perm = {int(g): int(s) for g, s in zip(ids, _slots(rng, len(ids)))}
        add(f"perfect-{seed}", np.vectorize(perm.get, otypes=[np.int64])(gt), gt)
        add(f"constant-{seed}", np.full(shape, int(rng.integers(0, 50))), gt)

    return cases


CASES = _cases()


def _check(pred, gt, ignore, include_background):
    expected = ref.reference_object_discovery(pred, gt, ignore, include_background)
    # the reference leaves FG-ARI undefined (NaN) below two foreground pixels
    got = object_discovery(pred, gt, ignore=ignore, include_background=include_background,
                           empty_fg_ari=float("nan"))
    bad = {
        k: (got[k], expected[k]) for k in METRICS if not ref.same_value(got[k], expected[k], 1e-6)
    }
    assert not bad, (
        f"include_background={include_background}: (project, reference) per metric {bad}\n"
        f"pred=\n{pred!r}\ngt=\n{gt!r}\nignore=\n{ignore!r}"
    )


@pytest.mark.parametrize("include_background", [True, False], ids=["bg", "nobg"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(case, include_background):
    _name, pred, gt, ignore = case
    _check(pred, gt, ignore, include_background)


def test_case_mix_covers_the_specification():
    """The generated cases really contain the situations they are named after."""
    nobg = [ref.reference_object_discovery(p, g, i, False) for _, p, g, i in CASES]
    bg = [ref.reference_object_discovery(p, g, i, True) for _, p, g, i in CASES]
    assert sum(r["num_gt_regions"] > r["num_pred_segments"] for r in nobg + bg) >= 20
    assert sum(r["num_gt_regions"] < r["num_pred_segments"] for r in nobg + bg) >= 20
    assert sum(math.isnan(r["miou"]) for r in nobg) >= 20  # no foreground region left
    assert sum(math.isnan(r["fg_ari"]) for r in bg) >= 20  # fewer than two fg pixels
    assert sum(r["num_gt_regions"] == MAX_IDS for r in bg) >= 5  # brute force at full size
    assert sum(r["fg_ari"] == 1.0 for r in bg) >= 10


# ---------------------------------------------------------------------------------------------
# The reference itself: hand-worked examples and sklearn's ARI.
# ---------------------------------------------------------------------------------------------


def test_reference_hand_worked_examples():
    # Regions 1={0,1}, 2={2,3}; segments 0={0,1,2}, 1={3}.
    # IoU(1,0)=2/3, IoU(1,1)=0, IoU(2,0)=1/4, IoU(2,1)=1/2.
    # Best matching 1->0, 2->1: (2/3 + 1/2)/2 = 7/12; mBO the same here.
    # Pairs (gt [1,1,2,2] vs pred [0,0,0,1]): a=1, b=1, c=2, d=2 -> ARI = 2(2-2)/... = 0.
    r = ref.reference_object_discovery(np.array([[0, 0], [0, 1]]), np.array([[1, 1], [2, 2]]))
    assert r["miou"] == pytest.approx(7 / 12) and r["mbo"] == pytest.approx(7 / 12)
    assert r["fg_ari"] == pytest.approx(0.0)

    # Three regions, one segment: only one region can be matched (IoU 1/3), two score 0.
    r = ref.reference_object_discovery(np.array([[0, 0, 0]]), np.array([[1, 2, 3]]))
    assert r["miou"] == pytest.approx(1 / 9) and r["mbo"] == pytest.approx(1 / 3)
    assert r["fg_ari"] == pytest.approx(0.0)

    # Background as a region vs not: gt [[0,0],[1,1]], pred [[4,4],[4,9]].
    # Segment 4={0,1,2}, 9={3}. Region 0={0,1}: IoU with 4 = 2/3; region 1={2,3}: 1/4 with 4,
    # 1/2 with 9. With background: matching 0->4, 1->9 = (2/3 + 1/2)/2 = 7/12.
    # Without: region 1 alone, best 1/2 (segment 4 still includes the background pixels).
    pred, gt = np.array([[4, 4], [4, 9]]), np.array([[0, 0], [1, 1]])
    assert ref.reference_object_discovery(pred, gt)["miou"] == pytest.approx(7 / 12)
    nobg = ref.reference_object_discovery(pred, gt, include_background=False)
    assert nobg["miou"] == pytest.approx(1 / 2) and nobg["mbo"] == pytest.approx(1 / 2)

    # Ignore removes pixels from everything: hiding pixel 2 makes segment 4 = {0,1}.
    ign = np.array([[False, False], [True, False]])
    r = ref.reference_object_discovery(pred, gt, ign)
    assert r["miou"] == pytest.approx(1.0) and r["fg_ari"] != r["fg_ari"]  # 1 fg pixel: NaN

    # Nothing left / no region.
    allign = np.ones((2, 2), bool)
    r = ref.reference_object_discovery(pred, gt, allign)
    assert all(math.isnan(r[k]) for k in METRICS)
    r = ref.reference_object_discovery(pred, np.zeros((2, 2), int), include_background=False)
    assert all(math.isnan(r[k]) for k in METRICS)


def test_reference_ari_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score

    checked = 0
    for _name, pred, gt, ignore in CASES:
        keep = np.ones(gt.shape, bool) if ignore is None else ~np.asarray(ignore, bool)
        fg = keep & (gt > 0)
        if fg.sum() < 2:
            continue
        mine = ref.reference_object_discovery(pred, gt, ignore)["fg_ari"]
        assert mine == pytest.approx(adjusted_rand_score(gt[fg], pred[fg]), abs=1e-9)
        checked += 1
    assert checked >= 200
