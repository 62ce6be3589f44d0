"""The template captioner of the paper's supplement (Table 13).

"We first sample the number of objects and then sample class labels from the learnt object
occurrence distribution", then fill "A high-quality image of <obj(i)>, <obj(i+1)>, … <obj(k)>;
<obj(i)> <obj(i+1)> … <obj(k)>". The part after ";" is the class list that the prompts stage
appends, so the captioner writes the part before it and hands the classes over explicitly.
No input image is needed, only the caption split's statistics (``class_stats.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glass.errors import InvalidInput
from glass.data.classes import check_coco_class
from glass.seeding import sample_rng


@dataclass(frozen=True)
class TemplateDistribution:
    object_counts: np.ndarray  # possible numbers of objects, >= 1
    object_count_probs: np.ndarray
    classes: tuple[str, ...]
    class_probs: np.ndarray

    @classmethod
    def from_stats(cls, stats: dict, max_objects: int) -> "TemplateDistribution":
        if max_objects < 1:
            raise InvalidInput(f"caption.template.max_objects must be >= 1, got {max_objects}")
        # Images without objects cannot be described by the template; counts above max_objects
        # are clipped to it (COCO has images with dozens of instances, which would make prompts
        # far longer than CLIP's 77 tokens).
        counts: dict[int, float] = {}
        for key, images in stats["objects_per_image"].items():
            if int(key) >= 1:
                clipped = min(int(key), max_objects)
                counts[clipped] = counts.get(clipped, 0) + images
        occurrence = {check_coco_class(name): n for name, n in stats["class_images"].items() if n > 0}
        if not counts or not occurrence:
            raise InvalidInput("class_stats.json has no images with objects: the template captioner "
                             "needs ground-truth object statistics of the caption split")
        object_counts = np.array(sorted(counts))
        names = tuple(sorted(occurrence))
        count_weights = np.array([counts[k] for k in object_counts], dtype=np.float64)
        class_weights = np.array([occurrence[n] for n in names], dtype=np.float64)
        return cls(object_counts, count_weights / count_weights.sum(), names,
                   class_weights / class_weights.sum())


def sample_template_caption(distribution: TemplateDistribution, seed: int,
                            sample_id: str) -> tuple[str, list[str]]:
    """(caption, classes) for one sample; the randomness comes from (seed, sample_id) only."""
    rng = sample_rng(seed, sample_id, "template-caption")
    num_objects = int(rng.choice(distribution.object_counts, p=distribution.object_count_probs))
    picks = rng.choice(len(distribution.classes), size=num_objects, p=distribution.class_probs)
    objects = [distribution.classes[i] for i in picks]
    caption = "A high-quality image of " + ", ".join(objects)
    return caption, list(dict.fromkeys(objects))
