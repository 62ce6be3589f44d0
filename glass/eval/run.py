"""The evaluate stage's work: every task of the ``evaluate`` params section on a trained model.

1. ``validate_inputs`` first — the trained folder, every dataset's files and every model's
   weights — and fails with one message listing everything missing, before any model is loaded.
2. Object discovery on each listed dataset (``glass.eval.discovery``).
3. Conditional generation (Table 7): reconstructions from the slots, PSNR/SSIM/LPIPS/FID and a
   Fréchet distance on the project's DINOv2 features (``glass.eval.generation``).
4. Property prediction (Table 8): linear probes on slots matched to objects
   (``glass.eval.property_probe``).
5. Compositional generation (Fig. 6): slot removal / addition grids (``glass.eval.composition``).

Outputs: one metrics JSON (for ``dvc metrics``), best-overlap curves (CSV, for ``dvc plots``),
image grids, the conventions in force and a markdown report beside the paper's numbers.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from glass.data.classes import COCO_CLASSES
from glass.data.params import DataParams
from glass.devices import resolve_device
from glass.errors import InvalidInput, MissingInput
from glass.eval.composition import composition_rows
from glass.eval.datasets import EvalDataset, load_eval_dataset
from glass.eval.discovery import evaluate_object_discovery, ground_truth_image, image_tensor
from glass.eval.generation import GenerationMetrics
from glass.eval.params import (CompositionParams, EvaluateParams, GenerationParams,
                               PropertyPredictionParams)
from glass.eval.property_probe import ProbeSamples, match_slots_to_objects, property_prediction
from glass.eval.report import render_report
from glass.eval.trained_model import TrainedGlass, read_trained_info
from glass.io import atomic_open, publish_directory, staging_directory, write_json
from glass.model_reference import download_advice, hub_model_cached, resolve_reference
from glass.viz import save_grid, tensor_to_image

log = logging.getLogger(__name__)
CLASS_INDEX = {name: index for index, name in enumerate(COCO_CLASSES)}


# ---------------------------------------------------------------------------------------------
# Inputs


def open_datasets(evaluate: EvaluateParams, data: DataParams, prepared: Path,
                  names: set[str], models: Path | None = None,
                  model_resolution: int | None = None) -> dict[str, EvalDataset]:
    """Readers for ``names``; constructing one checks its files (clear errors naming paths).
    ``model_resolution``: the encoder's input size, for its own view of each original image."""
    readers = {}
    preprocess = evaluate.preprocess.replace(model_resolution=model_resolution)
    for name in sorted(names):
        spec = evaluate.datasets[name]
        params = spec.reader_params(data, prepared, name)
        if spec.kind == "objects365" and params.get("sam2_model") is None:
            if models is None:
                raise InvalidInput(f"evaluate.datasets.{name}.sam2_model is not set and no "
                                   "models folder was given (its sam2/ model prompts the masks)")
            params["sam2_model"] = str(models / "sam2")
        readers[name] = load_eval_dataset(spec.kind, preprocess=preprocess,
                                          max_image_pixels=evaluate.max_image_pixels, **params)
    return readers


def model_problems(model_dir: Path) -> list[str]:
    """What is missing to load the trained model: its folder, and the weights it builds on."""
    try:
        info = read_trained_info(model_dir)
    except FileNotFoundError as error:
        return [str(error)]
    problems = []
    for module in ("slot_attention", "mlp_decoder") + (("unet",) if info.get("unet") else ()):
        if not (model_dir / module / "config.json").is_file():
            problems.append(f"{model_dir / module} is missing or incomplete (rerun the train "
                            "stage that wrote it)")
    for role in ("encoder", "stable_diffusion"):
        entry = info[role]
        reference = resolve_reference(entry, model_dir)
        local = (entry.get("source") == "local" if isinstance(entry, dict)
                 else Path(reference).is_absolute() or reference.startswith(".")
                 or Path(reference).exists())
        if local and not Path(reference).exists():
            problems.append(f"{role} folder {reference} (recorded in {model_dir}/glass.json) is "
                            "missing: rerun the models stage (dvc repro)")
        elif not local and not hub_model_cached(reference):
            problems.append(f"{role} weights {reference!r} are not in the Hugging Face cache: "
                            f"{download_advice(reference)}")
    return problems


