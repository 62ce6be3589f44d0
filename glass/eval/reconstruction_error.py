"""Where a slot reconstruction's error lies: background or object pixels, and what each costs.

The generation metrics (``glass.eval.generation``) give one PSNR per image. To tell whether a low
PSNR comes from objects drawn wrong or from the background, the same per-image PSNR is taken
over one region's pixels only, and over images in which one region is made exact (the real
pixels pasted in) or flat (the region's real mean colour): each repaired image shows how much
PSNR is lost in the region it repairs. Images are (1, 3, H, W) floats in [0, 1]; regions are
(H, W) bool masks at the same size. PSNR uses a data range of 1, as ``GenerationMetrics``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from glass.errors import InvalidInput


def _check(real: torch.Tensor, generated: torch.Tensor, region: torch.Tensor) -> None:
    if real.shape != generated.shape or real.ndim != 4 or real.shape[:2] != (1, 3):
        raise InvalidInput(f"real {tuple(real.shape)} and generated {tuple(generated.shape)} must "
                           "be one (1, 3, H, W) image each")
    if region.dtype != torch.bool or tuple(region.shape) != tuple(real.shape[-2:]):
        raise InvalidInput(f"region must be a bool (H, W) = {tuple(real.shape[-2:])} mask, got "
                           f"{region.dtype} {tuple(region.shape)}")


def psnr(real: torch.Tensor, generated: torch.Tensor,
         region: torch.Tensor | None = None) -> float:
    """PSNR (data range 1) of ``generated`` against ``real`` over ``region``'s pixels (all
    pixels when None); +inf when they agree exactly, NaN for an empty region."""
    if region is None:
        region = torch.ones(real.shape[-2:], dtype=torch.bool)
    _check(real, generated, region)
    count = int(region.sum()) * real.shape[1]
    if count == 0:
        return math.nan
    squared = ((generated.double() - real.double()) ** 2 * region).sum()
    mse = float(squared) / count
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def with_real_region(real: torch.Tensor, generated: torch.Tensor,
                     region: torch.Tensor) -> torch.Tensor:
    """``generated`` with ``region``'s pixels replaced by the real ones (that region repaired)."""
    _check(real, generated, region)
    return torch.where(region, real, generated)


def with_flat_region(real: torch.Tensor, generated: torch.Tensor,
                     region: torch.Tensor) -> torch.Tensor:
    """``generated`` with ``region``'s pixels painted the real image's mean colour over that
    region (what knowing the region's colour, and nothing of its texture, would give)."""
    _check(real, generated, region)
    if not bool(region.any()):
        return generated.clone()
    colour = real[..., region].mean(dim=-1)                       # (1, 3)
    return torch.where(region, colour[..., None, None], generated)


def latent_mean_from(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``latents`` (B, C, h, w) with each channel's spatial mean replaced by ``reference``'s:
    the image's overall colour and brightness, which a latent's per-channel mean carries, taken
    from the reference and everything else kept."""
    if latents.shape != reference.shape or latents.ndim != 4:
        raise InvalidInput(f"latents {tuple(latents.shape)} and reference "
                           f"{tuple(reference.shape)} must be the same (B, C, h, w)")
    return latents - latents.mean(dim=(2, 3), keepdim=True) + \
        reference.mean(dim=(2, 3), keepdim=True)


def covering_slot(slot_map: np.ndarray, region: np.ndarray, num_slots: int) -> tuple[int, float]:
    """The slot of an (H, W) slot-index map that covers most of ``region`` (bool, same shape),
    and the share of the region it covers."""
    slot_map, region = np.asarray(slot_map), np.asarray(region, dtype=bool)
    if slot_map.shape != region.shape:
        raise InvalidInput(f"slot map {slot_map.shape} and region {region.shape} differ in shape")
    total = int(region.sum())
    if total == 0:
        raise InvalidInput("the region is empty: no slot covers it")
    counts = np.bincount(slot_map[region].ravel().astype(np.int64), minlength=num_slots)
    index = int(counts.argmax())
    return index, float(counts[index]) / total


def colour_correlation(generated: np.ndarray, real: np.ndarray) -> float:
    """Pearson correlation over N images of a reconstructed colour with the real one, per
    channel, averaged over the three channels (NaN for a constant channel): 1 when the
    reconstructions follow each image's colour, 0 when they ignore it. ``generated``, ``real``:
    (N, 3) mean colours (of whole images, or of one region each)."""
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if generated.shape != real.shape or real.ndim != 2 or real.shape[1] != 3 or len(real) < 2:
        raise InvalidInput(f"generated and real must be the same (N, 3) colours with N >= 2, "
                           f"got {generated.shape} and {real.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.mean([np.corrcoef(generated[:, channel], real[:, channel])[0, 1]
                              for channel in range(3)]))


def colour_source(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Whether the reconstructions' overall colour comes from the slots or from the sampler's
    initial noise. ``generated``: (N, S, 3) mean colour of each of N images reconstructed from
    the same slots with S noise seeds; ``real``: (N, 3) the real images' mean colours.

    - ``variance_across_seeds``: per channel, the variance over seeds for the same slots,
      averaged over images and channels: what the noise alone changes;
    - ``variance_across_images``: the variance over images of the seed-averaged colour: what the
      slots change; ``variance_real``: the same over the real images, the target;
    - ``correlation_with_real``: Pearson correlation of a reconstruction's channel mean with the
      real one over the images, averaged over seeds and channels (NaN for a constant channel);
    - ``colour_error`` against ``colour_error_dataset_mean``: mean absolute error of the
      reconstructions' mean colours, and of answering every image with the real images' average.
    """
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if generated.ndim != 3 or real.ndim != 2 or generated.shape[::2] != real.shape \
            or real.shape[1] != 3:
        raise InvalidInput(f"generated must be (N, S, 3) and real (N, 3), got "
                           f"{generated.shape} and {real.shape}")
    if generated.shape[0] < 2 or generated.shape[1] < 2:
        raise InvalidInput(f"need >= 2 images and >= 2 seeds, got {generated.shape[:2]}")
    correlations = [colour_correlation(generated[:, seed], real)
                    for seed in range(generated.shape[1])]
    return {
        "variance_across_seeds": float(generated.var(axis=1).mean()),
        "variance_across_images": float(generated.mean(axis=1).var(axis=0).mean()),
        "variance_real": float(real.var(axis=0).mean()),
        "correlation_with_real": float(np.mean(correlations)),
        "colour_error": float(np.abs(generated - real[:, None]).mean()),
        "colour_error_dataset_mean": float(np.abs(real - real.mean(axis=0)).mean()),
    }
