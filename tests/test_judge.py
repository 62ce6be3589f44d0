"""The judge (glass.pretrain.judge) and the pseudo-mask quality measured against it
(glass.synth.mask_quality)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from glass.data.toy_world import ToyWorldConfig
from glass.synth.mask_quality import MaskQuality, in_judge_labels

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "models" / "toy" / "judge"


def test_iou_presence_and_unsure_share_by_hand():
    quality = MaskQuality(("kite", "pizza", "tv"), min_presence=0.25)
    # pseudo mask: label 1 = the first prompted class (pizza), 255 = unsure
    mask = np.array([[1, 1, 0, 0],
                     [1, 255, 0, 0]], np.uint8)
    # the judge: pizza (2) on three pixels, one of them where the mask says background; tv (3)
    judged = np.array([[2, 0, 2, 0],
                       [2, 2, 3, 0]])
    quality.add(mask, judged, ["pizza"])
    summary = quality.summary()
    # sure pixels: 7; pizza: mask {(0,0),(0,1),(1,0)}, judge {(0,0),(1,0),(0,2)} → 2 / 4
    assert summary["iou_vs_judge"]["pizza"] == 0.5
    # background: mask {(0,2),(0,3),(1,2),(1,3)}, judge {(0,1),(0,3),(1,3)} → 2 / 5
    assert summary["iou_vs_judge"]["background"] == 0.4
    assert summary["iou_vs_judge"]["tv"] == 0.0 and summary["iou_vs_judge"]["kite"] is None
    assert summary["miou_vs_judge"] == pytest.approx((0.5 + 0.4 + 0.0) / 3, abs=1e-4)
    assert summary["unsure_fraction"] == 0.125
    assert summary["class_presence"] == 1.0   # pizza has 4 / 8 >= 0.25 of the judge's pixels
    # objects on sure pixels: mask {(0,0),(0,1),(1,0)}, judge {(0,0),(0,2),(1,0),(1,2)} → 2 / 5;
    # both say object on (0,0) and (1,0), both pizza
    assert summary["object_iou_vs_judge"] == 0.4
    assert summary["class_agreement_on_objects"] == 1.0
    wrong_class = MaskQuality(("kite", "pizza", "tv"))
    wrong_class.add(mask, judged, ["tv"])         # label 1 now means tv: the same pixels, named wrong
    assert wrong_class.summary()["object_iou_vs_judge"] == 0.4
    assert wrong_class.summary()["class_agreement_on_objects"] == 0.0
    quality.add(np.zeros((2, 4), np.uint8), np.zeros((2, 4)), ["kite"])
    assert quality.summary()["class_presence"] == 0.5
    assert quality.summary()["class_presence_per_class"] == {"kite": 0.0, "pizza": 1.0}
    with pytest.raises(ValueError, match="no class 'dog'"):
        quality.add(mask, judged, ["dog"])


def test_pseudo_labels_are_mapped_to_the_judges_labels():
    mask = np.array([[0, 1, 2, 255]], np.uint8)
    assert in_judge_labels(mask, ["tv", "kite"], ("kite", "pizza", "tv")).tolist() == [[0, 3, 1, 255]]


def test_judge_training_is_deterministic(tmp_path):
    from glass.pretrain.judge import JudgeSettings, train_judge

    settings = replace(JudgeSettings(), steps=2, batch_size=2, pool_size=4, warmup_steps=1)
    first, _ = train_judge(ToyWorldConfig(), settings, seed=2, progress=False)
    second, history = train_judge(ToyWorldConfig(), settings, seed=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 second.state_dict().values()))
    assert len(history) == 2
    first.save_pretrained(tmp_path)
    from glass.pretrain.judge import ToySegmenter
    loaded = ToySegmenter.from_pretrained(tmp_path)
    assert loaded.config.image_size == 64 and len(loaded.config.class_names) == 8


def test_the_committed_judge_matches_its_params_and_segments_held_out_renders():
    """The judge's verdicts are only worth its own accuracy: on renders it never saw, it must be
    right about nearly every pixel."""
    from glass.params import load_params, read_section, read_seed
    from glass.pretrain.judge import JUDGE_CLASSES, ToySegmenter, confusion, per_label_iou, render_labelled
    from glass.pretrain.params import PretrainParams

    record = json.loads((COMMITTED / "pretraining.json").read_text())
    params = load_params(REPO / "configs" / "toy-pretrain" / "params.yaml")
    pretrain = read_section(params, "pretrain", PretrainParams)
    assert record["params"] == json.loads(json.dumps(pretrain.record_for("judge")))
    assert record["seed"] == read_seed(params)
    judge = ToySegmenter.from_pretrained(COMMITTED).eval()
    world = replace(pretrain.world, image_size=64)
    images, labels = render_labelled(world, seed=123, split="test", count=24)
    ious = per_label_iou(confusion(judge.segment(images), labels, 1 + len(JUDGE_CLASSES)))
    assert np.mean([iou for iou in ious if iou is not None]) > 0.85