def validate_inputs(evaluate: EvaluateParams, data: DataParams, prepared: Path,
                    model_dir: Path, models: Path | None = None) -> dict[str, EvalDataset]:
    """Check everything the evaluation needs before loading any model; one error lists all."""
    problems = model_problems(model_dir)
    try:
        resolve_device(evaluate.device)
    except InvalidInput as error:
        problems.append(f"evaluate.device: {error}")
    try:
        model_resolution = int(read_trained_info(model_dir)["encoder_image_size"])
    except FileNotFoundError:
        model_resolution = None   # already reported
    readers: dict[str, EvalDataset] = {}
    for name in sorted(evaluate.used_datasets()):
        try:
            reader = open_datasets(evaluate, data, prepared, {name}, models,
                                   model_resolution)[name]
            problem = reader_problem(reader)
            if problem:
                problems.append(f"dataset {name}: {problem}")
            readers[name] = reader
        except (FileNotFoundError, ValueError, TypeError, RuntimeError) as error:
            problems.append(f"dataset {name}: {error}")
    if problems:
        raise MissingInput("evaluate cannot start:\n  - " + "\n  - ".join(problems))
    return readers


def reader_problem(reader: EvalDataset) -> str | None:
    """Read what a reader needs up front: its index (CLEVRTex builds it lazily), a first usable
    sample (image and mask files; the images before it that cannot be read are skipped later,
    with their reasons), and for Objects365 the SAM 2 weights' fingerprint (without loading SAM 2
    or computing masks)."""
    if len(reader) == 0:
        return "it holds no images (check the folder, split and limit)"
    sam = getattr(reader, "sam", None)
    if sam is not None:
        sam.fingerprint  # a property: hashes the weights files, raising if they are missing
    try:
        reader.first_readable()
    except InvalidInput as error:
        return str(error)
    return None


# ---------------------------------------------------------------------------------------------
# Tasks


def limited(reader: EvalDataset, limit: int | None):
    """(the readable samples, at most ``limit``; how many there are at most, for progress)."""
    count = len(reader) if limit is None else min(len(reader), int(limit))
    return reader.readable(limit), count


def run_generation(model: TrainedGlass, reader: EvalDataset, section: GenerationParams,
                   device: str) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Reconstruct ``images`` images from their slots; Table 7's metrics + DINOv2 Fréchet."""
    metrics = GenerationMetrics(fid=section.fid, lpips=section.lpips, device=device,
                                feature_encoder=model.encoder if section.dinov2_frechet else None)
    for name, reason in metrics.unavailable.items():
        log.warning("generation: %s unavailable: %s", name, reason)
    samples, count = limited(reader, section.images)
    side = int(model.info["decoder_image_size"])
    rows = []
    for sample in tqdm(samples, total=count, desc="conditional generation"):
        slots = model.slots(image_tensor(sample), [sample.key])
        generated = model.generate(slots.conditioning, [sample.key], section.num_inference_steps)
        # the reconstruction is compared with the evaluation image at the decoder's size
        real = torch.nn.functional.interpolate(ground_truth_image(sample), size=(side, side),
                                               mode="bilinear", antialias=True,
                                               align_corners=False).clamp(0, 1)
        metrics.update(real.to(device), generated.to(device))
        if len(rows) < section.grid_rows:
            rows.append([sample.image, tensor_to_image(generated[0])])
    result = metrics.compute()
    result["images"] = result.pop("num_images", count)
    if "fd_dinov2" in result:
        result["dinov2_fd"] = result.pop("fd_dinov2")
    return result, rows


