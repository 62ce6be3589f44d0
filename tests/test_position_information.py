"""Ridge probes of position (glass/pretrain/position_information.py), by hand and on fakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glass.errors import InvalidInput
from glass.pretrain.position_information import (cell_centres, encoder_position_information,
                                                 object_tokens, ridge_probe)


def test_ridge_reads_a_linear_target_and_nothing_from_noise():
    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(400, 6)), rng.normal(size=(100, 6))
    weights = rng.normal(size=(6, 2))
    exact = ridge_probe(x, x @ weights + 0.5, x_test, x_test @ weights + 0.5, ridge=1e-6)
    assert exact.mse < 1e-8 < exact.mean_mse and exact.ratio < 1e-6
    y, y_test = rng.uniform(size=(400, 2)), rng.uniform(size=(100, 2))
    noise = ridge_probe(x, y, x_test, y_test, ridge=1e-2)
    assert noise.ratio > 0.95 and (noise.fit, noise.test) == (400, 100)
    # the chance level: the fit set's mean
    assert noise.mean_mse == pytest.approx(float(((y_test - y.mean(0)) ** 2).mean()))


def test_ridge_refuses_too_few_samples():
    with pytest.raises(InvalidInput, match="too few"):
        ridge_probe(np.zeros((3, 64)), np.zeros((3, 2)), np.zeros((2, 64)), np.zeros((2, 2)), 1.0)


def test_cell_centres_are_row_major_x_then_y():
    assert cell_centres((2, 2)).tolist() == [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75],
                                             [0.75, 0.75]]


def test_object_tokens_by_hand():
    # 4x4 map on a 2x2 grid: object 1 fills the top-left cell, object 2 half of the bottom-right
    instances = np.array([[1, 1, 0, 0],
                          [1, 1, 0, 0],
                          [0, 0, 2, 2],
                          [0, 0, 0, 0]])
    features = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 8.0]])
    pooled, centres = object_tokens(features, instances, (2, 2))
    assert pooled.tolist() == [[1.0, 0.0], [4.0, 8.0]]
    assert centres.tolist() == [[0.25, 0.25], [0.75, 0.625]]
    with pytest.raises(InvalidInput, match="does not tile"):
        object_tokens(features, np.zeros((5, 4), dtype=int), (2, 2))


class _Encoder:
    """Tokens that are their cell's centre (``where``) or the mean pixel (nothing of position)."""

    grid_size = (4, 4)

    def __init__(self, where: bool):
        self.where = where

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        if self.where:
            tokens = torch.tensor(cell_centres(self.grid_size), dtype=torch.float32)
            return tokens.expand(batch, -1, -1)
        return images.mean(dim=(1, 2, 3))[:, None, None].expand(batch, 16, 2)


def _samples(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for index in range(count):
        instances = np.zeros((16, 16), dtype=np.int32)
        y, x = rng.integers(0, 12, size=2)
        instances[y:y + 4, x:x + 4] = 1
        image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        yield f"s{index}", image, instances


def test_encoder_probes_tell_position_from_no_position():
    where = encoder_position_information(_Encoder(True), _samples(0, 40), _samples(1, 20), 1e-6)
    assert where["token_position"].ratio < 1e-6
    assert where["object_centre"].ratio < 0.05          # pooled over cells, pixel-exact centre
    blind = encoder_position_information(_Encoder(False), _samples(0, 40), _samples(1, 20), 1e-2)
    assert blind["token_position"].ratio > 0.95 and blind["object_centre"].ratio > 0.9
