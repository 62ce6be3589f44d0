"""Fréchet distance between Gaussian fits of feature sets, and its DINOv2 variant.

The paper's FID (Table 7: 71.30 for GLASS on 512 COCO images; docs/paper-facts.md "Evaluation") is the
Fréchet distance between Gaussians fitted to InceptionV3 features of real and generated images
(Heusel et al., 2017):

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}).

The Inception weights have to be downloaded (see ``glass.eval.generation``). This module computes
the same distance on any features, in particular on the project's own frozen DINOv2 encoder
(``FrozenDinov2Encoder``), which every configuration can load, the CPU one with its random tiny
DINOv2 included. Such a number is *not* comparable with the paper's FID (other network, other
features): it is reported under its own name (``fd_dinov2``), useful to compare runs of this
project with each other.

Per-image feature: the mean over the patch tokens of the encoder's last layer (after its final
LayerNorm). ``FrozenDinov2Encoder`` returns the patch tokens only (the CLS token is dropped there,
as GLASS/LSD use patch tokens), so mean pooling uses exactly the features the slots are learned
from, at no extra cost.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from scipy import linalg

__all__ = ["frechet_distance", "FeatureStatistics", "pooled_encoder_features",
           "encoder_frechet_distance"]

# Added to both covariance diagonals when (Σ₁ Σ₂)^{1/2} cannot be computed accurately (singular or
# near-singular covariances: fewer images than feature dimensions, constant features). It is the
# value pytorch-fid uses; it changes the distance by about 2·D·eps at most.
DEFAULT_EPS = 1e-6
# The largest relative residual ‖X·X − A‖_F / ‖A‖_F accepted for X = sqrtm(A) before retrying
# with the epsilon on the diagonals.
_SQRTM_RESIDUAL_TOL = 1e-6
# (Σ₁ Σ₂) is similar to a positive semi-definite matrix, so its square root has a real trace;
# imaginary parts are rounding noise. A trace whose imaginary part exceeds this fraction of its
# real part (or of 1) means the inputs were not covariance matrices: an error, not noise.
_IMAG_TOL = 1e-3


def _as_stats(name: str, mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise ValueError(f"{name}: expected a (D,) mean and a (D, D) covariance, got "
                         f"{mu.shape} and {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name}: mean/covariance hold NaN or inf")
    return mu, sigma


def _sqrtm_residual(root: np.ndarray, matrix: np.ndarray) -> float:
    scale = max(np.linalg.norm(matrix), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(root @ root - matrix) / scale)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = DEFAULT_EPS) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the quantity called
    FID when the statistics are InceptionV3 features).

    ``mu*``: (D,) means; ``sigma*``: (D, D) covariances (a 1-D Gaussian may be given as scalars:
    mean and variance). Computed in float64 with ``scipy.linalg.sqrtm``. If the square root of
    Σ₁Σ₂ is not finite or not accurate (near-singular covariances), it is computed again from
    (Σ₁ + εI)(Σ₂ + εI) with ε = ``eps`` (the traces of Σ₁, Σ₂ themselves are left as they are,
    as in pytorch-fid). Small imaginary parts (rounding) are dropped; large ones
    raise ``ValueError``. The result can be a tiny negative number (about -1e-12 relative) for
    identical inputs, from rounding; it is not clamped.
    """
    mu1, sigma1 = _as_stats("first", mu1, sigma1)
    mu2, sigma2 = _as_stats("second", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.size} vs {mu2.size}")
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        # scipy warns about singular products; the residual check below handles them
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(product)
    if not np.all(np.isfinite(root)) or _sqrtm_residual(root, product) > _SQRTM_RESIDUAL_TOL:
        offset = eps * np.eye(mu1.size)
        product = (sigma1 + offset) @ (sigma2 + offset)
        root = linalg.sqrtm(product)
        if not np.all(np.isfinite(root)):
            raise ValueError("the square root of sigma1 @ sigma2 is not finite even with eps "
                             f"{eps} on the diagonals")
    trace_root = complex(np.trace(root))
    if abs(trace_root.imag) > _IMAG_TOL * max(1.0, abs(trace_root.real)):
        raise ValueError(f"tr sqrt(sigma1 @ sigma2) has a large imaginary part ({trace_root}): "
                         "are both sigmas symmetric positive semi-definite?")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root.real)


class FeatureStatistics:
    """Mean and covariance of (N, D) features given in batches, accumulated in float64.

    Batches are merged with Chan et al.'s pairwise update of (count, mean, scatter matrix), which
    avoids the cancellation of the "sum of outer products minus N·μμᵀ" formula; the result equals
    ``features.mean(0)`` and ``np.cov(features, rowvar=False)`` (ddof = 1) of all rows at once.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.count = 0
        self._mean: np.ndarray | None = None
        self._scatter: np.ndarray | None = None  # Σ (x − μ)(x − μ)ᵀ

    def update(self, features) -> None:
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().double().numpy()
        batch = np.asarray(features, dtype=np.float64)
        if batch.ndim != 2:
            raise ValueError(f"expected (N, D) features, got shape {batch.shape}")
        if self.dim is None:
            self.dim = batch.shape[1]
        if batch.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {batch.shape[1]}")
        if not np.all(np.isfinite(batch)):
            raise ValueError("features hold NaN or inf")
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(axis=0)
        centred = batch - batch_mean
        batch_scatter = centred.T @ centred
        if self.count == 0:
            self._mean, self._scatter = batch_mean, batch_scatter
        else:
            total = self.count + n
            delta = batch_mean - self._mean
            self._scatter = (self._scatter + batch_scatter
                             + np.outer(delta, delta) * (self.count * n / total))
            self._mean = self._mean + delta * (n / total)
        self.count += n

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features were given")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (ddof = 1) covariance; needs at least two feature vectors."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self._scatter / (self.count - 1)

    def frechet_distance(self, other: FeatureStatistics, eps: float = DEFAULT_EPS) -> float:
        return frechet_distance(self.mean, self.covariance, other.mean, other.covariance, eps)


@torch.no_grad()
def pooled_encoder_features(encoder, images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) images in [0, 1] → (B, D) float64: the encoder's patch tokens averaged over
    the patches (see the module docstring for why mean pooling)."""
    device = next(encoder.parameters()).device
    tokens = encoder(images.to(device))            # (B, N, D) float32
    return tokens.double().mean(dim=1).cpu().numpy()


def _batches(images) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return [images]
    return images


def encoder_frechet_distance(encoder, real, generated, eps: float = DEFAULT_EPS) -> dict:
    """Fréchet distance between mean-pooled encoder features (e.g. a ``FrozenDinov2Encoder``) of
    real and generated images.

    ``real`` / ``generated``: a (B, 3, H, W) tensor in [0, 1] or an iterable of such batches (the
    two need not be paired). Returns ``{"frechet_distance", "num_real", "num_generated",
    "feature_dim"}``.
    """
    stats = {"real": FeatureStatistics(), "generated": FeatureStatistics()}
    for name, images in (("real", real), ("generated", generated)):
        for batch in _batches(images):
            stats[name].update(pooled_encoder_features(encoder, batch))
    return {"frechet_distance": stats["real"].frechet_distance(stats["generated"], eps),
            "num_real": stats["real"].count, "num_generated": stats["generated"].count,
            "feature_dim": stats["real"].dim}