def probe_samples(model: TrainedGlass, reader: EvalDataset, limit: int | None,
                  mask_source: str, description: str) -> ProbeSamples:
    """Slot vectors matched (IoU, Hungarian) to ground-truth objects, with their class index in
    the fixed COCO class list (every dataset here uses COCO names) and box centre."""
    parts = []
    samples, count = limited(reader, limit)
    for sample in tqdm(samples, total=count, desc=f"property probe {description}"):
        slots = model.slots(image_tensor(sample), [sample.key])
        masks = model.soft_masks(slots, sample.size, mask_source)[0].cpu().numpy()
        classes = {}
        for iid, name in sample.instance_classes.items():
            if name not in CLASS_INDEX:
                raise InvalidInput(f"property prediction: {sample.key} has class {name!r}, which "
                                 "is not a COCO class (probes use the 80 COCO classes)")
            classes[iid] = CLASS_INDEX[name]
        matches = match_slots_to_objects(masks, sample.instances, classes,
                                         boxes=sample.boxes, ignore=sample.ignore)
        if matches:
            parts.append(ProbeSamples.from_matches(sample.key, slots.slots[0].cpu().numpy(),
                                                   matches))
    if not parts:
        raise InvalidInput(f"property prediction: no slot matched an object in {description}")
    return ProbeSamples.concatenate(parts)


def run_property_prediction(model: TrainedGlass, readers: dict[str, EvalDataset],
                            section: PropertyPredictionParams, seed: int, device: str,
                            mask_source: str) -> dict[str, Any]:
    train = probe_samples(model, readers[section.train_dataset], section.train_limit,
                          mask_source, section.train_dataset)
    test = probe_samples(model, readers[section.test_dataset], section.test_limit,
                         mask_source, section.test_dataset)
    result = property_prediction(train, test, num_classes=len(COCO_CLASSES),
                                 max_epochs=section.max_epochs, batch_size=section.batch_size,
                                 val_fraction=section.val_fraction, seed=seed, device=device)
    return {"class_top1": result["class_accuracy"], "centre_mse": result["centre_mse"],
            "train_objects": result["num_train"], "test_objects": result["num_test"],
            "classes": int(len(np.unique(np.concatenate([train.classes, test.classes]))))}


def run_composition(model: TrainedGlass, reader: EvalDataset, section: CompositionParams,
                    mask_source: str) -> list[list[np.ndarray]]:
    """Fig. 6 grids on the first ``images`` images (qualitative: the slots come from the
    evaluation image, so that masks, outlines and ground truth share its pixels)."""
    samples, _ = limited(reader, section.images)
    samples = list(samples)
    if len(samples) < 2:
        raise InvalidInput(f"composition: {reader.name} has {len(samples)} readable image(s); "
                           "adding a slot from another image needs 2")
    return composition_rows(model, [ground_truth_image(s) for s in samples],
                            [s.key for s in samples], [s.instances for s in samples],
                            section.num_inference_steps, mask_source)


# ---------------------------------------------------------------------------------------------
# Outputs


