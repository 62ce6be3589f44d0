"""The ``prompts`` stage: caption + COCO classes → Stable Diffusion prompt.

Prompt = ``"<caption>; <class> <class> …"`` (Dataset Diffusion's class-prompt appending, paper
Sec. 4: P = [P_cap; C]). Classes come from the caption record when its backend knows them
(ground-truth labels, template), otherwise from ``extract_classes`` on the caption (BLIP-2 or
dataset captions). Records without any class are kept with an empty class list and counted;
records that cannot become a prompt (skipped upstream, empty or over-long caption) are kept as
skips with their reason. Nothing is dropped silently.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from glass.data.classes import check_coco_class

CLASS_SEPARATOR = "; "


def normalise_caption(caption: str) -> str:
    """NFKC, whitespace collapsed, and ';' replaced by ',' because ';' separates the class list."""
    text = unicodedata.normalize("NFKC", caption)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = text.replace(";", ",")
    return re.sub(r"\s+", " ", text).strip()


def build_prompt(caption: str, classes: list[str]) -> str:
    if not classes:
        return caption
    return caption + CLASS_SEPARATOR + " ".join(classes)


def prompt_record(caption_record: dict, extract: Callable[[str], list[str]],
                  max_caption_chars: int) -> dict:
    image_id = caption_record["image_id"]
    base = {"image_id": image_id, "backend": caption_record.get("backend")}
    if "skipped" in caption_record:
        return base | {"skipped": f"caption stage: {caption_record['skipped']}"}
    raw = caption_record.get("caption")
    if not isinstance(raw, str):
        return base | {"skipped": "caption is missing or not a string"}
    caption = normalise_caption(raw)
    if not caption:
        return base | {"skipped": "empty caption"}
    if len(caption) > max_caption_chars:
        # The class list follows the caption; past CLIP's 77 tokens it would be cut off and
        # its attention maps could not be read.
        return base | {"skipped": f"caption has {len(caption)} characters, more than "
                                  f"prompts.max_caption_chars = {max_caption_chars}"}
    if "classes" in caption_record:
        classes = [check_coco_class(name) for name in dict.fromkeys(caption_record["classes"])]
        source = "caption record"
    else:
        classes = extract(caption)
        source = "extracted"
    return base | {"caption": caption, "classes": classes, "class_source": source,
                   "prompt": build_prompt(caption, classes)}


def build_prompt_records(caption_records: Iterable[dict], extract: Callable[[str], list[str]],
                         max_caption_chars: int) -> list[dict]:
    return [prompt_record(r, extract, max_caption_chars) for r in caption_records]


def prompt_statistics(records: list[dict]) -> tuple[dict[str, Any], dict[str, int]]:
    """(metrics, class histogram). Skip reasons are grouped by their text before any number."""
    prompts = [r for r in records if "prompt" in r]
    skip_kinds = Counter(re.sub(r"\d+", "N", r["skipped"]) for r in records if "skipped" in r)
    class_counts = Counter(name for r in prompts for name in r["classes"])
    with_classes = sum(1 for r in prompts if r["classes"])
    metrics = {
        "records": len(records),
        "prompts": len(prompts),
        "with_classes": with_classes,
        "without_classes": len(prompts) - with_classes,
        "skipped": len(records) - len(prompts),
        "mean_classes_per_prompt": round(sum(len(r["classes"]) for r in prompts) / len(prompts), 4)
        if prompts else 0.0,
        "distinct_classes": len(class_counts),
        "skip_reasons": dict(sorted(skip_kinds.items())),
    }
    return metrics, dict(sorted(class_counts.items()))
