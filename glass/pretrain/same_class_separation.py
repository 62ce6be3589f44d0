"""Whether an encoder's patch features tell two instances of one class apart.

Feature reconstruction (the instance guidance, paper Sec. 4) can keep two same-class objects in
separate slots only if the features to reconstruct differ between them: "features from a
pre-trained ViT model already exhibit instance-aware properties" (Sec. 4). This measures that
property directly: for every pair of instances in an image, k-means with two clusters over the
two instances' patch tokens, scored by the adjusted Rand index against which instance each token
lies on. Pairs of one class (same shape and colour family) and pairs of two classes are reported
apart; ARI near 1 means the features separate the pair, near 0 that they do not. The k-means is
seeded per image and pair, so the numbers are deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

from glass.eval.object_discovery import labels_ari
from glass.pretrain.instance_structure import kmeans, token_labels
from glass.seeding import sample_seed

MIN_TOKENS = 2   # an instance needs at least this many token centres to take part in a pair


@dataclass(frozen=True)
class PairSeparation:
    same_class_ari: float        # mean over same-class pairs
    same_class_pairs: int
    different_class_ari: float   # mean over pairs of two classes
    different_class_pairs: int


def pair_separation(encoder, samples: Iterable[tuple[str, np.ndarray, np.ndarray, Sequence[str]]],
                    seed: int = 0) -> PairSeparation:
    """``encoder``: images (B, 3, H, W) in [0, 1] → tokens (B, N, D) with a ``grid_size``
    (``FrozenDinov2Encoder``); ``samples``: (key, image uint8 (H, W, 3), instance map (H, W),
    class of instance i + 1)."""
    scores: dict[bool, list[float]] = {True: [], False: []}
    for key, image, instances, classes in samples:
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            tokens = encoder(pixels)[0]
        labels = token_labels(instances, tuple(encoder.grid_size))
        present = [i for i in range(1, len(classes) + 1) if (labels == i).sum() >= MIN_TOKENS]
        for first, second in combinations(present, 2):
            chosen = (labels == first) | (labels == second)
            clusters = kmeans(tokens[torch.from_numpy(chosen)], 2,
                              sample_seed(seed, key, f"pair-{first}-{second}"))
            same = classes[first - 1] == classes[second - 1]
            scores[same].append(labels_ari(clusters, labels[chosen]))

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return PairSeparation(same_class_ari=mean(scores[True]), same_class_pairs=len(scores[True]),
                          different_class_ari=mean(scores[False]),
                          different_class_pairs=len(scores[False]))
