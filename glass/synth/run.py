"""The ``synthesize`` stage: prompts → WebDataset shards of (image, pseudo mask, metadata).

Prompt records become synthesis records with a ``key`` (the prompt's image id, or
``<image id>-<j>`` with several images per prompt). Prompts that cannot be synthesised are
recorded, never dropped silently: skipped upstream (prompts stage), without a class (skipped or
generated without mask, as ``synth.no_class_prompts`` says), or refused by the generator (listed
in the shard manifest). Shards are produced in a scratch folder outside DVC's outputs (DVC deletes
outputs before a run), so an interrupted run resumes; when every shard is done they are moved
into the output folder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glass.io import file_sha256, read_jsonl, write_json, write_jsonl
from glass.seeding import sample_seed
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis
from glass.synth.shards import settings_fingerprint
from glass.viz import save_grid

log = logging.getLogger(__name__)

NO_CLASS_POLICIES = ("skip", "generate_without_mask")
# Settings that change how fast the work goes, never what it produces: kept out of fingerprints
# so that changing them neither redoes finished shards nor changes the manifest.
SPEED_ONLY_SETTINGS = ("batch_size", "num_workers")


def output_settings(synth: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in synth.items() if key not in SPEED_ONLY_SETTINGS}


def synthesis_records(prompt_records: list[dict], *, images_per_prompt: int, no_class_prompts: str,
                      max_samples: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """(records to synthesise, skipped prompts with reasons)."""
    if no_class_prompts not in NO_CLASS_POLICIES:
        raise ValueError(f"synth.no_class_prompts is {no_class_prompts!r}; expected one of "
                         f"{NO_CLASS_POLICIES}")
    if images_per_prompt < 1:
        raise ValueError(f"synth.images_per_prompt must be >= 1, got {images_per_prompt}")
    records, skipped = [], []
    for prompt in prompt_records:
        image_id = prompt["image_id"]
        if "skipped" in prompt:
            skipped.append({"image_id": image_id, "reason": f"prompts stage: {prompt['skipped']}"})
            continue
        if not prompt["classes"] and no_class_prompts == "skip":
            skipped.append({"image_id": image_id, "reason": "prompt has no COCO class"})
            continue
        for j in range(images_per_prompt):
            key = image_id if images_per_prompt == 1 else f"{image_id}-{j}"
            records.append({"key": key, "source_id": image_id, "prompt": prompt["prompt"],
                            "caption": prompt["caption"], "classes": list(prompt["classes"])})
    if max_samples is not None and len(records) > max_samples:
        # seeded subset chosen per key, so one sample's selection never depends on the others
        records = sorted(records, key=lambda r: sample_seed(seed, r["key"], "synth-subset"))[:max_samples]
        records.sort(key=lambda r: r["key"])
    return records, skipped


def run_fingerprint(synth: dict[str, Any], models: dict[str, str], seed: int,
                    prompts_sha: str) -> str:
    """Names the scratch folder: everything that decides the shards' content."""
    relevant = {"synth": synth, "models": models, "seed": seed, "prompts": prompts_sha}
    return settings_fingerprint(relevant)[:16]


def _iter_shard_samples(shard_dir: Path):
    """(shard index, key, {extension: bytes}) for every sample of every shard, in shard order."""
    for index, tar_path in enumerate(sorted(shard_dir.glob("shard-*.tar"))):
        grouped: dict[str, dict[str, bytes]] = {}
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                grouped.setdefault(key, {})[extension] = tar.extractfile(member).read()
        for key, members in grouped.items():
            yield index, key, members


