"""How much *where* an encoder's tokens (or a model's slots) tell: ridge-regression probes.

A slot-conditioned decoder can only put an object where the slot says it is. GLASS's slots are
weighted means over the frozen encoder's tokens (plus slot attention's Cartesian embedding,
docs/paper-facts.md "Model"), so the position a slot can carry is bounded by what the tokens
carry. Two probes, each scored as test MSE against the MSE of always answering the fit set's
mean (the chance level; a ratio near 1 means nothing was read):

- **token position**: every patch token's features → its grid cell's centre (x, y) in [0, 1];
- **object centre**: the features averaged over each object's tokens (weights: the object's
  pixel share of each token's cell) → the centre of the object's pixels (x, y) in [0, 1].

The probe is closed-form ridge regression with a bias column (``ridge``, λ fixed by the caller),
so it has no training schedule of its own to tune and is exact given its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from glass.errors import InvalidInput


@dataclass(frozen=True)
class ProbeScore:
    mse: float          # test MSE of the ridge fit (mean over samples and both coordinates)
    mean_mse: float     # test MSE of the fit set's mean target (chance)
    fit: int            # samples fitted
    test: int           # samples scored

    @property
    def ratio(self) -> float:
        """``mse / mean_mse``: 1 = nothing read, 0 = exact."""
        return self.mse / self.mean_mse


def ridge_probe(fit_x: np.ndarray, fit_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                ridge: float) -> ProbeScore:
    """Fit ``fit_y`` (N, T) from ``fit_x`` (N, D) by ridge regression with a bias column
    (penalised like the weights, so keep λ small), score on the test pair."""
    if len(fit_x) != len(fit_y) or len(test_x) != len(test_y):
        raise InvalidInput(f"features and targets differ in length: fit {len(fit_x)} vs "
                           f"{len(fit_y)}, test {len(test_x)} vs {len(test_y)}")
    if len(fit_x) <= fit_x.shape[1] // 4 or len(test_x) == 0:
        raise InvalidInput(f"{len(fit_x)} fit and {len(test_x)} test samples are too few for "
                           f"{fit_x.shape[1]}-dimensional features; use more images")
    design = np.c_[fit_x.astype(np.float64), np.ones(len(fit_x))]
    weights = np.linalg.solve(design.T @ design + ridge * np.eye(design.shape[1]),
                              design.T @ fit_y.astype(np.float64))
    predicted = np.c_[test_x.astype(np.float64), np.ones(len(test_x))] @ weights
    target = test_y.astype(np.float64)
    mean = fit_y.astype(np.float64).mean(axis=0)
    return ProbeScore(float(((predicted - target) ** 2).mean()),
                      float(((mean - target) ** 2).mean()), len(fit_x), len(test_x))


def cell_centres(grid: tuple[int, int]) -> np.ndarray:
    """(rows · columns, 2) centres (x, y) in [0, 1] of a row-major token grid's cells."""
    rows, columns = grid
    ys, xs = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(columns) + 0.5) / columns,
                         indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def object_tokens(features: np.ndarray, instance_map: np.ndarray, grid: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per object of ``instance_map`` (H, W; 0 = background): its pixel-share-weighted mean of
    ``features`` (N, D) over the grid's cells, and the centre (x, y) in [0, 1] of its pixels."""
    rows, columns = grid
    height, width = instance_map.shape
    if height % rows or width % columns:
        raise InvalidInput(f"an instance map of {height}x{width} does not tile a {rows}x{columns} "
                           "token grid")
    pooled, centres = [], []
    for object_id in np.unique(instance_map):
        if object_id == 0:
            continue
        mask = instance_map == object_id
        share = mask.reshape(rows, height // rows, columns, width // columns).mean(axis=(1, 3))
        share = share.reshape(-1)
        pooled.append((share[:, None] * features).sum(axis=0) / share.sum())
        ys, xs = np.nonzero(mask)
        centres.append(((xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height))
    dim = features.shape[1]
    return (np.asarray(pooled, dtype=np.float64).reshape(-1, dim),
            np.asarray(centres, dtype=np.float64).reshape(-1, 2))


def encoder_tokens(encoder, samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                   batch_size: int = 50) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The encoder's (N, D) tokens and the instance map of each ``(key, image, instance_map)``."""
    features, maps, batch = [], [], []

    def flush() -> None:
        images = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            features.extend(encoder(images).numpy())
        batch.clear()

    for _key, image, instance_map in samples:
        batch.append(image)
        maps.append(instance_map)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return features, maps


def encoder_position_information(encoder, fit_samples, test_samples, ridge: float
                                 ) -> dict[str, ProbeScore]:
    """``token_position`` and ``object_centre`` probes of ``encoder`` (a FrozenDinov2Encoder),
    fitted on ``fit_samples`` and scored on ``test_samples`` (``(key, image, instance_map)``)."""
    grid = encoder.grid_size
    parts = {}
    for name, samples in (("fit", fit_samples), ("test", test_samples)):
        features, maps = encoder_tokens(encoder, samples)
        tokens = np.concatenate(features)
        positions = np.tile(cell_centres(grid), (len(features), 1))
        objects = [object_tokens(f, m, grid) for f, m in zip(features, maps)]
        parts[name] = (tokens, positions, np.concatenate([o[0] for o in objects]),
                       np.concatenate([o[1] for o in objects]))
    fit, test = parts["fit"], parts["test"]
    return {"token_position": ridge_probe(fit[0], fit[1], test[0], test[1], ridge),
            "object_centre": ridge_probe(fit[2], fit[3], test[2], test[3], ridge)}
