"""The ``predict`` stage's work: the trained model over the evaluation images (the expensive half
of the evaluation; ``glass.eval.run`` measures what it stores).

1. ``validate_inputs`` first — the trained folder, every dataset's files and a first readable
   image of each, every model's weights, the device — and fails with one message listing
   everything missing, before any model is loaded.
2. For every object-discovery and property-probe dataset: each readable image's slot-index maps
   of both mask sources at the ground truth's resolution, and its slot vectors
   (``glass.eval.predictions``), resumable part by part.
3. Conditional generation (Table 7): reconstructions from the slots, PSNR/SSIM/LPIPS/FID and a
   Fréchet distance on the project's DINOv2 features (``glass.eval.generation``), written as
   this stage's metrics.
4. Compositional generation (Fig. 6): slot removal / addition grids (``glass.eval.composition``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from glass.data.params import DataParams
from glass.devices import resolve_device
from glass.errors import InvalidInput, MissingInput
from glass.eval.composition import composition_rows
from glass.eval.datasets import EvalDataset
from glass.eval.datasets.sample import EvalSample, UnreadableSample
from glass.eval.discovery import ground_truth_image, image_tensor
from glass.eval.generation import GenerationMetrics
from glass.eval.params import CompositionParams, EvaluateParams, GenerationParams
from glass.eval.predictions import (PART_SIZE, DatasetPredictions, PredictedImage, open_reader,
                                    part_name, write_index, write_part)
from glass.eval.outputs import finite_or_none
from glass.io import (fingerprint, folder_digest, publish_directory, staging_directory,
                      write_json)
from glass.model import GlassModel, folder_problems, read_index, slot_masks_to_labels
from glass.viz import save_grid, tensor_to_image

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Inputs


def reader_settings(evaluate: EvaluateParams, data: DataParams, prepared: Path, name: str,
                    models: Path | None, model_resolution: int | None) -> dict[str, Any]:
    """The reader kind and params of dataset ``name`` as the predictions record them (and the
    evaluate stage reads them again), ground-truth conventions excluded."""
    spec = evaluate.datasets[name]
    params = spec.reader_params(data, prepared, name)
    if spec.kind == "objects365" and params.get("sam2_model") is None:
        if models is None:
            raise InvalidInput(f"evaluate.datasets.{name}.sam2_model is not set and no models "
                               "folder was given (its sam2/ model prompts the masks)")
        params["sam2_model"] = str(models / "sam2")
    preprocess = evaluate.preprocess.replace(model_resolution=model_resolution)
    return {"kind": spec.kind, "params": params, "preprocess": preprocess.as_dict(),
            "max_image_pixels": evaluate.max_image_pixels}


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


def validate_inputs(evaluate: EvaluateParams, data: DataParams, prepared: Path,
                    model_dir: Path, models: Path | None = None
                    ) -> tuple[dict[str, EvalDataset], dict[str, dict[str, Any]]]:
    """Check everything the predictions need before loading any model; one error lists all.
    Returns the readers and their recorded settings."""
    problems = folder_problems(model_dir)
    try:
        resolve_device(evaluate.device)
    except InvalidInput as error:
        problems.append(f"evaluate.device: {error}")
    try:
        index = read_index(model_dir)
        model_resolution = index.encoder_image_size
        if (evaluate.composition.enabled and evaluate.composition.mask_source == "mlp_decoder"
                and "mlp_decoder" not in index.components):
            problems.append(f"evaluate.composition.mask_source is mlp_decoder, but {model_dir} "
                            "has no MLP decoder (an official checkpoint): use slot_attention")
    except (MissingInput, InvalidInput):
        model_resolution = None   # already reported
    readers: dict[str, EvalDataset] = {}
    settings: dict[str, dict[str, Any]] = {}
    for name in sorted(evaluate.used_datasets()):
        try:
            settings[name] = reader_settings(evaluate, data, prepared, name, models,
                                             model_resolution)
            reader = open_reader(settings[name])
            problem = reader_problem(reader)
            if problem:
                problems.append(f"dataset {name}: {problem}")
            readers[name] = reader
        except (FileNotFoundError, ValueError, TypeError, RuntimeError) as error:
            problems.append(f"dataset {name}: {error}")
    if problems:
        raise MissingInput("the evaluation cannot start:\n  - " + "\n  - ".join(problems))
    return readers, settings


# ---------------------------------------------------------------------------------------------
# Slot masks and slots


def predict_image(model: GlassModel, sample, seed: int) -> PredictedImage:
    """Every mask source's slot-index map at the ground truth's size, and the slot vectors."""
    slots = model.infer_slots(image_tensor(sample), [sample.key], seed)
    masks = {source: slot_masks_to_labels(model.soft_masks(slots, sample.size, source))[0]
             .cpu().numpy() for source in model.mask_sources}
    return PredictedImage(key=sample.key, image_id=None, masks=masks,
                          slots=slots.slots[0].float().cpu().numpy())


def _completed_parts(folder: Path) -> list[dict[str, Any]]:
    """The sidecars of the parts a previous run finished, in order (up to the first gap)."""
    done = []
    while True:
        npz, sidecar = folder / part_name(len(done)), folder / f"part-{len(done):06d}.json"
        if not (npz.is_file() and sidecar.is_file()):
            return done
        done.append(json.loads(sidecar.read_text(encoding="utf-8")))


def predict_dataset(model: GlassModel, reader: EvalDataset, name: str,
                    settings: dict[str, Any], limit: int | None,
                    folder: Path, seed: int) -> DatasetPredictions:
    """Store ``name``'s predictions in ``folder``, PART_SIZE images a part, each part with a
    sidecar (its keys, ids, the unreadable images it passed, where the next part starts):
    a rerun keeps the finished parts and continues after them."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = DatasetPredictions(name=name, kind=settings["kind"], reader=settings,
                               num_slots=int(model.slot_attention.config.num_slots),
                               mask_sources=list(model.mask_sources))
    done = _completed_parts(folder)
    for sidecar in done:
        entry.keys += sidecar["keys"]
        entry.image_ids += sidecar["image_ids"]
        entry.unreadable.update(sidecar["unreadable"])
        entry.parts.append(part_name(len(entry.parts)))
    start = done[-1]["next_position"] if done else 0
    if done:
        log.info("%s: resuming after %d stored part(s), %d images", name, len(done),
                 len(entry.keys))
    ids = reader.image_ids
    total = len(ids) if limit is None else min(len(ids), limit)
    batch: list[PredictedImage] = []
    batch_unreadable: dict[str, str] = {}

    def flush(next_position: int) -> None:
        index = len(entry.parts)
        write_part(folder / part_name(index), batch)
        write_json(folder / f"part-{index:06d}.json", {
            "keys": [image.key for image in batch],
            "image_ids": [image.image_id for image in batch],
            "unreadable": dict(batch_unreadable), "next_position": next_position})
        entry.parts.append(part_name(index))
        batch.clear()
        batch_unreadable.clear()

    with tqdm(total=total, initial=min(len(entry.keys), total), desc=f"predict {name}",
              unit="img") as progress:
        position = start
        for position in range(start, len(ids)):
            if limit is not None and len(entry.keys) >= limit:
                position -= 1
                break
            image_id = ids[position]
            try:
                sample = reader.load(image_id)
            except UnreadableSample as error:
                log.warning("%s: skipping unreadable image %s", name, error)
                batch_unreadable[str(image_id)] = error.reason
                entry.unreadable[str(image_id)] = error.reason
                continue
            predicted = predict_image(model, sample, seed)
            predicted.image_id = image_id.item() if isinstance(image_id, np.generic) else image_id
            batch.append(predicted)
            entry.keys.append(predicted.key)
            entry.image_ids.append(predicted.image_id)
            progress.update(1)
            if len(batch) == PART_SIZE:
                flush(position + 1)
        if batch or batch_unreadable:
            flush(position + 1)
    if not entry.keys:
        raise InvalidInput(f"dataset {name}: none of its images could be read "
                           f"({len(entry.unreadable)} unreadable)")
    return entry