def mask_statistics(shard_dir: Path, grid_path: Path | None, grid_rows: int = 8) -> dict[str, Any]:
    """Label-map statistics over all samples, and an image grid of the first sample of each shard
    (then the next ones) so that the grid spreads over the dataset."""
    unsure, background, labelled_classes, classes_per_sample = [], [], [], []
    without_mask, rows, grid_shards = 0, [], set()
    for shard_index, key, members in _iter_shard_samples(shard_dir):
        if "mask.png" not in members:
            without_mask += 1
            continue
        mask = np.asarray(Image.open(io.BytesIO(members["mask.png"])))
        unsure.append(float((mask == 255).mean()))
        background.append(float((mask == 0).mean()))
        present = set(np.unique(mask).tolist()) - {0, 255}
        labelled_classes.append(len(present))
        meta = json.loads(members["json"])
        classes_per_sample.append(len(meta.get("classes", [])))
        if grid_path is not None and len(rows) < grid_rows and shard_index not in grid_shards:
            grid_shards.add(shard_index)
            rows.append([np.asarray(Image.open(io.BytesIO(members["jpg"])).convert("RGB")), mask])
    if grid_path is not None and rows:
        save_grid(grid_path, rows)
    count = len(unsure)
    mean = (lambda values: round(float(np.mean(values)), 4) if values else 0.0)
    return {"samples_with_mask": count, "samples_without_mask": without_mask,
            "mean_unsure_fraction": mean(unsure), "mean_background_fraction": mean(background),
            "mean_prompt_classes": mean(classes_per_sample),
            "mean_classes_in_mask": mean(labelled_classes),
            "share_prompt_classes_found": round(sum(labelled_classes) / sum(classes_per_sample), 4)
            if sum(classes_per_sample) else 0.0}


def _move_into(source_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source_dir.iterdir()):
        if path.name.endswith(".tmp"):
            continue
        os.replace(path, out_dir / path.name)
    shutil.rmtree(source_dir)


def run_synthesize(prompts_path: str | Path, synth: dict[str, Any], models: dict[str, str],
                   seed: int, out_dir: str | Path, scratch_root: str | Path,
                   metrics_path: str | Path, grid_path: str | Path) -> dict[str, Any]:
    prompts_path, out_dir = Path(prompts_path), Path(out_dir)
    prompt_records = read_jsonl(prompts_path)
    records, skipped = synthesis_records(
        prompt_records, images_per_prompt=int(synth.get("images_per_prompt", 1)),
        no_class_prompts=synth.get("no_class_prompts", "skip"),
        max_samples=synth.get("max_samples"), seed=seed)
    if not records:
        raise ValueError(f"{prompts_path}: no prompt can be synthesised "
                         f"({len(skipped)} skipped); check the prompts stage's metrics")
    fingerprint = run_fingerprint(output_settings(synth), models, seed, file_sha256(prompts_path))
    scratch_dir = Path(scratch_root) / f"synth-{fingerprint}"
    spec = GeneratorSpec(synth["backend"], dict(output_settings(synth), models=models))
    manifest = run_sharded_synthesis(
        records, spec, scratch_dir, shard_size=int(synth["shard_size"]), seed=seed,
        batch_size=int(synth["batch_size"]), num_workers=synth.get("num_workers"),
        jpeg_quality=int(synth["jpeg_quality"]), store_attention=bool(synth["store_attention"]),
        fingerprint=fingerprint)
    write_jsonl(scratch_dir / "skipped_prompts.jsonl", skipped)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    _move_into(scratch_dir, out_dir)

    generator_skips = Counter(re.sub(r"\[.*?\]|\d+", "…", s["reason"])
                              for shard in manifest["shards"] for s in shard["skipped"])
    upstream_skips = Counter(s["reason"] for s in skipped)
    stats = mask_statistics(out_dir, Path(grid_path))
    metrics = {"prompts": len(prompt_records), "requested_samples": len(records),
               "samples": manifest["total_samples"],
               "skipped_before_generation": len(skipped),
               "skipped_by_generator": sum(generator_skips.values()),
               "shards": len(manifest["shards"]), **stats,
               "skip_reasons": dict(sorted((upstream_skips + generator_skips).items()))}
    write_json(metrics_path, metrics)
    log.info("synthesis: %s", metrics)
    return metrics
