"""The evaluation preprocessing against the official GLASS evaluation transforms
(ResizeMinShape + CenterCrop with cv2), whose outputs on 18 image sizes were computed once by
running the official code outside the repository (tests/data/official_golden/
eval_preprocessing.json): which source row and column each output label pixel comes from, and
row/column profiles of the resized image and of the encoder's 448-px view."""

import json
from pathlib import Path

import numpy as np
import pytest

from glass.eval.datasets import EvalSample, Preprocess

GOLDEN = json.loads((Path(__file__).parent / "data" / "official_golden" /
                     "eval_preprocessing.json").read_text())
CASES = GOLDEN["cases"]


def pattern_image(height: int, width: int) -> np.ndarray:
    """The golden's test image: channel 0 ramps down the rows, channel 1 across the columns,
    channel 2 a 2-D wave."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([255 * rows / max(height - 1, 1), 255 * cols / max(width - 1, 1),
                      128 + 127 * np.sin(rows / 7) * np.cos(cols / 11)], axis=-1)
    return np.round(image).astype(np.uint8)


def index_sample(height: int, width: int) -> EvalSample:
    """Labels that name their own pixel (row * width + col), so the output says where each
    output pixel was sampled."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    labels = (rows * width + cols).astype(np.int32)
    classes = dict.fromkeys(range(1, height * width), "thing")
    return EvalSample("k", pattern_image(height, width), labels, classes,
                      np.zeros_like(labels, bool))


def profile(view: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    view = view.astype(np.float64)
    return view[..., 0].mean(axis=1), view[..., 1].mean(axis=0), float(view[..., 2].mean())


def test_the_golden_covers_at_least_fourteen_sizes():
    assert len({tuple(case["size"]) for case in CASES}) >= 14


@pytest.mark.parametrize("case", CASES, ids=lambda case: "x".join(map(str, case["size"])))
def test_labels_are_sampled_exactly_as_the_official_code(case):
    height, width = case["size"]
    out = Preprocess(resolution=256, model_resolution=448)(index_sample(height, width))
    expected = (np.array(case["rows"])[:, None] * width + np.array(case["cols"])[None, :])
    np.testing.assert_array_equal(out.instances, expected)
    # the image and the encoder's view: same size rules, crop and interpolation (cv2 versions
    # may round a uint8 differently, hence the small tolerance)
    for view, recorded in ((out.image, case["image"]), (out.model_image, case["model_image"])):
        rows, cols, wave = profile(view)
        np.testing.assert_allclose(rows, recorded["row_means"], atol=0.6)
        np.testing.assert_allclose(cols, recorded["col_means"], atol=0.6)
        assert wave == pytest.approx(recorded["wave_mean"], abs=0.6)
    assert list(out.model_image.shape) == case["model_image_shape"]


def test_torchvision_rules_differ_where_the_issue_found_them():
    """The PIL/torchvision rules truncate the long side, round the crop offset half to even and
    sample labels at pixel centres: on a 480 x 640 image some label pixels differ."""
    sample = index_sample(480, 640)
    official = Preprocess(resolution=256)(sample).instances
    torchvision = Preprocess(resolution=256, rules="torchvision")(sample).instances
    assert official.shape == torchvision.shape == (256, 256)
    assert 0 < (official != torchvision).mean() < 1
    with pytest.raises(ValueError, match="rules"):
        Preprocess(rules="pil")
