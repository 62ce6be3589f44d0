"""The ``caption`` stage: one JSONL record per image (or per template sample).

Record: ``{"image_id", "backend", "caption", "classes"?, "notes"?}`` for a captioned image, or
``{"image_id", "backend", "skipped": <reason>}`` for one that could not be captioned. ``classes``
is present when the backend knows them (labels, template); the prompts stage then uses them
instead of extracting nouns from the caption.

Work is appended to a scratch file (outside DVC's declared outputs, which DVC deletes before a
run) keyed by a fingerprint of everything that determines the captions, so a rerun after a crash
continues where it stopped and a changed setting starts afresh. The output file is written
atomically at the end, in index order.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from glass.caption.labels import caption_from_labels
from glass.caption.params import Blip2Params, CaptionParams
from glass.caption.template import TemplateDistribution, sample_template_caption
from glass.data.images import UnreadableImage, load_rgb_image
from glass.devices import check_gpu_setting
from glass.errors import InvalidInput
from glass.io import (ResumableJsonl, clean_caption, file_sha256, fingerprint, read_jsonl,
                      write_jsonl)
from glass.seeding import sample_rng

log = logging.getLogger(__name__)


def caption_fingerprint(params: CaptionParams, seed: int, index_sha: str) -> str:
    backend = params.backend
    settings = getattr(params, backend).as_dict() if backend in ("blip2", "template") else {}
    relevant = {"backend": backend, "settings": settings, "seed": seed,
                "min_image_side": params.min_image_side, "index": index_sha}
    if backend == "blip2":   # only BLIP-2 reads images
        relevant["max_image_pixels"] = params.max_image_pixels
    return fingerprint(relevant, 16)


def finish_caption(record: dict) -> dict:
    """A produced caption made safe for every later stage: text that encodes as UTF-8, without
    control or invisible characters (each change noted in ``notes``); a caption that is not
    text, or nothing once cleaned, becomes a skip with the reason."""
    if "skipped" in record:
        return record
    caption = record.get("caption")
    if not isinstance(caption, str):
        return _skip(record["image_id"], record["backend"],
                     f"the caption is {type(caption).__name__}, not text")
    cleaned, notes = clean_caption(caption)
    if not cleaned.strip():
        return _skip(record["image_id"], record["backend"],
                     "the caption is empty" + (" once control characters are removed"
                                               if notes else ""))
    if notes:
        log.warning("caption of %s repaired: %s", record["image_id"], "; ".join(notes))
        record = dict(record, caption=cleaned, notes=list(record.get("notes", [])) + notes)
    return record


def _skip(image_id: str, backend: str, reason: str) -> dict:
    return {"image_id": image_id, "backend": backend, "skipped": reason}


def caption_with_labels(records: Iterable[dict]) -> Iterator[dict]:
    for record in records:
        if not record["classes"]:
            yield _skip(record["image_id"], "labels", "image has no ground-truth objects")
            continue
        yield {"image_id": record["image_id"], "backend": "labels",
               "caption": caption_from_labels(record["classes"], record["instance_counts"]),
               "classes": list(record["classes"])}


def caption_with_dataset(records: Iterable[dict], seed: int) -> Iterator[dict]:
    """One of the dataset's own captions per image (COCO captions), chosen by (seed, image id)."""
    for record in records:
        captions = [c for c in record.get("captions", []) if isinstance(c, str) and c.strip()]
        if not captions:
            yield _skip(record["image_id"], "dataset", "the dataset has no caption for this image")
            continue
        choice = int(sample_rng(seed, record["image_id"], "dataset-caption").integers(len(captions)))
        yield {"image_id": record["image_id"], "backend": "dataset", "caption": captions[choice]}


def template_sample_ids(count: int) -> list[str]:
    return [f"template-{i:07d}" for i in range(count)]


def caption_with_template(sample_ids: Iterable[str], distribution: TemplateDistribution,
                          seed: int) -> Iterator[dict]:
    for sample_id in sample_ids:
        caption, classes = sample_template_caption(distribution, seed, sample_id)
        yield {"image_id": sample_id, "backend": "template", "caption": caption, "classes": classes}


