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

from glass.eval.composition import composition_rows
from glass.eval.datasets import EvalDataset, load_eval_dataset
from glass.data.classes import COCO_CLASSES
from glass.eval.discovery import (DiscoveryConventions, evaluate_object_discovery,
                                  ground_truth_image, image_tensor)
from glass.eval.generation import GenerationMetrics
from glass.eval.property_probe import ProbeSamples, match_slots_to_objects, property_prediction
from glass.eval.report import render_report
from glass.eval.trained_model import TrainedGlass, read_trained_info
from glass.io import atomic_open, write_json
from glass.model_reference import resolve_reference
from glass.viz import save_grid, tensor_to_image

log = logging.getLogger(__name__)
CLASS_INDEX = {name: index for index, name in enumerate(COCO_CLASSES)}


# ---------------------------------------------------------------------------------------------
# Inputs


def dataset_params(name: str, spec: dict[str, Any], data: dict[str, Any], prepared: Path,
                   preprocess: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(reader kind, reader params) for an ``evaluate.datasets`` entry. A null ``root`` means
    the dataset the rest of the pipeline uses: ``data.coco.root``, ``data.voc.root`` or the
    prepare stage's toy world."""
    params = {key: value for key, value in spec.items() if key != "kind"}
    kind = spec.get("kind")
    if kind is None:
        raise ValueError(f"evaluate.datasets.{name} has no 'kind' (coco, toy, voc, clevrtex, "
                         "objects365)")
    if params.get("root") is None:
        if kind == "toy":
            params["root"] = str(prepared / "toy")
        elif kind in ("coco", "voc"):
            params["root"] = data[kind]["root"]
        else:
            raise ValueError(f"evaluate.datasets.{name}.root is required for {kind}")
    # a null split / id list means the evaluation split the data section names
    if kind == "coco" and params.get("split", "unset") is None:
        params["split"] = data["coco"]["eval_split"]
    if kind == "voc" and params.get("image_list", "unset") is None:
        params["image_list"] = data["voc"]["eval_list"]
    for key, value in preprocess.items():
        params.setdefault(key, value)
    return kind, params


def open_datasets(evaluate: dict[str, Any], data: dict[str, Any], prepared: Path,
                  names: set[str], models: Path | None = None,
                  model_resolution: int | None = None) -> dict[str, EvalDataset]:
    """Readers for ``names``; constructing one checks its files (clear errors naming paths).
    ``model_resolution``: the encoder's input size, for its own view of each original image."""
    readers = {}
    for name in sorted(names):
        if name not in evaluate["datasets"]:
            raise ValueError(f"evaluate: dataset {name!r} is used but not defined under "
                             f"evaluate.datasets (defined: {sorted(evaluate['datasets'])})")
        kind, params = dataset_params(name, evaluate["datasets"][name], data, prepared,
                                      evaluate.get("preprocess", {}))
        if kind == "objects365" and params.get("sam2_model") is None:
            if models is None:
                raise ValueError(f"evaluate.datasets.{name}.sam2_model is not set and no models "
                                 "folder was given (its sam2/ model prompts the masks)")
            params["sam2_model"] = str(models / "sam2")
        if model_resolution is not None:
            params.setdefault("model_resolution", model_resolution)
        readers[name] = load_eval_dataset(kind, **params)
    return readers


def used_datasets(evaluate: dict[str, Any]) -> set[str]:
    names = set(evaluate.get("object_discovery") or [])
    for task, keys in (("generation", ("dataset",)), ("composition", ("dataset",)),
                       ("property_prediction", ("train_dataset", "test_dataset"))):
        section = evaluate.get(task) or {}
        if section.get("enabled", True):
            names.update(section[key] for key in keys if section.get(key))
    return names


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
            problems.append(
                f"{role} weights {reference!r} are not in the Hugging Face cache: on a machine "
                f"with internet run `huggingface-cli download {reference}` and copy the cache "
                "here (HF_HOME), or point the models stage at a local folder")
    return problems


def hub_model_cached(repo_id: str) -> bool:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        return False
    return True


def validate_inputs(evaluate: dict[str, Any], data: dict[str, Any], prepared: Path,
                    model_dir: Path, models: Path | None = None) -> dict[str, EvalDataset]:
    """Check everything the evaluation needs before loading any model; one error lists all."""
    problems = model_problems(model_dir)
    try:
        DiscoveryConventions(**evaluate.get("conventions", {}))
    except (TypeError, ValueError) as error:
        problems.append(f"evaluate.conventions: {error}")
    try:
        model_resolution = int(read_trained_info(model_dir)["encoder_image_size"])
    except FileNotFoundError:
        model_resolution = None   # already reported
    readers: dict[str, EvalDataset] = {}
    for name in sorted(used_datasets(evaluate)):
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
        raise FileNotFoundError("evaluate cannot start:\n  - " + "\n  - ".join(problems))
    return readers


def reader_problem(reader: EvalDataset) -> str | None:
    """Read what a reader needs up front: its index (CLEVRTex builds it lazily), its first
    sample (image and mask files), and for Objects365 the SAM 2 weights' fingerprint (without
    loading SAM 2 or computing masks)."""
    if len(reader) == 0:
        return "it holds no images (check the folder, split and limit)"
    sam = getattr(reader, "sam", None)
    if sam is not None:
        sam.fingerprint  # a property: hashes the weights files, raising if they are missing
        return None   # reading a sample would run SAM 2: the weights check is enough
    reader[0]
    return None


# ---------------------------------------------------------------------------------------------
# Tasks


def limited(reader: EvalDataset, limit: int | None):
    count = len(reader) if limit is None else min(len(reader), int(limit))
    return (reader[i] for i in range(count)), count


def run_generation(model: TrainedGlass, reader: EvalDataset, section: dict[str, Any],
                   device: str) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Reconstruct ``images`` images from their slots; Table 7's metrics + DINOv2 Fréchet."""
    metrics = GenerationMetrics(fid=bool(section.get("fid", True)),
                                lpips=bool(section.get("lpips", True)), device=device,
                                feature_encoder=model.encoder if section.get("dinov2_frechet", True)
                                else None)
    for name, reason in metrics.unavailable.items():
        log.warning("generation: %s unavailable: %s", name, reason)
    samples, count = limited(reader, section.get("images"))
    side = int(model.info["decoder_image_size"])
    rows = []
    for sample in tqdm(samples, total=count, desc="conditional generation"):
        slots = model.slots(image_tensor(sample), [sample.key])
        generated = model.generate(slots.conditioning, [sample.key],
                                   int(section["num_inference_steps"]))
        # the reconstruction is compared with the evaluation image at the decoder's size
        real = torch.nn.functional.interpolate(ground_truth_image(sample), size=(side, side),
                                               mode="bilinear", antialias=True,
                                               align_corners=False).clamp(0, 1)
        metrics.update(real.to(device), generated.to(device))
        if len(rows) < int(section.get("grid_rows", 4)):
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
                raise ValueError(f"property prediction: {sample.key} has class {name!r}, which "
                                 "is not a COCO class (probes use the 80 COCO classes)")
            classes[iid] = CLASS_INDEX[name]
        matches = match_slots_to_objects(masks, sample.instances, classes,
                                         boxes=sample.boxes, ignore=sample.ignore)
        if matches:
            parts.append(ProbeSamples.from_matches(sample.key, slots.slots[0].cpu().numpy(),
                                                   matches))
    if not parts:
        raise ValueError(f"property prediction: no slot matched an object in {description}")
    return ProbeSamples.concatenate(parts)


def run_property_prediction(model: TrainedGlass, readers: dict[str, EvalDataset],
                            section: dict[str, Any], seed: int, device: str,
                            mask_source: str) -> dict[str, Any]:
    train = probe_samples(model, readers[section["train_dataset"]], section.get("train_limit"),
                          mask_source, section["train_dataset"])
    test = probe_samples(model, readers[section["test_dataset"]], section.get("test_limit"),
                         mask_source, section["test_dataset"])
    result = property_prediction(train, test, num_classes=len(COCO_CLASSES),
                                 max_epochs=int(section["max_epochs"]),
                                 batch_size=int(section["batch_size"]),
                                 val_fraction=float(section.get("val_fraction", 0.1)),
                                 seed=seed, device=device)
    return {"class_top1": result["class_accuracy"], "centre_mse": result["centre_mse"],
            "train_objects": result["num_train"], "test_objects": result["num_test"],
            "classes": int(len(np.unique(np.concatenate([train.classes, test.classes]))))}


def run_composition(model: TrainedGlass, reader: EvalDataset, section: dict[str, Any],
                    mask_source: str) -> list[list[np.ndarray]]:
    """Fig. 6 grids on the first ``images`` images (qualitative: the slots come from the
    evaluation image, so that masks, outlines and ground truth share its pixels)."""
    samples, _ = limited(reader, max(2, int(section.get("images", 4))))
    samples = list(samples)
    return composition_rows(model, [ground_truth_image(s) for s in samples],
                            [s.key for s in samples], [s.instances for s in samples],
                            int(section["num_inference_steps"]), mask_source)


# ---------------------------------------------------------------------------------------------
# Outputs


def write_curve(path: Path, curve: list[dict[str, float]]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["threshold", "objects_found"])
        writer.writeheader()
        writer.writerows(curve)


def run_evaluation(params: dict[str, Any], model_dir: str | Path, prepared: str | Path,
                   out: str | Path, metrics_path: str | Path, models: str | Path | None = None,
                   config_name: str = "") -> dict[str, Any]:
    """Everything above; writes ``metrics_path`` (JSON for ``dvc metrics``), ``out/curves/``
    (best-overlap curves for ``dvc plots``), ``out/images/`` (grids), ``out/conventions.json``
    (conventions in force, and why any metric is unavailable) and ``out/report.md``. Returns the
    metrics, reasons included."""
    evaluate, data = params["evaluate"], params["data"]
    model_dir, prepared, out = Path(model_dir), Path(prepared), Path(out)
    models = Path(models) if models else None
    readers = validate_inputs(evaluate, data, prepared, model_dir, models)
    device = evaluate.get("device", "cpu")
    seed = int(evaluate.get("seed", 0))
    conventions = DiscoveryConventions(**evaluate.get("conventions", {}))
    model = TrainedGlass(model_dir, seed=seed, device=device)
    # declared DVC plot folders exist even when a task is switched off
    (out / "curves").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)

    metrics: dict[str, Any] = {}
    recorded = {"discovery": conventions.as_dict(),
                "datasets": {name: reader.conventions() for name, reader in readers.items()}}
    for name in evaluate.get("object_discovery") or []:
        samples, count = limited(readers[name], evaluate.get("limit"))
        summary, curve, rows = evaluate_object_discovery(model, samples, conventions,
                                                         description=name, total=count)
        metrics.setdefault("object_discovery", {})[name] = summary
        write_curve(out / "curves" / f"{name}.csv", curve)
        save_grid(out / "images" / f"slots_{name}.png", rows)
        log.info("object discovery %s: %s", name, summary)

    generation = evaluate.get("generation") or {}
    if generation.get("enabled", True) and generation.get("dataset"):
        name = generation["dataset"]
        result, rows = run_generation(model, readers[name], generation, device)
        metrics["generation"] = {name: result}
        save_grid(out / "images" / f"reconstruction_{name}.png", rows)
        log.info("generation %s: %s", name, result)

    probe = evaluate.get("property_prediction") or {}
    if probe.get("enabled", True) and probe.get("test_dataset"):
        result = run_property_prediction(model, readers, probe, seed, device,
                                         conventions.mask_source)
        metrics["property_prediction"] = {probe["test_dataset"]: result}
        log.info("property prediction %s: %s", probe["test_dataset"], result)

    composition = evaluate.get("composition") or {}
    if composition.get("enabled", True) and composition.get("dataset"):
        rows = run_composition(model, readers[composition["dataset"]], composition,
                               conventions.mask_source)
        save_grid(out / "images" / f"composition_{composition['dataset']}.png", rows)

    metrics = finite_or_none(metrics)
    # reasons for unavailable metrics go beside the metrics (dvc metrics shows numbers; the
    # metric itself stays null there) and into the report
    numbers, reasons = split_unavailable(metrics)
    write_json(metrics_path, numbers)
    write_json(out / "conventions.json", dict(recorded, unavailable=reasons))
    with atomic_open(out / "report.md") as handle:
        handle.write(render_report(metrics, flatten_conventions(recorded), config_name))
    return metrics


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
