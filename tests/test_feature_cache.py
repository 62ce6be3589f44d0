import numpy as np
import pytest
import torch

from glass.train.feature_cache import FeatureCache


def features(batch, seed=0):
    return torch.randn(batch, 16, 8, generator=torch.Generator().manual_seed(seed))


def test_round_trip_in_float16_only_when_every_key_is_cached(tmp_path):
    cache = FeatureCache(tmp_path, "dinov2-vitb14@448")
    values = features(3)
    assert cache.get(["a", "b", "c"]) is None
    cache.put(["a", "b", "c"], values)
    got = cache.get(["c", "a"])
    assert got.dtype == torch.float16 and got.shape == (2, 16, 8)
    assert torch.equal(got, values[[2, 0]].half())
    assert cache.get(["a", "missing"]) is None
    assert cache.has("b") and not cache.has("missing")


def test_flip_flag_is_part_of_the_key(tmp_path):
    cache = FeatureCache(tmp_path, "enc@64")
    plain, mirrored = features(2, 1), features(2, 2)
    cache.put(["a", "b"], plain, flipped=[False, False])
    assert cache.get(["a", "b"], torch.tensor([True, False])) is None  # no flipped "a" yet
    cache.put(["a", "b"], mirrored, flipped=torch.tensor([True, True]))
    got = cache.get(["a", "b"], torch.tensor([True, False]))
    assert torch.equal(got, torch.stack([mirrored[0], plain[1]]).half())
    assert cache.path("a", True) != cache.path("a", False)


def test_another_encoder_or_size_never_sees_these_features(tmp_path):
    FeatureCache(tmp_path, "enc@448").put(["a"], features(1))
    for other in ("enc@224", "other-enc@448"):
        assert FeatureCache(tmp_path, other).get(["a"]) is None
    assert FeatureCache(tmp_path, "enc@448").get(["a"]) is not None
    assert len(list(tmp_path.glob("enc-*/fingerprint.txt"))) == 3


def test_unreadable_entry_counts_as_missing_and_is_removed(tmp_path):
    cache = FeatureCache(tmp_path, "enc@64")
    cache.put(["a"], features(1))
    path = cache.path("a")
    path.write_bytes(path.read_bytes()[:40])  # torn write
    assert cache.get(["a"]) is None and not path.exists()
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_bad_inputs_are_refused(tmp_path):
    cache = FeatureCache(tmp_path, "enc@64")
    with pytest.raises(ValueError, match="2 feature rows for 3 keys"):
        cache.put(["a", "b", "c"], features(2))
    with pytest.raises(ValueError, match="not finite"):
        cache.put(["a"], torch.full((1, 4), 1e6))  # overflows float16
    with pytest.raises(TypeError):
        cache.put(["a", "b"], torch.tensor([True, False]))  # flags passed as features
    with pytest.raises(ValueError, match="key"):
        cache.put(["a.b"], features(1))
    with pytest.raises(ValueError, match="fingerprint"):
        FeatureCache(tmp_path, "")
    cache.put(["x"], np.zeros((1, 4), np.float32))
    cache.put(["y"], np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        cache.get(["x", "y"])