# ---------------------------------------------------------------------------------------------
# Generation


def limited(reader: EvalDataset, limit: int | None):
    """(the readable samples, at most ``limit``; how many there are at most, for progress)."""
    count = len(reader) if limit is None else min(len(reader), int(limit))
    return reader.readable(limit), count


def reconstruction_target(sample: EvalSample, side: int) -> torch.Tensor:
    """What a reconstruction is scored against: the evaluation image at the decoder's size
    ``side``, (1, 3, side, side) in [0, 1] (bilinear with antialiasing)."""
    return torch.nn.functional.interpolate(ground_truth_image(sample), size=(side, side),
                                           mode="bilinear", antialias=True,
                                           align_corners=False).clamp(0, 1)


def run_generation(model: GlassModel, reader: EvalDataset, section: GenerationParams,
                   device: str, seed: int) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Reconstruct ``images`` images from their slots; Table 7's metrics + DINOv2 Fréchet."""
    metrics = GenerationMetrics(fid=section.fid, lpips=section.lpips, device=device,
                                feature_encoder=model.encoder if section.dinov2_frechet else None)
    for name, reason in metrics.unavailable.items():
        log.warning("generation: %s unavailable: %s", name, reason)
    samples, count = limited(reader, section.images)
    side = model.index.decoder_image_size
    rows = []
    for sample in tqdm(samples, total=count, desc="conditional generation"):
        slots = model.infer_slots(image_tensor(sample), [sample.key], seed)
        generated = model.generate(slots.conditioning, [sample.key], seed,
                                   section.num_inference_steps, sampler=section.sampler,
                                   guidance_scale=section.guidance_scale)
        real = reconstruction_target(sample, side)
        metrics.update(real.to(device), generated.to(device))
        if len(rows) < section.grid_rows:
            rows.append([sample.image, tensor_to_image(generated[0])])
    result = metrics.compute()
    result["images"] = result.pop("num_images", count)
    if "fd_dinov2" in result:
        result["dinov2_fd"] = stable_distance(result.pop("fd_dinov2"))
    return result, rows


