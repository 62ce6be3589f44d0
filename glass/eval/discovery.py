"""Object discovery over a dataset (paper Tables 2, 3, 4, 9, 11): a trained model's slot masks
against instance and class ground truth, with every convention explicit.

Per image: instance-level mIoU/mBO/FG-ARI (``object_discovery``), class-level mIoU_c/mBO_c
(``semantic_discovery``) and SO/PO/GO slot-binding counts (``slot_binding``). Per dataset: per-image
averages (the official GLASS default); per-object averages (``*_per_object``: pooled over every
ground-truth region of the dataset, so with ``include_background`` each image's background region
counts as one more region); pooled slot-binding shares; ``objects``, the number of ground-truth
objects (id > 0); and the
best-overlap curve (share of ground-truth objects whose best IoU reaches each threshold), which
the evaluate stage writes as a DVC plot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from glass.eval.datasets import EvalSample
from glass.eval.object_discovery import mean_metrics, object_discovery, semantic_discovery
from glass.eval.slot_binding import slot_binding, slot_binding_shares
from glass.errors import InvalidInput
from glass.params import Params, param

CURVE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class DiscoveryConventions(Params):
    """``evaluate.metrics.conventions``: metric conventions (defaults = the official GLASS evaluation,
    docs/paper-facts.md). Checked when read, so a wrong setting fails before any model is loaded."""

    include_background: bool = True      # background is a region in mIoU / mBO
    # FG-ARI of an image with fewer than 2 foreground pixels: 1.0 official (and ocl, sklearn);
    # .nan leaves such images out of the mean
    empty_fg_ari: float = param(1.0, allow_nan=True)
    mask_source: Literal["slot_attention", "mlp_decoder"] = "slot_attention"
    slot_binding_threshold: float = param(0.5, gt=0.0, max=1.0)   # SO/PO/GO, glass.eval.slot_binding


def _to_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float()[None] / 255.0


def image_tensor(sample: EvalSample) -> torch.Tensor:
    """The model's input, (1, 3, H, W) float in [0, 1]: the sample's own view for the encoder
    (``model_image``) when the preprocessing made one, else the evaluation image."""
    return _to_tensor(sample.model_image if sample.model_image is not None else sample.image)


def ground_truth_image(sample: EvalSample) -> torch.Tensor:
    """The evaluation image (aligned with the ground truth), (1, 3, H, W) float in [0, 1]."""
    return _to_tensor(sample.image)


def evaluate_image(pred: np.ndarray, sample: EvalSample,
                   conventions: DiscoveryConventions) -> dict[str, Any]:
    instance = object_discovery(pred, sample.instances, ignore=sample.ignore,
                                include_background=conventions.include_background,
                                empty_fg_ari=conventions.empty_fg_ari, return_regions=True)
    semantic = semantic_discovery(pred, sample.instances, sample.instance_classes,
                                  ignore=sample.ignore,
                                  include_background=conventions.include_background)
    binding = slot_binding(pred, sample.instances, ignore=sample.ignore,
                           threshold=conventions.slot_binding_threshold)
    return {"key": sample.key, "instance": instance, "semantic": semantic, "binding": binding}


def best_overlap_curve(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Share of ground-truth objects (id > 0) whose best IoU with any slot is >= t."""
    best = [iou for r in records
            for rid, iou in zip(r["instance"]["region_ids"], r["instance"]["region_best_iou"])
            if rid != 0]
    best = np.asarray(best, dtype=np.float64)
    return [{"threshold": t, "objects_found": float((best >= t - 1e-12).mean()) if best.size
             else float("nan")} for t in CURVE_THRESHOLDS]


def summarise(records: list[dict[str, Any]]) -> dict[str, float | int]:
    instance = [r["instance"] for r in records]
    per_image = mean_metrics(instance, averaging="image")
    per_object = mean_metrics(instance, averaging="object")
    semantic = mean_metrics([r["semantic"] for r in records], names=("miou", "mbo"))
    shares = slot_binding_shares([r["binding"] for r in records])
    return {
        "miou_i": per_image["miou"], "mbo_i": per_image["mbo"], "fg_ari": per_image["fg_ari"],
        "miou_i_per_object": per_object["miou"], "mbo_i_per_object": per_object["mbo"],
        "miou_c": semantic["miou"], "mbo_c": semantic["mbo"],
        "so": shares["SO"], "po": shares["PO"], "go": shares["GO"], "bg": shares["BG"],
        "images": len(records),
        "objects": int(sum(np.count_nonzero(np.asarray(r["instance"]["region_ids"]) != 0)
                           for r in records)),
    }


def evaluate_object_discovery(pairs: Iterable[tuple[EvalSample, np.ndarray]],
                              conventions: DiscoveryConventions, *, description: str = "",
                              grid_rows: int = 6, total: int | None = None
                              ) -> tuple[dict[str, Any], list[dict[str, float]],
                                         list[list[np.ndarray]]]:
    """(summary metrics, best-overlap curve, grid rows: image, ground truth, slot masks) of
    (sample, predicted slot-index map at the sample's size) pairs."""
    records, rows = [], []
    for sample, pred in tqdm(pairs, desc=f"object discovery {description}".strip(), total=total):
        if pred.shape != sample.size:
            raise InvalidInput(f"{sample.key}: the prediction is {pred.shape}, the ground truth "
                               f"{sample.size}; rerun the predict stage")
        records.append(evaluate_image(pred, sample, conventions))
        if len(rows) < grid_rows:
            truth = np.where(sample.ignore, 255, sample.instances).astype(np.int64)
            rows.append([sample.image, truth, pred + 1])
    if not records:
        raise InvalidInput(f"object discovery {description}: the dataset yielded no images")
    return summarise(records), best_overlap_curve(records), rows
