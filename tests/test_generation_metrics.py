"""Table 7 metrics (glass.eval.generation) and the Fréchet distance (glass.eval.frechet)."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from glass.eval import generation
from glass.eval.frechet import (FeatureStatistics, encoder_frechet_distance, frechet_distance)
from glass.eval.generation import GenerationMetrics, fid_weights, lpips_weights

# ----------------------------------------------------------------------------- Fréchet distance


def test_identical_gaussians_have_distance_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + 0.1 * np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("mu1, s1, mu2, s2", [(0.0, 1.0, 3.0, 2.0), (1.5, 0.3, -0.5, 4.0),
                                              (2.0, 0.5, 2.0, 0.5)])
def test_one_dimensional_closed_form(mu1, s1, mu2, s2):
    # d² = (μ1 − μ2)² + (σ1 − σ2)² for 1-D Gaussians with standard deviations σ
    expected = (mu1 - mu2) ** 2 + (s1 - s2) ** 2
    assert frechet_distance([mu1], [[s1 ** 2]], [mu2], [[s2 ** 2]]) == pytest.approx(expected)
    assert frechet_distance(mu1, s1 ** 2, mu2, s2 ** 2) == pytest.approx(expected)  # scalars


def test_diagonal_covariances_sum_per_dimension():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    std1, std2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((std1 - std2) ** 2)
    got = frechet_distance(mu1, np.diag(std1 ** 2), mu2, np.diag(std2 ** 2))
    assert got == pytest.approx(expected)


def test_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T, b @ b.T + np.eye(5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1))


def test_singular_covariances_use_the_epsilon():
    # 3 samples in 8 dimensions: rank-2 covariances; still finite, ~0 for identical sets
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 8))
    stats = FeatureStatistics()
    stats.update(x)
    d = frechet_distance(stats.mean, stats.covariance, stats.mean, stats.covariance)
    assert np.isfinite(d) and abs(d) < 1e-4
    zero = np.zeros((4, 4))
    assert frechet_distance(np.zeros(4), zero, np.ones(4), zero) == pytest.approx(4.0, abs=1e-4)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_batch_accumulation_equals_one_shot():
    rng = np.random.default_rng(3)
    x = rng.normal(loc=1e3, scale=2.0, size=(101, 7))      # offset mean: tests cancellation
    stats = FeatureStatistics()
    for part in np.array_split(x, [1, 2, 30, 64]):          # sizes 1, 1, 28, 34, 37
        stats.update(torch.from_numpy(part) if len(part) % 2 else part)
    assert stats.count == 101
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError):
        FeatureStatistics().covariance


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from glass.model.encoder import FrozenDinov2Encoder
    from glass.tiny.dinov2 import build_tiny_dinov2

    path = build_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2"), seed=0)
    return FrozenDinov2Encoder(str(path), image_size=32)      # 4×4 tokens of 64 dims


def test_dinov2_frechet_distance(tiny_encoder):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(12, 3, 32, 32, generator=g)
    other = (torch.rand(12, 3, 32, 32, generator=g) * 0.3).clamp(0, 1)
    same = encoder_frechet_distance(tiny_encoder, real, real)
    assert same["num_real"] == same["num_generated"] == 12 and same["feature_dim"] == 64
    assert abs(same["frechet_distance"]) < 1e-6
    one_shot = encoder_frechet_distance(tiny_encoder, real, other)["frechet_distance"]
    batched = encoder_frechet_distance(tiny_encoder, real.split(5), other.split(7))
    assert one_shot > 1e-3
    assert batched["frechet_distance"] == pytest.approx(one_shot, rel=1e-6)

# ----------------------------------------------------------------------------- Table 7 metrics


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch cache, and any download attempt is a test failure."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    attempts = []

    def no_network(url, *args, **kwargs):
        attempts.append(url)
        raise AssertionError(f"network access attempted: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return attempts


def _pairs(n=4, size=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, size, size, generator=g)
    noisy = (real + 0.1 * torch.randn(real.shape, generator=g)).clamp(0, 1)
    return real, noisy


def test_offline_lpips_and_fid_are_reported_unavailable(offline_torch_home, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metrics = GenerationMetrics(device="cpu")       # allow_download=None → offline → no download
    assert set(metrics.unavailable) == {"lpips", "fid"}
    real, noisy = _pairs()
    metrics.update(real, noisy)
    result = metrics.compute()
    assert offline_torch_home == []                  # no download was attempted
    assert result["num_images"] == 4
    assert result["lpips"] is None and result["fid"] is None
    # recorded portably: no machine's path (reasons go into git-tracked conventions.json)
    assert "$TORCH_HOME/hub/checkpoints/alexnet-" in result["lpips_unavailable"]
    assert str(tmp_path) not in result["lpips_unavailable"] + result["fid_unavailable"]
    assert "alexnet" in result["lpips_unavailable"]
    assert "weights-inception-2015-12-05" in result["fid_unavailable"]
    for key in ("lpips_unavailable", "fid_unavailable"):
        assert "glass.eval.generation download" in result[key]
        assert "downloads are off" in result[key]
    # PSNR and SSIM need no weights: per-image mean
    per_image = [10 * torch.log10(1 / ((r - n) ** 2).mean()) for r, n in zip(real, noisy)]
    assert result["psnr"] == pytest.approx(float(torch.stack(per_image).mean()), rel=1e-5)
    assert 0 < result["ssim"] < 1
    # the reference: each real image's own mean colour as its reconstruction, by hand
    flat = [10 * torch.log10(1 / ((r - r.mean(dim=(1, 2), keepdim=True)) ** 2).mean())
            for r in real]
    assert result["psnr_mean_colour"] == pytest.approx(float(torch.stack(flat).mean()),
                                                       rel=1e-5)


def test_failed_download_is_caught_and_reported(offline_torch_home, monkeypatch):
    def unreachable(url, *args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    metrics = GenerationMetrics(allow_download=True)
    for name in ("lpips", "fid"):
        assert "could not be downloaded" in metrics.unavailable[name]
        assert "network unreachable (test)" in metrics.unavailable[name]
    metrics.update(*_pairs(n=2))
    result = metrics.compute()
    assert result["lpips"] is None and result["fid"] is None
    assert "URLError" in result["fid_unavailable"]


def test_explicit_missing_fid_file_and_disabled_metrics(offline_torch_home, tmp_path):
    metrics = GenerationMetrics(lpips=False, fid_weights_path=tmp_path / "missing.pth",
                                allow_download=True)
    assert "explicit fid_weights_path" in metrics.unavailable["fid"]
    assert str(tmp_path / "missing.pth") in metrics.unavailable["fid"]
    metrics.update(*_pairs(n=2))
    result = metrics.compute()
    assert result["lpips"] is None and "lpips=False" in result["lpips_unavailable"]


def test_corrupt_weights_are_reported(offline_torch_home, tmp_path):
    broken = tmp_path / "inception.pth"
    broken.write_bytes(b"not a checkpoint")
    metrics = GenerationMetrics(lpips=False, fid_weights_path=broken)
    assert "could not be loaded from" in metrics.unavailable["fid"]


def test_lpips_with_cached_weights_is_computed(offline_torch_home, monkeypatch):
    """With the backbone checkpoint in the cache LPIPS is built from it without network (random
    SqueezeNet weights stand in for the ImageNet ones: the values are not meaningful)."""
    import torchvision

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = lpips_weights("squeeze")
    weights.path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), weights.path)
    metrics = GenerationMetrics(fid=False, lpips_net="squeeze")
    assert "lpips" not in metrics.unavailable
    real, noisy = _pairs(n=3, size=64)
    metrics.update(real, real)
    assert metrics.compute()["lpips"] == pytest.approx(0.0, abs=1e-6)
    other = GenerationMetrics(fid=False, lpips_net="squeeze")
    other.update(real, noisy)
    result = other.compute()
    assert result["lpips"] > 0 and "lpips_unavailable" not in result
    assert offline_torch_home == []


def test_fid_with_given_weights_is_computed(offline_torch_home, tmp_path, monkeypatch):
    """The FID path end to end with a random-weight InceptionV3 checkpoint file (values not
    meaningful): images reach both feature sets and the count is reported."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception

    # Build the network without loading weights, to save a random checkpoint of its layout.
    with monkeypatch.context() as patch:
        patch.setattr(inception, "load_state_dict_from_url", lambda *a, **k: None)
        patch.setattr(inception.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, *a, **k: None)
        torch.manual_seed(0)
        network = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "random-inception.pth"
    torch.save(network.state_dict(), path)
    del network
    assert fid_weights(path).present
    metrics = GenerationMetrics(lpips=False, fid_weights_path=path)
    assert "fid" not in metrics.unavailable
    real, noisy = _pairs(n=3, size=32)
    metrics.update(real[:2], noisy[:2])
    metrics.update(real[2:], noisy[2:])
    result = metrics.compute()
    assert result["num_images"] == 3
    assert metrics.fid.real_features_num_samples == metrics.fid.fake_features_num_samples == 3
    assert np.isfinite(result["fid"]) and "fid_unavailable" not in result
    assert offline_torch_home == []


