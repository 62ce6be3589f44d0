import math

import numpy as np
import pytest
import torch
from torchmetrics.image import PeakSignalNoiseRatio

from glass.errors import InvalidInput
from glass.eval.reconstruction_error import (colour_correlation, colour_source, covering_slot,
                                             latent_mean_from, psnr, with_flat_region,
                                             with_real_region)


def images(seed: int = 0, size: int = 8):
    generator = torch.Generator().manual_seed(seed)
    real = torch.rand(1, 3, size, size, generator=generator)
    generated = torch.rand(1, 3, size, size, generator=generator)
    region = torch.zeros(size, size, dtype=torch.bool)
    region[2:5, 1:7] = True
    return real, generated, region


def test_whole_image_psnr_is_the_generation_metrics_psnr():
    real, generated, _ = images()
    reference = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3))
    assert psnr(real, generated) == pytest.approx(float(reference(generated, real)), abs=1e-4)


def test_region_psnr_counts_only_the_regions_pixels():
    real, generated, region = images()
    mask = region.numpy()
    difference = (generated - real).numpy()[0][:, mask]
    expected = 10 * math.log10(1 / float((difference.astype(np.float64) ** 2).mean()))
    assert psnr(real, generated, region) == pytest.approx(expected, rel=1e-9)
    # changing a pixel outside the region changes nothing
    changed = generated.clone()
    changed[..., 0, 0] = 1 - changed[..., 0, 0]
    assert psnr(real, changed, region) == psnr(real, generated, region)


def test_repairing_a_region_makes_it_exact_and_leaves_the_rest():
    real, generated, region = images()
    repaired = with_real_region(real, generated, region)
    assert psnr(real, repaired, region) == math.inf
    assert psnr(real, repaired, ~region) == psnr(real, generated, ~region)
    assert psnr(real, repaired) > psnr(real, generated)


def test_flat_region_is_the_regions_real_mean_colour():
    real, generated, region = images()
    flat = with_flat_region(real, generated, region)
    colour = real[0][:, region.numpy()].mean(dim=1)
    assert torch.allclose(flat[0][:, region], colour[:, None].expand(3, int(region.sum())))
    assert torch.equal(flat[..., ~region], generated[..., ~region])
    empty = torch.zeros_like(region)
    assert torch.equal(with_flat_region(real, generated, empty), generated)
    assert math.isnan(psnr(real, generated, empty))


def test_latent_mean_is_taken_from_the_reference_and_the_rest_kept():
    generator = torch.Generator().manual_seed(1)
    latents, reference = torch.randn(2, 4, 5, 5, generator=generator), \
        torch.randn(2, 4, 5, 5, generator=generator) + 3
    moved = latent_mean_from(latents, reference)
    assert torch.allclose(moved.mean(dim=(2, 3)), reference.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(moved - moved.mean(dim=(2, 3), keepdim=True),
                          latents - latents.mean(dim=(2, 3), keepdim=True), atol=1e-6)


def test_covering_slot_and_its_share():
    slot_map = np.array([[0, 0, 1], [2, 2, 2], [2, 1, 1]])
    region = np.array([[False, True, True], [True, True, True], [False, False, False]])
    assert covering_slot(slot_map, region, num_slots=3) == (2, 0.6)


def test_bad_shapes_are_refused_by_name():
    real, generated, region = images()
    with pytest.raises(InvalidInput, match="region must be a bool"):
        psnr(real, generated, region.float())
    with pytest.raises(InvalidInput, match="must be one"):
        psnr(real, generated[..., :4])
    with pytest.raises(InvalidInput, match="empty"):
        covering_slot(np.zeros((2, 2)), np.zeros((2, 2), dtype=bool), 1)


def test_colour_source_tells_slots_from_noise():
    rng = np.random.default_rng(0)
    real = rng.uniform(0.2, 0.8, (40, 3))
    # colour read from the slots: each seed adds a little noise around the real colour
    from_slots = real[:, None] + rng.normal(0, 0.01, (40, 4, 3))
    # colour read from the noise: each seed draws its own colour, whatever the image
    from_noise = rng.uniform(0.2, 0.8, (40, 4, 3))
    slots, noise = colour_source(from_slots, real), colour_source(from_noise, real)
    assert slots["correlation_with_real"] > 0.99 and abs(noise["correlation_with_real"]) < 0.2
    assert slots["variance_across_seeds"] < 0.01 * slots["variance_across_images"]
    assert noise["variance_across_seeds"] > 2 * noise["variance_across_images"]
    assert slots["colour_error"] < slots["colour_error_dataset_mean"] < noise["colour_error"]


def test_colour_source_values_by_hand():
    real = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    generated = np.array([[[0.0] * 3, [0.2] * 3], [[1.0] * 3, [0.8] * 3]])
    result = colour_source(generated, real)
    assert result["variance_across_seeds"] == pytest.approx(0.01)       # (±0.1)² per image
    assert result["variance_across_images"] == pytest.approx(0.16)      # means 0.1 and 0.9
    assert result["variance_real"] == pytest.approx(0.25)
    assert result["correlation_with_real"] == pytest.approx(1.0)
    assert result["colour_error"] == pytest.approx(0.1)
    assert result["colour_error_dataset_mean"] == pytest.approx(0.5)


def test_colour_source_refuses_bad_shapes():
    with pytest.raises(InvalidInput, match=r"\(N, S, 3\)"):
        colour_source(np.zeros((4, 2, 3)), np.zeros((3, 3)))
    with pytest.raises(InvalidInput, match="2 seeds"):
        colour_source(np.zeros((4, 1, 3)), np.zeros((4, 3)))


def test_colour_correlation_by_hand():
    real = np.array([[0.1, 0.2, 0.3], [0.5, 0.4, 0.9], [0.3, 0.8, 0.6]])
    assert colour_correlation(0.5 * real + 0.2, real) == pytest.approx(1.0)
    assert colour_correlation(-real, real) == pytest.approx(-1.0)
    # one channel constant: its correlation is undefined, and so is the mean
    flat = real.copy()
    flat[:, 0] = 0.5
    assert math.isnan(colour_correlation(flat, real))
    expected = np.mean([np.corrcoef(real[::-1, c], real[:, c])[0, 1] for c in range(3)])
    assert colour_correlation(real[::-1], real) == pytest.approx(expected)


def test_colour_correlation_refuses_bad_shapes():
    with pytest.raises(InvalidInput, match=r"\(N, 3\)"):
        colour_correlation(np.zeros((4, 3)), np.zeros((3, 3)))
    with pytest.raises(InvalidInput, match="N >= 2"):
        colour_correlation(np.zeros((1, 3)), np.zeros((1, 3)))