# Decimal places a Fréchet distance is reported to. With fewer images than feature dimensions the
# covariance product is near-singular, and its matrix square root turns the float32 rounding of
# multithreaded feature extraction into run-to-run differences near the 8th significant digit
# (34.6306438 vs 34.6306437 on the CPU graph's 32 images): rounded, the metrics file, and so the
# DVC lock, stays the same bytes from run to run.
FRECHET_DECIMALS = 4


def stable_distance(value: float | None) -> float | None:
    return None if value is None else round(value, FRECHET_DECIMALS)


def run_composition(model: GlassModel, reader: EvalDataset,
                    section: CompositionParams, seed: int) -> list[list[np.ndarray]]:
    """Fig. 6 grids on the first ``images`` images (qualitative: the slots come from the
    evaluation image, so that masks, outlines and ground truth share its pixels)."""
    samples, _ = limited(reader, section.images)
    samples = list(samples)
    if len(samples) < 2:
        raise InvalidInput(f"composition: {reader.name} has {len(samples)} readable image(s); "
                           "adding a slot from another image needs 2")
    return composition_rows(model, [ground_truth_image(s) for s in samples],
                            [s.key for s in samples], [s.instances for s in samples],
                            section.num_inference_steps, section.mask_source, seed,
                            sampler=section.sampler, guidance_scale=section.guidance_scale)


def split_unavailable(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(results without the ``<name>_unavailable`` reason strings, {name: reason})."""
    numbers = {key: value for key, value in results.items() if not key.endswith("_unavailable")}
    reasons = {key[:-len("_unavailable")]: value for key, value in results.items()
               if key.endswith("_unavailable")}
    return numbers, reasons


# ---------------------------------------------------------------------------------------------
# The stage


def prediction_fingerprint(evaluate: EvaluateParams, settings: dict[str, dict[str, Any]],
                           model_dir: Path) -> str:
    """Names the scratch folder: the params that decide the predictions, the readers and the
    trained model's files (a retrained model never resumes another's parts)."""
    relevant = {"evaluate": evaluate.predict_params(), "readers": settings,
                "model": folder_digest(model_dir)}
    return fingerprint(relevant, 16)


def run_prediction(evaluate: EvaluateParams, data: DataParams, model_dir: str | Path,
                   prepared: str | Path, out: str | Path, scratch: str | Path,
                   metrics_path: str | Path, images_dir: str | Path,
                   models: str | Path | None = None) -> dict[str, Any]:
    """Everything above; writes ``out`` (the predictions folder, published whole at the end),
    ``metrics_path`` (the generation metrics, for ``dvc metrics``; a metric that cannot be given
    is null and its reason is under ``unavailable``) and ``images_dir`` (the reconstruction and
    composition grids). Returns the generation metrics."""
    model_dir, prepared, out = Path(model_dir), Path(prepared), Path(out)
    models = Path(models) if models else None
    readers, settings = validate_inputs(evaluate, data, prepared, model_dir, models)
    device = resolve_device(evaluate.device)
    model = GlassModel.from_pretrained(model_dir, device=device)
    work = Path(scratch) / f"predict-{prediction_fingerprint(evaluate, settings, model_dir)}"

    entries = {name: predict_dataset(model, readers[name], name, settings[name],
                                     evaluate.limit_for(name), work / name, evaluate.seed)
               for name in evaluate.predicted_datasets()}
    for name, entry in entries.items():
        log.info("%s: %d images predicted, %d unreadable", name, len(entry.keys),
                 len(entry.unreadable))

    generation: dict[str, Any] = {}
    reasons: dict[str, dict[str, str]] = {}
    with staging_directory(images_dir) as grids:
        section = evaluate.generation
        if section.enabled and section.dataset:
            result, rows = run_generation(model, readers[section.dataset], section, device,
                                          evaluate.seed)
            generation[section.dataset], reasons[section.dataset] = split_unavailable(result)
            save_grid(grids / f"reconstruction_{section.dataset}.png", rows)
            log.info("generation %s: %s", section.dataset, generation[section.dataset])
        composition = evaluate.composition
        if composition.enabled and composition.dataset:
            rows = run_composition(model, readers[composition.dataset], composition,
                                   evaluate.seed)
            save_grid(grids / f"composition_{composition.dataset}.png", rows)
        publish_directory(grids, images_dir)   # the declared plots folder, even if empty

    generation = finite_or_none(generation)
    # the evaluate stage puts the reasons beside the conventions and into the report
    write_index(work, entries, {"evaluate": evaluate.predict_params(),
                                "generation_unavailable": reasons})
    publish_directory(work, out)
    write_json(metrics_path, {"generation": generation})
    return generation
