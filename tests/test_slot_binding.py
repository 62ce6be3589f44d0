import math

import numpy as np
import pytest

from glass.eval import object_discovery, slot_binding, slot_binding_shares

# One row, 21 pixels. Objects: 1 (4 px), 2 (2 px), 3 (2 px), 4 (6 px); 0 = background (7 px).
#        slot A: object 1 + 2 bg | slot B: objects 2, 3 | C: 2 px of 4 | D: 3 px of 4 | F | E
GT = np.array([[1, 1, 1, 1, 0, 0, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0]])
PRED = np.array([[10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12, 13, 13, 13, 15, 15, 15,
                  14, 14, 14]])
# slot 15 (F) = 1 px of object 4 + 2 px background; slot 14 (E) = background only


def counts(single, part, group, background):
    return {"single": single, "part": part, "group": group, "background": background,
            "slots": single + part + group + background}


def test_every_category_at_the_default_threshold():
    # t = 0.5:
    # A: holds 4/4 of object 1 -> single (its 2 background pixels do not matter)
    # B: holds 2/2 of object 2 and 2/2 of object 3 -> group
    # C: holds 2/6 of object 4 (< 0.5) but lies on it with 2/2 of its pixels -> part
    # D: holds 3/6 = 0.5 of object 4 (boundary reached) -> single
    # F: holds 1/6 of object 4, lies on it with 1/3 of its pixels -> background
    # E: no object pixel -> background
    assert slot_binding(PRED, GT) == counts(single=2, part=1, group=1, background=2)


def test_threshold_moves_slots_between_categories():
    # t = 0.6: D holds 3/6 < 0.6 of object 4 but lies on it (3/3) -> part; the rest as before
    assert slot_binding(PRED, GT, threshold=0.6) == counts(single=1, part=2, group=1,
                                                           background=2)
    # t = 0.3: C holds 2/6 >= 0.3 and D 3/6 -> single; F lies on object 4 with 1/3 -> part
    assert slot_binding(PRED, GT, threshold=0.3) == counts(single=3, part=1, group=1,
                                                           background=1)
    # t = 1: only whole objects are held, a part must lie entirely on its object
    # A single, B group, C part (2/2), D part (3/3), F background (1/3), E background
    assert slot_binding(PRED, GT, threshold=1.0) == counts(single=1, part=2, group=1,
                                                           background=2)


def test_exact_decimal_boundaries_count_as_reached():
    # 7 of 50 pixels is exactly 0.14 of the object although 0.14 * 50 > 7 in floating point:
    # the ratio test counts the boundary as reached (slot 0 single, not part)
    gt = np.ones((1, 50), int)
    pred = np.array([[0] * 7 + [1] * 43])
    assert 0.14 * 50 > 7 and 7 / 50 == 0.14
    assert slot_binding(pred, gt, threshold=0.14) == counts(single=2, part=0, group=0,
                                                            background=0)


def test_one_object_plus_less_than_threshold_of_another_is_single():
    gt = np.array([[1, 1, 2, 2, 2, 2]])
    pred = np.array([[0, 0, 0, 1, 1, 1]])  # slot 0: all of 1 and 1/4 of 2
    assert slot_binding(pred, gt) == counts(single=2, part=0, group=0, background=0)


def test_with_threshold_at_most_half_two_slots_may_hold_one_object():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[0, 0, 1, 1]])
    assert slot_binding(pred, gt) == counts(single=2, part=0, group=0, background=0)
    assert slot_binding(pred, gt, threshold=0.51) == counts(single=0, part=2, group=0,
                                                            background=0)


def test_ignored_pixels_leave_both_maps():
    # removing F's background pixels leaves F on object 4 only (1/1) -> part;
    # removing all of E removes that slot
    ignore = np.zeros_like(GT, bool)
    ignore[0, 16:] = True
    assert slot_binding(PRED, GT, ignore=ignore) == counts(single=2, part=2, group=1,
                                                           background=0)
    # removing object pixels shrinks the object: object 4 without F's pixel has 5 px,
    # C holds 2/5 -> part, D 3/5 -> single; F (background only now) -> background
    ignore = np.zeros_like(GT, bool)
    ignore[0, 15] = True
    assert slot_binding(PRED, GT, ignore=ignore) == counts(single=2, part=1, group=1,
                                                           background=2)
    # an object entirely ignored is no object: B then holds only object 3 -> single
    ignore = np.zeros_like(GT, bool)
    ignore[0, 6:8] = True
    assert slot_binding(PRED, GT, ignore=ignore) == counts(single=3, part=1, group=0,
                                                           background=2)


