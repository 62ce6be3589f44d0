"""glass.synth.pseudo_mask on constructed attention whose answer is known."""

import numpy as np
import pytest

from glass.synth import pseudo_mask
from glass.synth.pseudo_mask import self_attention_grid


def _blob_world(grid=16):
    """Two square blobs on a grid; self-attention spreads uniformly within each blob and
    within the background (as SD's self-attention groups pixels of one region)."""
    labels = np.zeros((grid, grid), dtype=int)
    labels[2:8, 2:8] = 1
    labels[9:15, 8:14] = 2
    flat = labels.ravel()
    n = flat.size
    attention = np.zeros((n, n))
    for token in range(n):
        same = np.flatnonzero(flat == flat[token])
        attention[token, same] = 1.0 / len(same)
    return labels, attention


def test_refinement_spreads_a_single_hot_cross_attention_over_its_blob():
    labels, attention = _blob_world(16)
    cross = np.zeros((2, 16, 16))
    cross[0, 4, 4] = 1.0    # one token inside blob 1
    cross[1, 12, 10] = 1.0  # one token inside blob 2
    mask = pseudo_mask(cross, attention, 16, tau=4, low=0.4, high=0.6)
    assert mask.dtype == np.uint8 and mask.shape == (16, 16)
    np.testing.assert_array_equal(mask, labels.astype(np.uint8))  # same resolution: exact


def test_upsampled_mask_labels_blob_interiors_and_background():
    labels, attention = _blob_world(16)
    cross = np.zeros((2, 8, 8))  # lower-resolution cross-attention, bicubic-resized to 16x16
    cross[0, 2, 2] = 1.0
    cross[1, 6, 5] = 1.0
    mask = pseudo_mask(cross, attention, (64, 64))
    assert mask.shape == (64, 64)
    assert (mask[12:28, 12:28] == 1).all()   # inside blob 1 (rows/cols 2..7 of 16 → 8..31 of 64)
    assert (mask[40:56, 36:52] == 2).all()   # inside blob 2
    assert (mask[0:6, 40:64] == 0).all()     # far background
    assert set(np.unique(mask)) <= {0, 1, 2, 255}


def _reference(cross, attention, tau, low, high):
    """The paper's formula written out with numpy, for inputs already at one resolution."""
    k = cross.shape[0]
    refined = (np.linalg.matrix_power(attention, tau) @ cross.reshape(k, -1).T).T
    lo, hi = refined.min(axis=1, keepdims=True), refined.max(axis=1, keepdims=True)
    normalised = (refined - lo) / (hi - lo)
    objectness, best = normalised.max(axis=0), normalised.argmax(axis=0)
    out = np.where(objectness >= high, best + 1, 255)
    out = np.where(objectness < low, 0, out)
    return out.reshape(cross.shape[1:]).astype(np.uint8)


@pytest.mark.parametrize("tau", [1, 2, 4])
def test_agrees_with_the_formula_on_random_attention(tau):
    rng = np.random.default_rng(tau)
    attention = rng.random((64, 64)) ** 6
    attention /= attention.sum(axis=1, keepdims=True)  # rows sum to 1
    cross = rng.random((3, 8, 8))
    ours = pseudo_mask(cross, attention, 8, tau=tau)
    np.testing.assert_array_equal(ours, _reference(cross, attention, tau, 0.4, 0.6))


def test_thresholds_low_high_and_unsure_band():
    # tau = 0 leaves the maps as they are; values chosen on both sides of each threshold
    values = np.array([0.0, 0.39, 0.4, 0.59, 0.6, 1.0]).reshape(1, 2, 3)
    mask = pseudo_mask(values, np.eye(6), (2, 3), tau=0, low=0.4, high=0.6)
    np.testing.assert_array_equal(mask, [[0, 0, 255], [255, 1, 1]])
    # Dataset Diffusion's thresholds (0.5 / 0.6) make 0.4 background
    mask_dd = pseudo_mask(values, np.eye(6), (2, 3), tau=0, low=0.5, high=0.6)
    np.testing.assert_array_equal(mask_dd, [[0, 0, 0], [255, 1, 1]])


def test_no_classes_and_flat_maps_give_background():
    attention = np.eye(16)
    assert (pseudo_mask(np.zeros((0, 4, 4)), attention, 8) == 0).all()
    assert (pseudo_mask(np.ones((2, 4, 4)), attention, 8) == 0).all()


def test_bad_shapes_and_settings_are_rejected():
    with pytest.raises(ValueError, match="no grid"):
        pseudo_mask(np.zeros((1, 4, 4)), np.eye(15), 8)
    with pytest.raises(ValueError, match="low <= high"):
        pseudo_mask(np.zeros((1, 4, 4)), np.eye(16), 8, low=0.7, high=0.6)
    with pytest.raises(ValueError, match="expected cross_maps"):
        pseudo_mask(np.zeros((4, 4)), np.eye(16), 8)
    assert self_attention_grid(32 * 16, (16, 8)) == (32, 16)
