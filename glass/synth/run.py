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
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glass.errors import InvalidInput
from glass.io import file_sha256, fingerprint, publish_directory, read_jsonl, write_json, write_jsonl
from glass.model_reference import model_contents
from glass.seeding import sample_seed
from glass.shard_format import (BACKGROUND_LABEL, MASK_MEMBER, UNSURE_LABEL, read_samples)
from glass.synth.params import GeneratorSettings, SynthParams
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis
from glass.viz import save_grid

log = logging.getLogger(__name__)

NO_CLASS_POLICIES = ("skip", "generate_without_mask")


def synthesis_records(prompt_records: list[dict], *, images_per_prompt: int, no_class_prompts: str,
                      max_samples: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """(records to synthesise, skipped prompts with reasons)."""
    if no_class_prompts not in NO_CLASS_POLICIES:
        raise InvalidInput(f"synth.no_class_prompts is {no_class_prompts!r}; expected one of "
                           f"{NO_CLASS_POLICIES}")
    if images_per_prompt < 1:
        raise InvalidInput(f"synth.images_per_prompt must be >= 1, got {images_per_prompt}")
    if max_samples is not None and max_samples < 1:
        raise InvalidInput(f"synth.max_samples must be >= 1 or null, got {max_samples}")
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


def run_fingerprint(synth: SynthParams, generator: GeneratorSettings, seed: int,
                    prompts_sha: str) -> str:
    """Names the scratch folder: everything that decides the shards' content (not the batch
    size or the worker count, which only change the speed)."""
    relevant = {"generator": generator.relevant(), "seed": seed, "prompts": prompts_sha,
                # the weights, not only the names: a retrained model's old shards are not reused
                "model_contents": model_contents(generator.models),
                "records": {"images_per_prompt": synth.images_per_prompt,
                            "no_class_prompts": synth.no_class_prompts,
                            "max_samples": synth.max_samples},
                "shards": {"shard_size": synth.shard_size, "jpeg_quality": synth.jpeg_quality}}
    return fingerprint(relevant, 16)


def _iter_shard_samples(shard_dir: Path):
    """(shard index, key, {extension: bytes}) for every sample of every shard, in shard order."""
    for index, tar_path in enumerate(sorted(shard_dir.glob("shard-*.tar"))):
        grouped, error = read_samples(tar_path)
        if error:
            raise InvalidInput(f"{tar_path}: {error}; rerun the synthesize stage")
        for key, members in grouped.items():
            yield index, key, members


def mask_statistics(shard_dir: Path, grid_path: Path | None, grid_rows: int = 8) -> dict[str, Any]:
    """Label-map statistics over all samples, and an image grid of the first sample of each shard
    (then the next ones) so that the grid spreads over the dataset."""
    unsure, background, labelled_classes, classes_per_sample = [], [], [], []
    without_mask, rows, grid_shards = 0, [], set()
    for shard_index, key, members in _iter_shard_samples(shard_dir):
        if MASK_MEMBER not in members:
            without_mask += 1
            continue
        mask = np.asarray(Image.open(io.BytesIO(members[MASK_MEMBER])))
        unsure.append(float((mask == UNSURE_LABEL).mean()))
        background.append(float((mask == BACKGROUND_LABEL).mean()))
        present = set(np.unique(mask).tolist()) - {BACKGROUND_LABEL, UNSURE_LABEL}
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


def _remove_partial_files(folder: Path) -> None:
    """Temporary files of writes a killed run left behind: not part of a finished result."""
    for path in folder.rglob("*.tmp"):
        if path.is_file():
            path.unlink()


def run_synthesize(prompts_path: str | Path, synth: SynthParams, models: dict[str, str],
                   seed: int, out_dir: str | Path, scratch_root: str | Path,
                   metrics_path: str | Path, grid_path: str | Path) -> dict[str, Any]:
    """Synthesise every prompt into shards in ``scratch_root`` (resumable), then publish the
    finished folder at ``out_dir`` (``glass.io.publish_directory``: the old shards stay until the
    new ones are in place, also when scratch and output are on different filesystems)."""
    prompts_path, out_dir = Path(prompts_path), Path(out_dir)
    prompt_records = read_jsonl(prompts_path)
    records, skipped = synthesis_records(
        prompt_records, images_per_prompt=synth.images_per_prompt,
        no_class_prompts=synth.no_class_prompts, max_samples=synth.max_samples, seed=seed)
    if not records:
        raise InvalidInput(f"{prompts_path}: no prompt can be synthesised "
                           f"({len(skipped)} skipped); check the prompts stage's metrics")
    generator = synth.generator_settings(models)
    fingerprint = run_fingerprint(synth, generator, seed, file_sha256(prompts_path))
    scratch_dir = Path(scratch_root) / f"synth-{fingerprint}"
    spec = GeneratorSpec(synth.backend, generator)
    manifest = run_sharded_synthesis(
        records, spec, scratch_dir, shard_size=synth.shard_size, seed=seed,
        batch_size=synth.batch_size, num_workers=synth.num_workers,
        jpeg_quality=synth.jpeg_quality, store_attention=synth.store_attention,
        fingerprint=fingerprint)
    write_jsonl(scratch_dir / "skipped_prompts.jsonl", skipped)
    _remove_partial_files(scratch_dir)
    publish_directory(scratch_dir, out_dir)

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
