"""Evaluation ground truth for object discovery: one sample type, one reader per dataset.

``load_eval_dataset(name, **params)`` returns a reader (an ordered, sized iterable of
:class:`EvalSample`); ``name`` is one of :data:`EVAL_DATASETS`:

=============  ======================================================================
``coco``       COCO 2017 val (paper Table 2), ``CocoInstances``
``toy``        the toy world's COCO-format val split (CPU configuration), ``ToyInstances``
``voc``        PASCAL VOC 2012 segmentation val (paper Table 2), ``VocInstances``
``clevrtex``   CLEVRTex (zero-shot, paper Table 4), ``ClevrTexInstances``
``objects365`` Objects365 v2 val with SAM 2 box-prompted masks (zero-shot, Table 4),
               ``Objects365Instances``
=============  ======================================================================

Preprocessing params shared by all: ``resolution`` (256; None = full resolution), ``crop``
("center" | "none"), ``image_resample`` ("bilinear" | "bicubic"), ``model_resolution`` (the
encoder's own view of the original image, e.g. 448; None = the model sees ``image``), or a ready
``preprocess=``;
and ``limit`` (first N images of the reader's fixed order). Every other param goes to the
reader; each convention's default is the official GLASS evaluation's (docs/paper-facts.md
"Evaluation"), and ``reader.conventions()`` lists the ones in force for the records.
"""

from __future__ import annotations

import inspect
from typing import Any

from glass.errors import InvalidInput
from glass.eval.datasets.clevrtex import ClevrTexInstances
from glass.eval.datasets.coco import CocoFormatInstances, CocoInstances, ToyInstances
from glass.eval.datasets.objects365 import Objects365Instances
from glass.eval.datasets.sample import (
    CROWD_MODES, OVERLAP_MODES, EvalDataset, EvalSample, Preprocess,
)
from glass.eval.datasets.voc import VOC_BOUNDARY_MODES, VocInstances

EVAL_DATASETS: dict[str, type[EvalDataset]] = {
    "coco": CocoInstances,
    "toy": ToyInstances,
    "voc": VocInstances,
    "clevrtex": ClevrTexInstances,
    "objects365": Objects365Instances,
}
_PREPROCESS_FIELDS = ("resolution", "crop", "image_resample", "model_resolution")

__all__ = [
    "EVAL_DATASETS", "load_eval_dataset", "EvalDataset", "EvalSample", "Preprocess",
    "CocoFormatInstances", "CocoInstances", "ToyInstances", "VocInstances",
    "ClevrTexInstances", "Objects365Instances", "CROWD_MODES", "OVERLAP_MODES",
    "VOC_BOUNDARY_MODES",
]


def load_eval_dataset(name: str, **params: Any) -> EvalDataset:
    """The reader for ``name``, built from flat params (see the module docstring)."""
    if name not in EVAL_DATASETS:
        raise InvalidInput(f"unknown evaluation dataset {name!r}; expected one of "
                         f"{sorted(EVAL_DATASETS)}")
    reader = EVAL_DATASETS[name]
    preprocess_fields = {key: params.pop(key) for key in _PREPROCESS_FIELDS if key in params}
    if preprocess_fields:
        if params.get("preprocess") is not None:
            raise InvalidInput(f"give either preprocess= or {sorted(preprocess_fields)}, not both")
        params["preprocess"] = Preprocess(**preprocess_fields)
    accepted = set(inspect.signature(reader.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidInput(f"{name}: unknown params {unknown}; accepted: "
                        f"{sorted(accepted | set(_PREPROCESS_FIELDS))}")
    return reader(**params)
