"""The ``evaluate`` stage's work: the metrics of the ``predict`` stage's stored predictions (the
cheap half of the evaluation), so that changing a metric convention reruns in seconds.

1. Object discovery on each listed dataset (``glass.eval.discovery``): the stored slot-index maps
   of ``evaluate.metrics.conventions.mask_source`` against the ground truth, read again with the
   ``evaluate.metrics.ground_truth`` conventions (crowd, overlap, VOC boundary).
2. Property prediction (Table 8): the stored slots Hungarian-matched to ground-truth objects, and
   linear probes trained on them (``glass.eval.property_probe``).
3. The report: these metrics and the ``predict`` stage's generation metrics beside the paper's.

Outputs: one metrics JSON (for ``dvc metrics``), best-overlap curves (CSV, for ``dvc plots``),
slot-mask grids, the conventions in force (with the reasons of unavailable metrics and of every
unreadable image) and a markdown report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from glass.data.classes import COCO_CLASSES
from glass.errors import InvalidInput
from glass.eval.datasets import EvalDataset
from glass.eval.discovery import evaluate_object_discovery
from glass.eval.outputs import finite_or_none, flatten_conventions, write_curve
from glass.eval.params import EvaluateParams
from glass.eval.predictions import Predictions, open_reader
from glass.eval.property_probe import ProbeSamples, match_slots_to_objects, property_prediction
from glass.eval.report import render_report
from glass.io import atomic_open, publish_directory, staging_directory, write_json
from glass.viz import save_grid

log = logging.getLogger(__name__)
CLASS_INDEX = {name: index for index, name in enumerate(COCO_CLASSES)}


def open_readers(evaluate: EvaluateParams, predictions: Predictions,
                 names: set[str]) -> dict[str, EvalDataset]:
    """The ground-truth readers of ``names``, where the predictions were read, with the
    ground-truth conventions of ``evaluate.metrics``."""
    readers = {}
    source = evaluate.metrics.conventions.mask_source
    for name in sorted(names):
        stored = predictions.dataset(name).mask_sources
        if source not in stored:
            raise InvalidInput(
                f"evaluate.metrics.conventions.mask_source is {source!r}, but the predictions of "
                f"{name} hold only {stored} (the model has no MLP decoder, as an official "
                "checkpoint): set it to slot_attention")
        truth = evaluate.metrics.ground_truth.get(name)
        readers[name] = open_reader(predictions.dataset(name).reader,
                                    truth.reader_params() if truth else None)
    return readers


def paired(reader: EvalDataset, predictions: Predictions, name: str, mask_source: str,
           limit: int | None):
    """(ground-truth sample, stored prediction of ``mask_source``) of each predicted image."""
    for image in predictions.images(name, limit):
        sample = reader.load(image.image_id)
        if sample.key != image.key:
            raise InvalidInput(f"{name}: image {image.image_id} is {sample.key} now but was "
                               f"{image.key} when predicted; rerun the predict stage")
        yield sample, image.masks[mask_source], image


def probe_samples(reader: EvalDataset, predictions: Predictions, name: str, limit: int | None,
                  mask_source: str) -> ProbeSamples:
    """Slot vectors matched (IoU, Hungarian) to ground-truth objects, with their class index in
    the fixed COCO class list (every dataset here uses COCO names) and box centre."""
    parts = []
    num_slots = predictions.dataset(name).num_slots
    for sample, pred, image in paired(reader, predictions, name, mask_source, limit):
        classes = {}
        for iid, class_name in sample.instance_classes.items():
            if class_name not in CLASS_INDEX:
                raise InvalidInput(f"property prediction: {sample.key} has class "
                                   f"{class_name!r}, which is not a COCO class (probes use the "
                                   "80 COCO classes)")
            classes[iid] = CLASS_INDEX[class_name]
        matches = match_slots_to_objects(pred, sample.instances, classes, boxes=sample.boxes,
                                         ignore=sample.ignore, num_slots=num_slots)
        if matches:
            parts.append(ProbeSamples.from_matches(sample.key, image.slots, matches))
    if not parts:
        raise InvalidInput(f"property prediction: no slot matched an object in {name}")
    return ProbeSamples.concatenate(parts)


def run_property_prediction(evaluate: EvaluateParams, readers: dict[str, EvalDataset],
                            predictions: Predictions) -> dict[str, Any]:
    section, probes = evaluate.property_prediction, evaluate.metrics.probes
    mask_source = evaluate.metrics.conventions.mask_source
    train = probe_samples(readers[section.train_dataset], predictions, section.train_dataset,
                          section.train_limit, mask_source)
    test = probe_samples(readers[section.test_dataset], predictions, section.test_dataset,
                         section.test_limit, mask_source)
    result = property_prediction(train, test, num_classes=len(COCO_CLASSES),
                                 max_epochs=probes.max_epochs, batch_size=probes.batch_size,
                                 val_fraction=probes.val_fraction, seed=probes.seed, device="cpu")
    return {"class_top1": result["class_accuracy"], "centre_mse": result["centre_mse"],
            # what the probes score without the slots: a row at these has learned nothing
            "class_top1_majority": result["class_accuracy_majority"],
            "centre_mse_mean": result["centre_mse_mean"],
            "train_objects": result["num_train"], "test_objects": result["num_test"],
            "classes": int(len(np.unique(np.concatenate([train.classes, test.classes]))))}


def attach_reasons(generation: dict[str, Any], reasons: dict[str, dict[str, str]]
                   ) -> dict[str, Any]:
    """The generation metrics with their ``<metric>_unavailable`` reasons, for the report."""
    return {dataset: dict(values, **{f"{metric}_unavailable": reason
                                     for metric, reason in reasons.get(dataset, {}).items()})
            for dataset, values in generation.items()}


def run_evaluation(evaluate: EvaluateParams, predictions_dir: str | Path, out: str | Path,
                   metrics_path: str | Path, generation_path: str | Path | None = None,
                   config_name: str = "") -> dict[str, Any]:
    """Everything above; writes ``metrics_path`` (JSON for ``dvc metrics``), ``out/curves/``
    (best-overlap curves for ``dvc plots``), ``out/images/discovery/`` (slot-mask grids),
    ``out/conventions.json`` (conventions in force, why any metric is unavailable, which images
    could not be read) and ``out/report.md``; ``generation_path`` is the predict stage's
    generation metrics, for the report. Folders are built beside their destination and replace
    it when complete. Returns the metrics."""
    out = Path(out)
    predictions = Predictions(predictions_dir)
    conventions = evaluate.metrics.conventions
    probe = evaluate.property_prediction
    names = set(evaluate.object_discovery)
    if probe.enabled and probe.test_dataset:
        names |= {probe.train_dataset, probe.test_dataset}
    readers = open_readers(evaluate, predictions, names)

    metrics: dict[str, Any] = {}
    with staging_directory(out / "curves") as curves, \
            staging_directory(out / "images" / "discovery") as images:
        for name in evaluate.object_discovery:
            pairs = ((sample, pred) for sample, pred, _ in
                     paired(readers[name], predictions, name, conventions.mask_source,
                            evaluate.limit))
            count = len(predictions.dataset(name).keys)
            summary, curve, rows = evaluate_object_discovery(
                pairs, conventions, description=name,
                total=count if evaluate.limit is None else min(count, evaluate.limit))
            metrics.setdefault("object_discovery", {})[name] = summary
            write_curve(curves / f"{name}.csv", curve)
            save_grid(images / f"slots_{name}.png", rows)
            log.info("object discovery %s: %s", name, summary)
        if probe.enabled and probe.test_dataset:
            result = run_property_prediction(evaluate, readers, predictions)
            metrics["property_prediction"] = {probe.test_dataset: result}
            log.info("property prediction %s: %s", probe.test_dataset, result)
        # declared DVC plot folders exist even when a task is switched off
        publish_directory(curves, out / "curves")
        publish_directory(images, out / "images" / "discovery")

    metrics = finite_or_none(metrics)
    unreadable = {name: dict(sorted(entry.unreadable.items()))
                  for name, entry in sorted(predictions.datasets.items())}
    numbers = dict(metrics, unreadable_images={name: len(skipped)
                                               for name, skipped in unreadable.items()})
    write_json(metrics_path, numbers)

    reasons = predictions.settings.get("generation_unavailable", {})
    recorded = {"discovery": conventions.as_dict(),
                "datasets": {name: dict(reader.conventions(),
                                        unreadable_images=len(unreadable.get(name, {})))
                             for name, reader in readers.items()}}
    write_json(out / "conventions.json", dict(
        recorded, unreadable_images=unreadable,
        unavailable={f"generation.{dataset}.{metric}": reason
                     for dataset, values in reasons.items() for metric, reason in values.items()}))
    reported = dict(metrics)
    if generation_path is not None and Path(generation_path).is_file():
        generation = json.loads(Path(generation_path).read_text(encoding="utf-8"))["generation"]
        if generation:
            reported["generation"] = attach_reasons(generation, reasons)
    with atomic_open(out / "report.md") as handle:
        handle.write(render_report(reported, flatten_conventions(recorded), config_name))
    return numbers