def write_curve(path: Path, curve: list[dict[str, float]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["threshold", "objects_found"])
        writer.writeheader()
        writer.writerows(curve)


def run_evaluation(evaluate: EvaluateParams, data: DataParams, model_dir: str | Path,
                   prepared: str | Path, out: str | Path, metrics_path: str | Path,
                   models: str | Path | None = None, config_name: str = "") -> dict[str, Any]:
    """Everything above; writes ``metrics_path`` (JSON for ``dvc metrics``), ``out/curves/``
    (best-overlap curves for ``dvc plots``), ``out/images/`` (grids), ``out/conventions.json``
    (conventions in force, why any metric is unavailable, which images could not be read) and
    ``out/report.md``. The curve and grid folders are built beside their destination and
    replace it when complete. Returns the metrics, reasons included."""
    model_dir, prepared, out = Path(model_dir), Path(prepared), Path(out)
    models = Path(models) if models else None
    readers = validate_inputs(evaluate, data, prepared, model_dir, models)
    device = resolve_device(evaluate.device)
    seed = evaluate.seed
    conventions = evaluate.conventions
    model = TrainedGlass(model_dir, seed=seed, device=device)

    metrics: dict[str, Any] = {}
    recorded = {"discovery": conventions.as_dict(),
                "datasets": {name: reader.conventions() for name, reader in readers.items()}}
    with staging_directory(out / "curves") as curves, staging_directory(out / "images") as images:
        for name in evaluate.object_discovery:
            samples, count = limited(readers[name], evaluate.limit)
            summary, curve, rows = evaluate_object_discovery(model, samples, conventions,
                                                             description=name, total=count)
            metrics.setdefault("object_discovery", {})[name] = summary
            write_curve(curves / f"{name}.csv", curve)
            save_grid(images / f"slots_{name}.png", rows)
            log.info("object discovery %s: %s", name, summary)

        generation = evaluate.generation
        if generation.enabled and generation.dataset:
            name = generation.dataset
            result, rows = run_generation(model, readers[name], generation, device)
            metrics["generation"] = {name: result}
            save_grid(images / f"reconstruction_{name}.png", rows)
            log.info("generation %s: %s", name, result)

        probe = evaluate.property_prediction
        if probe.enabled and probe.test_dataset:
            result = run_property_prediction(model, readers, probe, seed, device,
                                             conventions.mask_source)
            metrics["property_prediction"] = {probe.test_dataset: result}
            log.info("property prediction %s: %s", probe.test_dataset, result)

        composition = evaluate.composition
        if composition.enabled and composition.dataset:
            rows = run_composition(model, readers[composition.dataset], composition,
                                   conventions.mask_source)
            save_grid(images / f"composition_{composition.dataset}.png", rows)
        # declared DVC plot folders exist even when a task is switched off
        publish_directory(curves, out / "curves")
        publish_directory(images, out / "images")

    metrics = finite_or_none(metrics)
    # reasons for unavailable metrics go beside the metrics (dvc metrics shows numbers; the
    # metric itself stays null there) and into the report
    numbers, reasons = split_unavailable(metrics)
    unreadable = {name: dict(sorted(reader.unreadable.items())) for name, reader in readers.items()}
    numbers["unreadable_images"] = {name: len(skipped) for name, skipped in unreadable.items()}
    for name, skipped in unreadable.items():
        recorded["datasets"][name]["unreadable_images"] = len(skipped)
    write_json(metrics_path, numbers)
    write_json(out / "conventions.json", dict(recorded, unavailable=reasons,
                                              unreadable_images=unreadable))
    with atomic_open(out / "report.md") as handle:
        handle.write(render_report(metrics, flatten_conventions(recorded), config_name))
    return dict(metrics, unreadable_images=numbers["unreadable_images"])


def split_unavailable(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(metrics without the ``<name>_unavailable`` reason strings, {"task.dataset.name": reason})."""
    numbers: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for task, datasets in metrics.items():
        for dataset, values in datasets.items():
            kept = {}
            for key, value in values.items():
                if key.endswith("_unavailable"):
                    reasons[f"{task}.{dataset}.{key[:-len('_unavailable')]}"] = value
                else:
                    kept[key] = value
            numbers.setdefault(task, {})[dataset] = kept
    return numbers, reasons


def finite_or_none(value: Any) -> Any:
    """NaN / infinity (undefined metrics, e.g. FG-ARI without foreground under the ocl
    convention) become null: JSON has no such numbers and ``dvc metrics`` cannot read them."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def flatten_conventions(recorded: dict[str, Any]) -> dict[str, Any]:
    flat = dict(recorded["discovery"])
    for name, values in recorded["datasets"].items():
        for key, value in values.items():
            flat[f"{name}.{key}"] = value
    return flat
