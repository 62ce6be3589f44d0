"""How much instance structure an encoder's patch features carry: per image, k-means over the
patch tokens with one cluster per object plus one for the background, scored by the adjusted
Rand index against the instance map sampled at the token centres. A random encoder's tokens
mostly encode colour and position, so same-coloured instances and textured backgrounds split
badly; features that separate objects score higher. The k-means is seeded per image, so the
number is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from glass.eval.object_discovery import labels_ari
from glass.seeding import sample_seed


@dataclass(frozen=True)
class StructureScore:
    ari: float                  # mean over images of the k-means ARI (background included)
    fg_ari: float               # the same over foreground tokens only (images with >= 2 objects)
    images: int


def token_labels(instance_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(rows·cols,) instance id at each token's centre pixel, row-major."""
    height, width = instance_map.shape
    rows = ((np.arange(grid[0]) + 0.5) * height / grid[0]).astype(int)
    cols = ((np.arange(grid[1]) + 0.5) * width / grid[1]).astype(int)
    return instance_map[np.ix_(rows, cols)].reshape(-1)


def kmeans(features: torch.Tensor, clusters: int, seed: int, iterations: int = 30) -> np.ndarray:
    """Cluster index per row of ``features`` (N, D): k-means++ initialisation, then Lloyd steps,
    on L2-normalised features (cosine geometry, as DINO features are compared)."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.nn.functional.normalize(features.float(), dim=-1)
    first = int(torch.randint(len(points), (1,), generator=generator))
    centres = [points[first]]
    for _ in range(1, clusters):
        distance = torch.cdist(points, torch.stack(centres)).min(dim=1).values ** 2
        if float(distance.sum()) == 0:
            centres.append(points[int(torch.randint(len(points), (1,), generator=generator))])
            continue
        centres.append(points[int(torch.multinomial(distance, 1, generator=generator))])
    centre = torch.stack(centres)
    assignment = torch.zeros(len(points), dtype=torch.long)
    for _ in range(iterations):
        assignment = torch.cdist(points, centre).argmin(dim=1)
        updated = torch.stack([points[assignment == k].mean(dim=0) if (assignment == k).any()
                               else centre[k] for k in range(clusters)])
        if torch.allclose(updated, centre):
            break
        centre = updated
    return assignment.numpy()


def instance_structure(encoder, samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                       seed: int = 0) -> StructureScore:
    """``encoder``: images (B, 3, H, W) in [0, 1] → tokens (B, N, D) with a ``grid_size``
    (``FrozenDinov2Encoder``); ``samples``: (key, image uint8 (H, W, 3), instance map (H, W))."""
    aris, fg_aris = [], []
    for key, image, instances in samples:
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        tokens = encoder(pixels)[0]
        labels = token_labels(instances, tuple(encoder.grid_size))
        ids = np.unique(labels)
        if len(ids) < 2:
            continue
        clusters = kmeans(tokens, len(ids), sample_seed(seed, key, "kmeans"))
        aris.append(labels_ari(clusters, labels))
        foreground = labels > 0
        if len(np.unique(labels[foreground])) >= 2:
            fg_clusters = kmeans(tokens[torch.from_numpy(foreground)],
                                 len(np.unique(labels[foreground])),
                                 sample_seed(seed, key, "kmeans-fg"))
            fg_aris.append(labels_ari(fg_clusters, labels[foreground]))
    return StructureScore(ari=float(np.mean(aris)) if aris else float("nan"),
                          fg_ari=float(np.mean(fg_aris)) if fg_aris else float("nan"),
                          images=len(aris))
