"""Does the MLP decoder's feature reconstruction (the instance guidance, paper Sec. 4 Eq. 3) draw
the objects at all?

Instance guidance shapes the slots only through what the MLP decoder needs from them to
reconstruct the encoder's tokens. A decoder whose alpha masks are the same at every position
reconstructs every token of an image as one vector, the best of which is the image's mean token:
its loss then asks nothing of the slots that separates the objects. Per image, three feature
reconstructions are scored by MSE against the encoder's tokens:

- ``decoder``: the MLP decoder's reconstruction from the image's slots;
- ``image_mean``: every token replaced by the image's mean token (what a spatially constant
  decoder can at best achieve);
- ``instance_mean``: every token replaced by the mean token of its ground-truth segment (the
  background is one segment), what a decoder that drew one feature vector per object would
  score (a reference, not a bound: a decoder may vary features within an object).

And how far the masks spread over the image: ``centroid_spread`` of a set of masks that sum to 1
at every token is the mass-weighted RMS distance of each mask's centroid from their common
centroid, in image widths (0 = every mask covers the image alike). It is scored for the
decoder's alphas, for slot attention's masks and for the ground-truth segments at token
resolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glass.errors import InvalidInput
from glass.pretrain.position_information import cell_centres

# pixels per token side at which ground-truth segments are voted into tokens
VOTE_PIXELS = 8


def token_segments(instances: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) the majority instance id (0 = background) of each cell of a row-major token grid;
    ``instances`` (H, W) is nearest-resized to ``VOTE_PIXELS`` pixels per cell first. Ties go to
    the smaller id."""
    rows, columns = grid
    if instances.ndim != 2:
        raise InvalidInput(f"expected an instance map (H, W), got {instances.shape}")
    resized = F.interpolate(torch.from_numpy(instances.astype(np.int64))[None, None].float(),
                            size=(rows * VOTE_PIXELS, columns * VOTE_PIXELS),
                            mode="nearest")[0, 0].long()
    ids, inverse = torch.unique(resized, return_inverse=True)
    cells = inverse.reshape(rows, VOTE_PIXELS, columns, VOTE_PIXELS).permute(0, 2, 1, 3)
    votes = F.one_hot(cells.reshape(rows * columns, -1), len(ids)).sum(dim=1)  # (N, ids)
    return ids[votes.argmax(dim=1)].numpy()


def segment_one_hot(labels: np.ndarray) -> torch.Tensor:
    """(N, S) float64 membership of each token in each of its S distinct labels (ascending)."""
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = torch.from_numpy(inverse.reshape(-1))
    return F.one_hot(inverse, int(inverse.max()) + 1).to(torch.float64)


def segment_mean(features: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """``features`` (N, D) with every token replaced by the mean of the tokens of its label."""
    if len(labels) != features.shape[0]:
        raise InvalidInput(f"{features.shape[0]} tokens but {len(labels)} labels")
    one_hot = segment_one_hot(labels).to(features.dtype)                # (N, S)
    means = (one_hot.T @ features) / one_hot.sum(dim=0)[:, None]        # (S, D)
    return one_hot @ means


def centroid_spread(masks: torch.Tensor, grid: tuple[int, int]) -> float:
    """``masks`` (K, N), summing to 1 over K at every token of a row-major ``grid``: the
    mass-weighted RMS distance of the masks' centroids from their common centroid, in image
    widths (see the module docstring)."""
    if masks.ndim != 2 or masks.shape[1] != grid[0] * grid[1]:
        raise InvalidInput(f"expected masks (K, {grid[0] * grid[1]}), got {tuple(masks.shape)}")
    centres = torch.from_numpy(cell_centres(grid)).to(torch.float64)   # (N, 2)
    masks = masks.to(torch.float64)
    mass = masks.sum(dim=1)                                              # (K,)
    present = mass > 0
    masks, mass = masks[present], mass[present]
    centroids = (masks @ centres) / mass[:, None]                        # (K, 2)
    common = (mass[:, None] * centroids).sum(dim=0) / mass.sum()
    squared = ((centroids - common) ** 2).sum(dim=1)
    return float(torch.sqrt((mass * squared).sum() / mass.sum()))


@dataclass(frozen=True)
class FeatureReconstructionScore:
    """Means over the scored images (see the module docstring)."""

    decoder_mse: float
    image_mean_mse: float
    instance_mean_mse: float
    decoder_spread: float
    attention_spread: float
    ground_truth_spread: float
    images: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mse": {"decoder": round(self.decoder_mse, 4),
                        "image_mean": round(self.image_mean_mse, 4),
                        "instance_mean": round(self.instance_mean_mse, 4)},
                "centroid_spread": {"decoder": round(self.decoder_spread, 4),
                                    "slot_attention": round(self.attention_spread, 4),
                                    "ground_truth": round(self.ground_truth_spread, 4)},
                "images": self.images}


@dataclass(frozen=True)
class ImageReconstruction:
    """One image: its encoder tokens (N, D), the MLP decoder's reconstruction (N, D) and alphas
    (K, N), slot attention's masks (K, N) and its ground-truth instance map (H, W)."""

    features: torch.Tensor
    reconstruction: torch.Tensor
    decoder_masks: torch.Tensor
    attention: torch.Tensor
    instances: np.ndarray


def score_feature_reconstruction(images: Iterable[ImageReconstruction],
                                 grid: tuple[int, int]) -> FeatureReconstructionScore:
    rows: list[tuple[float, ...]] = []
    for image in images:
        features = image.features.to(torch.float64)
        labels = token_segments(image.instances, grid)
        image_mean = features.mean(dim=0, keepdim=True).expand_as(features)
        rows.append((
            float(F.mse_loss(image.reconstruction.to(torch.float64), features)),
            float(F.mse_loss(image_mean, features)),
            float(F.mse_loss(segment_mean(features, labels), features)),
            centroid_spread(image.decoder_masks, grid),
            centroid_spread(image.attention, grid),
            centroid_spread(segment_one_hot(labels).T, grid)))
    if not rows:
        raise InvalidInput("no image to score the feature reconstruction on")
    means = np.mean(np.asarray(rows), axis=0)
    return FeatureReconstructionScore(*(float(value) for value in means), images=len(rows))
