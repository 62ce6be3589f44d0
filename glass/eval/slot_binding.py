"""SO/PO/GO slot-binding shares: what each slot binds (paper Table 3, after Fan et al., ICCV 2023).

The GLASS paper reports the share of slots binding a single object (SO), part of an object (PO)
or a group of objects (GO), a metric from Fan et al. (ICCV 2023). No public implementation exists
(docs/paper-facts.md "Evaluation"), so the definition below is OUR definition, chosen to follow the
names: it is not guaranteed to reproduce the papers' exact numbers.

Definition (one image):

- Inputs as in ``object_discovery``: ``pred`` = (H, W) slot index per pixel (argmax of the
  masks), ``gt`` = (H, W) instance ids, ``ignore`` = optional (H, W) bool map of pixels removed
  from both maps before anything else.
- The slots counted are the non-empty predicted segments s: the distinct ``pred`` values among
  the remaining pixels (a slot that wins no pixel binds nothing and is not counted). |s| counts
  all its remaining pixels, background included.
- The GT objects o are the instance ids > 0 among the remaining pixels (0, and any negative id,
  is background, never an object).
- With t = ``threshold`` (0 < t <= 1, default 0.5), let
  n_contained(s) = number of objects o with |s ∩ o| >= t·|o|  (s holds at least t of o).
  Then s is
    * "group"  (GO) if n_contained(s) >= 2;
    * "single" (SO) if n_contained(s) == 1;
    * "part"   (PO) otherwise, if some object o has |s ∩ o| >= t·|s| (s lies mostly, i.e. at
      least t of its pixels, on one object but holds less than t of it);
    * "background" (BG) otherwise.
  The tests are evaluated as ratios, |s ∩ o| / |o| >= t and |s ∩ o| / |s| >= t.
- Consequences worth knowing: background pixels inside a slot do not matter for SO/GO (a slot
  holding one whole object plus much background is "single"); a slot holding one object and
  less than t of another is "single"; with t <= 0.5 two slots can both hold the same object
  (e.g. each exactly half of it), with t > 0.5 at most one can.

``slot_binding`` returns the per-image counts {"single", "part", "group", "background",
"slots"}; ``slot_binding_shares`` pools the counts over the dataset (every slot weighs the same,
not every image) and returns SO/PO/GO/BG = count / total slots, which sum to 1 (NaN without any
slot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from glass.eval.object_discovery import _contingency, _valid_pixels

__all__ = ["slot_binding", "slot_binding_shares", "CATEGORIES"]

# per-image count keys, in the order of the share keys below
CATEGORIES = ("single", "part", "group", "background")
_SHARE_KEYS = {"single": "SO", "part": "PO", "group": "GO", "background": "BG"}


def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"threshold must be a number in (0, 1], got {threshold!r}") from None
    if not 0.0 < value <= 1.0:  # also rejects NaN
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    return value


def slot_binding(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
                 threshold: float = 0.5) -> dict[str, int]:
    """Per-image counts of slots that bind a single object, a part, a group or only background.

    Returns {"single", "part", "group", "background", "slots"} (ints; the first four sum to
    "slots"); see the module docstring for the definition.
    """
    threshold = _check_threshold(threshold)
    pred_pixels, gt_pixels = _valid_pixels(pred, gt, ignore)
    counts, gt_ids, _ = _contingency(gt_pixels, pred_pixels)  # (gt ids, slots present)
    slot_area = counts.sum(axis=0)  # all remaining pixels of each slot, > 0
    overlap = counts[gt_ids > 0]  # (objects, slots)
    object_area = overlap.sum(axis=1, keepdims=True)  # > 0: ids come from remaining pixels

    # ratios compared with t, not |s ∩ o| with t·|o|: for an exact ratio such as 7/10 and
    # t = 0.7 both sides round to the same double, so the boundary case counts as reached
    contained = (overlap / object_area) >= threshold
    n_contained = contained.sum(axis=0)
    mostly_on_one = ((overlap / slot_area[None, :]) >= threshold).any(axis=0)

    group = n_contained >= 2
    single = n_contained == 1
    part = (n_contained == 0) & mostly_on_one
    background = (n_contained == 0) & ~mostly_on_one
    return {"single": int(single.sum()), "part": int(part.sum()), "group": int(group.sum()),
            "background": int(background.sum()), "slots": int(len(slot_area))}


def slot_binding_shares(per_image: Sequence[Mapping[str, int]]) -> dict[str, float]:
    """Dataset SO/PO/GO/BG shares: counts pooled over images, each divided by the total slots.

    Returns {"SO", "PO", "GO", "BG"} (summing to 1, all NaN when there is no slot) plus
    "slots" (total slots) and "images".
    """
    totals = dict.fromkeys((*CATEGORIES, "slots"), 0)
    for k, row in enumerate(per_image):
        missing = [key for key in totals if key not in row]
        if missing:
            raise KeyError(f"image {k}: slot_binding result lacks {missing}")
        values = {key: row[key] for key in totals}
        bad = {key: v for key, v in values.items()
               if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0}
        if bad:
            raise ValueError(f"image {k}: counts must be non-negative ints, got {bad}")
        if sum(int(values[c]) for c in CATEGORIES) != int(values["slots"]):
            raise ValueError(f"image {k}: category counts {[values[c] for c in CATEGORIES]} "
                             f"do not sum to slots={values['slots']}")
        for key, value in values.items():
            totals[key] += int(value)
    slots = totals["slots"]
    out: dict[str, float] = {_SHARE_KEYS[c]: (totals[c] / slots if slots else math.nan)
                             for c in CATEGORIES}
    out["slots"] = slots
    out["images"] = len(per_image)
    return out
