"""The MLP decoder's feature-reconstruction scores (glass/eval/feature_reconstruction.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glass.errors import InvalidInput
from glass.eval.feature_reconstruction import (ImageReconstruction, centroid_spread,
                                               score_feature_reconstruction, segment_mean,
                                               token_segments)


def test_token_segments_vote_per_cell_and_ties_go_to_the_smaller_id():
    instances = np.zeros((4, 4), dtype=np.int32)
    instances[0, 0:2] = 3          # top-left cell: half 3, half 0 → tie → 0
    instances[0:2, 2:4] = 5        # top-right cell: all 5
    instances[2:4, 0:2] = 2
    instances[3, 0] = 0            # bottom-left: 3 of 4 pixels are 2
    assert token_segments(instances, (2, 2)).tolist() == [0, 5, 2, 0]
    # a map that does not tile the grid is resized (nearest) before the vote
    assert token_segments(np.ones((5, 3), dtype=np.int32), (2, 2)).tolist() == [1, 1, 1, 1]
    with pytest.raises(InvalidInput, match="instance map"):
        token_segments(np.zeros((2, 2, 2), dtype=np.int32), (2, 2))


def test_segment_mean_by_hand():
    features = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [7.0, 1.0]])
    means = segment_mean(features, np.array([4, 0, 4, 0]))
    assert means.tolist() == [[3.0, 2.5], [5.0, 1.5], [3.0, 2.5], [5.0, 1.5]]
    with pytest.raises(InvalidInput, match="3 labels"):
        segment_mean(features, np.array([0, 1, 2]))


def test_centroid_spread_is_zero_for_masks_alike_everywhere_and_exact_for_halves():
    assert centroid_spread(torch.full((7, 16), 1 / 7), (4, 4)) == pytest.approx(0.0, abs=1e-12)
    # left and right halves of a 1x2 grid: centroids at x = 0.25 and 0.75, common 0.5
    assert centroid_spread(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), (1, 2)) == pytest.approx(0.25)
    # an empty mask has no centroid and no weight
    halves_and_empty = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert centroid_spread(halves_and_empty, (1, 2)) == pytest.approx(0.25)
    with pytest.raises(InvalidInput, match="expected masks"):
        centroid_spread(torch.ones(2, 3), (1, 2))


def _image(reconstruct: str) -> ImageReconstruction:
    """A 2x2-token image: object 1 on the left column, background on the right; features are
    the segment's vector plus a little noise."""
    generator = torch.Generator().manual_seed(0)
    instances = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]],
                         dtype=np.int32)
    segment = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0]])
    features = segment + 0.1 * torch.randn(4, 2, generator=generator)
    labels = token_segments(instances, (2, 2))
    reconstruction = {"image_mean": features.mean(0, keepdim=True).expand_as(features),
                      "instance_mean": segment_mean(features, labels)}[reconstruct]
    constant = torch.full((3, 4), 1 / 3)
    per_side = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    return ImageReconstruction(features=features, reconstruction=reconstruction,
                               decoder_masks=constant, attention=per_side, instances=instances)


def test_scores_place_a_constant_decoder_at_the_image_mean():
    constant = score_feature_reconstruction([_image("image_mean")], (2, 2))
    drawn = score_feature_reconstruction([_image("instance_mean")], (2, 2))
    assert constant.decoder_mse == pytest.approx(constant.image_mean_mse)
    assert drawn.decoder_mse == pytest.approx(drawn.instance_mean_mse)
    assert drawn.instance_mean_mse < 0.05 < drawn.image_mean_mse   # the segments differ by √5
    assert constant.decoder_spread == pytest.approx(0.0, abs=1e-12)
    # slot attention and the ground truth both split the image into its two columns
    assert constant.attention_spread == pytest.approx(0.25)
    assert constant.ground_truth_spread == pytest.approx(0.25)
    assert constant.images == 1
    assert constant.as_dict()["centroid_spread"]["slot_attention"] == 0.25
    with pytest.raises(InvalidInput, match="no image"):
        score_feature_reconstruction([], (2, 2))


def test_instance_guidance_length_experiment_is_deterministic(tmp_path):
    """experiments/instance_guidance_length.py in miniature on the committed tiny DINOv2: one
    curve row per evaluation, the same numbers on a second run (scenes, initialisation, batches
    and slot noise all come from its seeds), the timing column aside."""
    repo = Path(__file__).resolve().parents[1]
    reports = []
    for run in ("a", "b"):
        result = subprocess.run(
            [sys.executable, "experiments/instance_guidance_length.py", "--steps", "6",
             "--eval-every", "3", "--fit-images", "20", "--test-images", "6",
             "--out", str(tmp_path / run / "length")],
            cwd=repo, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((tmp_path / run / "length.json").read_text())
        for row in report["curve"]:
            row.pop("seconds")
        reports.append(report)
    assert reports[0] == reports[1]
    curve = reports[0]["curve"]
    assert [row["step"] for row in curve] == [3, 6]
    assert all(row["images"] == 6 and 0 < row["miou_i"] <= 1 for row in curve)
    assert curve[0]["mse"]["decoder"] != curve[1]["mse"]["decoder"]   # it trains
    assert 0 < reports[0]["instance_mean_mse"] < reports[0]["image_mean_mse"]
    assert "| 6 |" in (tmp_path / "a" / "length.md").read_text()