def test_empty_images_and_background_only_images():
    everything_ignored = slot_binding(PRED, GT, ignore=np.ones_like(GT, bool))
    assert everything_ignored == counts(0, 0, 0, 0)
    no_object = slot_binding(np.array([[0, 0, 1, 1, 2]]), np.zeros((1, 5), int))
    assert no_object == counts(single=0, part=0, group=0, background=3)
    # negative gt ids are background too (objects are ids > 0)
    negative = slot_binding(np.array([[0, 0, 1]]), np.array([[-1, -1, 2]]))
    assert negative == counts(single=1, part=0, group=0, background=1)
    # only slots that win a pixel are counted: ids need not be contiguous
    assert slot_binding(np.full((2, 2), 6), np.ones((2, 2), int)) == counts(1, 0, 0, 0)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="shape"):
        slot_binding(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match="shape"):
        slot_binding(np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(TypeError, match="integer"):
        slot_binding(np.zeros((2, 2)), np.zeros((2, 2), int))
    with pytest.raises(TypeError, match="integer"):
        slot_binding(np.zeros((2, 2), int), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="bool"):
        slot_binding(PRED, GT, ignore=np.zeros_like(GT))
    with pytest.raises(ValueError, match="bool"):
        slot_binding(PRED, GT, ignore=np.zeros((1, 3), bool))
    for threshold in (0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"threshold"):
            slot_binding(PRED, GT, threshold=threshold)
    with pytest.raises(TypeError, match="threshold"):
        slot_binding(PRED, GT, threshold="half")


def test_shares_pool_slots_over_images():
    first = slot_binding(PRED, GT)  # single 2, part 1, group 1, background 2 (6 slots)
    second = slot_binding(np.array([[0, 1]]), np.zeros((1, 2), int))  # 2 background slots
    empty = slot_binding(PRED, GT, ignore=np.ones_like(GT, bool))  # no slot
    shares = slot_binding_shares([first, second, empty])
    # pooled: 8 slots; SO 2/8, PO 1/8, GO 1/8, BG 4/8 (a per-image mean would give BG 2/3)
    assert shares["SO"] == pytest.approx(2 / 8) and shares["PO"] == pytest.approx(1 / 8)
    assert shares["GO"] == pytest.approx(1 / 8) and shares["BG"] == pytest.approx(4 / 8)
    assert shares["SO"] + shares["PO"] + shares["GO"] + shares["BG"] == pytest.approx(1.0)
    assert shares["slots"] == 8 and shares["images"] == 3
    for none in (slot_binding_shares([]), slot_binding_shares([empty])):
        assert all(math.isnan(none[k]) for k in ("SO", "PO", "GO", "BG"))
        assert none["slots"] == 0


def test_shares_check_their_input():
    good = counts(1, 0, 0, 1)
    with pytest.raises(KeyError, match="group"):
        slot_binding_shares([good, {"single": 1, "part": 0, "background": 0, "slots": 1}])
    with pytest.raises(ValueError, match="sum to slots"):
        slot_binding_shares([{**good, "slots": 3}])
    with pytest.raises(ValueError, match="non-negative ints"):
        slot_binding_shares([{**good, "single": -1, "background": 3}])
    with pytest.raises(ValueError, match="non-negative ints"):
        slot_binding_shares([{**good, "single": 0.5}])


def literal_slot_binding(pred, gt, ignore, threshold):
    """Slow, literal version of the module docstring's definition, with sets of pixels."""
    keep = np.ones(gt.shape, bool) if ignore is None else ~ignore
    pixels = [(int(p), int(g), k) for k, (p, g, ok)
              in enumerate(zip(pred.ravel(), gt.ravel(), keep.ravel())) if ok]
    slots = {p: {k for q, _, k in pixels if q == p} for p, _, _ in pixels}
    objects = {g: {k for _, h, k in pixels if h == g} for _, g, _ in pixels if g > 0}
    out = counts(0, 0, 0, 0)
    for s in slots.values():
        n = sum(len(s & o) / len(o) >= threshold for o in objects.values())
        if n >= 2:
            out["group"] += 1
        elif n == 1:
            out["single"] += 1
        elif any(len(s & o) / len(s) >= threshold for o in objects.values()):
            out["part"] += 1
        else:
            out["background"] += 1
    out["slots"] = len(slots)
    return out


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_literal_implementation(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(2, 9, 2))
    gt = rng.integers(0, int(rng.integers(1, 6)), shape)
    # blocky predictions so that every category occurs now and then
    pred = np.where(rng.random(shape) < 0.6, gt // int(rng.integers(1, 3)),
                    rng.integers(0, 5, shape))
    ignore = rng.random(shape) < 0.15 if seed % 2 else None
    for threshold in (0.25, 0.5, 0.8, 1.0):
        result = slot_binding(pred, gt, ignore=ignore, threshold=threshold)
        assert result == literal_slot_binding(pred, gt, ignore, threshold)
        assert result["slots"] == object_discovery(pred, gt, ignore=ignore)["num_pred_segments"]


def test_fast_enough_for_128px_and_7_slots():
    import time

    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 12, (128, 128)), rng.integers(0, 7, (128, 128))
    started = time.perf_counter()
    for _ in range(50):
        slot_binding(pred, gt)
    assert (time.perf_counter() - started) / 50 < 0.02
