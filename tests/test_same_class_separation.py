"""pair_separation: same-class pairs whose tokens are alike score ~0, distinct pairs 1."""

import numpy as np
import torch

from glass.pretrain.same_class_separation import pair_separation


class ColourTokens:
    """A stand-in encoder whose token at each pixel is that pixel's colour (one token per pixel),
    so two instances of one colour have identical features and cannot be told apart."""

    def __init__(self, side: int) -> None:
        self.grid_size = (side, side)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(2).transpose(1, 2) + 1e-3   # (B, N, 3); nonzero for normalising


def test_identical_same_class_instances_are_not_separated_and_different_classes_are():
    side = 8
    image = np.zeros((side, side, 3), np.uint8)
    instances = np.zeros((side, side), np.int32)
    instances[0:3, 0:3], instances[5:8, 0:3], instances[0:3, 5:8] = 1, 2, 3
    image[instances == 1] = image[instances == 2] = (200, 20, 20)   # two "a" in one colour
    image[instances == 3] = (20, 20, 200)                           # a "b"
    result = pair_separation(ColourTokens(side), [("img", image, instances, ["a", "a", "b"])])
    assert result.same_class_pairs == 1 and result.different_class_pairs == 2
    assert abs(result.same_class_ari) < 1e-9
    assert result.different_class_ari == 1.0


def test_same_class_instances_that_differ_in_their_features_are_separated():
    side = 8
    image = np.zeros((side, side, 3), np.uint8)
    instances = np.zeros((side, side), np.int32)
    instances[0:3, 0:3], instances[5:8, 5:8] = 1, 2
    image[instances == 1], image[instances == 2] = (200, 20, 20), (20, 200, 20)
    result = pair_separation(ColourTokens(side), [("img", image, instances, ["a", "a"])])
    assert (result.same_class_pairs, result.different_class_pairs) == (1, 0)
    assert result.same_class_ari == 1.0 and np.isnan(result.different_class_ari)