def _batched(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def caption_with_blip2(records: list[dict], model: str, settings: Blip2Params, min_side: int,
                       max_pixels: int) -> Iterator[dict]:
    """BLIP-2 captions; unreadable images become skips with the reason, never crashes. Images
    above ``max_pixels`` are decoded reduced where the format allows (BLIP-2 sees 224 px), else
    skipped."""
    from glass.caption.blip2 import Blip2Captioner

    captioner = Blip2Captioner(model, **settings.as_dict())
    for batch in _batched(records, captioner.batch_size):
        loaded, results = [], {}
        for record in batch:
            try:
                image, notes = load_rgb_image(record["file"], min_side=min_side,
                                              max_pixels=max_pixels, reduce_large=True,
                                              pixel_limit_key="caption.max_image_pixels")
            except UnreadableImage as error:
                log.warning("skipping %s: %s", record["image_id"], error)
                results[record["image_id"]] = _skip(record["image_id"], "blip2", error.reason)
                continue
            loaded.append((record["image_id"], image, notes))
        if loaded:
            captions = captioner.caption_batch([image for _, image, _ in loaded])
            for (image_id, _, notes), caption in zip(loaded, captions, strict=True):
                result = {"image_id": image_id, "backend": "blip2", "caption": caption}
                if notes:
                    result["notes"] = notes
                results[image_id] = result
        yield from (results[record["image_id"]] for record in batch)


def run_captioning(index_path: str | Path, stats_path: str | Path, params: CaptionParams,
                   seed: int, out_path: str | Path, scratch_dir: str | Path,
                   blip2_model: str | None = None) -> dict[str, Any]:
    """Caption every image of the index (or ``num_captions`` template samples).

    ``blip2_model`` is what ``from_pretrained`` loads (hub id or folder), needed for ``blip2``.
    """
    backend = params.backend
    if backend == "blip2":
        if not blip2_model:
            raise InvalidInput("caption.backend is blip2 but no BLIP-2 model was given")
        problem = check_gpu_setting(params.blip2.device, params.blip2.dtype, "caption.blip2")
        if problem:
            raise InvalidInput(problem)
    index_path = Path(index_path)
    index = read_jsonl(index_path)

    if backend == "template":
        count = params.template.num_captions or len(index)
        stats = json.loads(Path(stats_path).read_text())
        distribution = TemplateDistribution.from_stats(stats, params.template.max_objects)
        all_ids = template_sample_ids(int(count))
    else:
        all_ids = [record["image_id"] for record in index]

    fingerprint = caption_fingerprint(params, seed, file_sha256(index_path))
    scratch_path = Path(scratch_dir) / f"captions-{backend}-{fingerprint}.jsonl"
    with ResumableJsonl(scratch_path, key_field="image_id") as done:
        if len(done):
            log.info("resuming from %s: %d of %d already captioned", scratch_path, len(done), len(all_ids))
        todo_ids = [i for i in all_ids if i not in done]
        if backend == "template":
            produced = caption_with_template(todo_ids, distribution, seed)
        else:
            todo = [record for record in index if record["image_id"] not in done]
            if backend == "labels":
                produced = caption_with_labels(todo)
            elif backend == "dataset":
                produced = caption_with_dataset(todo, seed)
            else:
                produced = caption_with_blip2(todo, blip2_model, params.blip2,
                                              params.min_image_side, params.max_image_pixels)
        progress = tqdm(total=len(all_ids), initial=len(all_ids) - len(todo_ids),
                        desc=f"caption[{backend}]", unit="img")
        pending: list[dict] = []
        for result in produced:
            pending.append(finish_caption(result))
            if len(pending) >= 64:  # fsync in chunks: cheap for fast backends, safe for slow ones
                done.append(pending)
                progress.update(len(pending))
                pending = []
        done.append(pending)
        progress.update(len(pending))
        progress.close()
        final = [done.records[i] for i in all_ids]

    write_jsonl(out_path, final)
    scratch_path.unlink()
    skipped = Counter(r["skipped"] for r in final if "skipped" in r)
    summary = {"backend": backend, "records": len(final), "captioned": len(final) - sum(skipped.values()),
               "skipped": sum(skipped.values()), "skip_reasons": dict(skipped)}
    log.info("captions: %s", summary)
    return summary