def test_fid_needs_two_images(offline_torch_home, tmp_path, monkeypatch):
    from torchmetrics.image.fid import FrechetInceptionDistance

    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    monkeypatch.setattr(generation, "_new_fid", lambda path: FrechetInceptionDistance(
        feature=pooled, normalize=True))            # a tiny stand-in feature network
    (tmp_path / "w.pth").write_bytes(b"")
    metrics = GenerationMetrics(lpips=False, fid_weights_path=tmp_path / "w.pth")
    metrics.update(*_pairs(n=1))
    result = metrics.compute()
    assert result["fid"] is None and "at least 2 images" in result["fid_unavailable"]
    metrics.update(*_pairs(n=3, seed=1))
    assert np.isfinite(metrics.compute()["fid"])


def test_dinov2_distance_inside_generation_metrics(offline_torch_home, tiny_encoder):
    real, noisy = _pairs(n=6, size=32)
    metrics = GenerationMetrics(fid=False, lpips=False, feature_encoder=tiny_encoder)
    metrics.update(real[:4], noisy[:4])
    metrics.update(real[4:], noisy[4:])
    result = metrics.compute()
    expected = encoder_frechet_distance(tiny_encoder, real, noisy)["frechet_distance"]
    # equal up to float32 differences between batched and one-shot encoder passes
    assert result["fd_dinov2"] == pytest.approx(expected, rel=1e-6)
    assert result["fid"] is None and "fid=False" in result["fid_unavailable"]


def test_input_validation():
    metrics = GenerationMetrics(fid=False, lpips=False)
    real, noisy = _pairs(n=2)
    with pytest.raises(ValueError):
        metrics.update(real, noisy[:1])
    with pytest.raises(ValueError):
        metrics.update(real * 2, noisy)
    with pytest.raises(TypeError):
        metrics.update((real * 255).byte(), noisy)
    with pytest.raises(ValueError):
        metrics.compute()                            # nothing accumulated
