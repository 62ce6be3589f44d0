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


def test_mass_normalisation_follows_its_formula_on_random_attention():
    """``normalisation="mass"`` written out with numpy: objectness = min–max of the summed
    refined maps, class = argmax of each map divided by its own total."""
    rng = np.random.default_rng(7)
    attention = rng.random((64, 64)) ** 6
    attention /= attention.sum(axis=1, keepdims=True)
    cross = rng.random((3, 8, 8))
    refined = (np.linalg.matrix_power(attention, 2) @ cross.reshape(3, -1).T).T
    total = refined.sum(axis=0)
    objectness = (total - total.min()) / (total.max() - total.min())
    best = (refined / refined.sum(axis=1, keepdims=True)).argmax(axis=0)
    expected = np.where(objectness >= 0.6, best + 1, 255)
    expected = np.where(objectness < 0.4, 0, expected).reshape(8, 8).astype(np.uint8)
    ours = pseudo_mask(cross, attention, 8, tau=2, normalisation="mass")
    np.testing.assert_array_equal(ours, expected)


def test_mass_normalisation_does_not_let_nearly_flat_attention_claim_a_region():
    """Class 1 attends to blob 1; class 2's map is nearly flat with a small bump on blob 2.
    Per-class min–max stretches the bump to 1, so blob 2 becomes class 2; with the mass option
    objectness comes from the summed maps, where the bump is small: blob 2 stays background."""
    labels, attention = _blob_world(16)
    cross = np.full((2, 16, 16), 0.01)
    cross[0][labels == 1] = 1.0
    cross[1][labels == 2] = 0.02
    minmax = pseudo_mask(cross, attention, 16, tau=1)
    assert (minmax[labels == 1] == 1).all() and (minmax[labels == 2] == 2).all()
    mass = pseudo_mask(cross, attention, 16, tau=1, normalisation="mass")
    assert (mass[labels == 1] == 1).all() and (mass[labels != 1] == 0).all()


def test_unknown_normalisation_is_rejected():
    with pytest.raises(ValueError, match="unknown normalisation 'softmax'"):
        pseudo_mask(np.zeros((1, 4, 4)), np.eye(16), 8, normalisation="softmax")
