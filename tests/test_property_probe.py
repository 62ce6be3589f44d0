"""Property prediction (paper Table 8): slot–object matching and the two linear probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glass.eval.property_probe import (ProbeSamples, chance_baselines, mask_box,
                                       match_slots_to_objects, property_prediction,
                                       train_linear_probe, validation_split)

# ----------------------------------------------------------------------------- matching

# 4×6 hand case. Objects: 1 (cols 0-1, rows 0-1, 4 px), 2 (cols 3-5, rows 1-3, 9 px),
# 3 (one pixel at row 3, col 0); background 0 elsewhere.
INSTANCES = np.array([[1, 1, 0, 0, 0, 0],
                      [1, 1, 0, 2, 2, 2],
                      [0, 0, 0, 2, 2, 2],
                      [3, 0, 0, 2, 2, 2]])
# Slots: 0 covers object 1 plus one background pixel (IoU 4/5); 1 covers object 2's left column
# and the column beside it (IoU 3/12); 2 covers object 2's right two columns and the pixels above
# them (IoU 6/11); 3 is the rest (background + object 3: IoU 1/5 with object 3).
SLOTS = np.array([[0, 0, 0, 3, 2, 2],
                  [0, 0, 1, 1, 2, 2],
                  [3, 3, 1, 1, 2, 2],
                  [3, 3, 1, 1, 2, 2]])
CLASSES = {1: 7, 2: 4, 3: 1}


def test_hand_case_matching():
    matches = match_slots_to_objects(SLOTS, INSTANCES, CLASSES)
    assert [(m.slot_index, m.object_id, m.class_index) for m in matches] == \
        [(0, 1, 7), (2, 2, 4), (3, 3, 1)]
    # slot 0 ∩ object 1 = 4 px, union = 5 (slot 0 has 5 px)
    assert matches[0].iou == pytest.approx(4 / 5)
    assert matches[1].iou == pytest.approx(6 / 11)    # slot 2 = 8 px (6 in object 2) ∪ 9 px
    assert matches[2].iou == pytest.approx(1 / 5)     # slot 3 = 5 px ⊃ object 3 = 1 px
    # centres from the masks' boxes, pixel edges included, / (W=6, H=4)
    assert matches[0].centre == pytest.approx((1 / 6, 1 / 4))
    assert matches[1].centre == pytest.approx((4.5 / 6, 2.5 / 4))
    assert matches[2].centre == pytest.approx((0.5 / 6, 3.5 / 4))
    assert mask_box(INSTANCES, 2) == (3.0, 1.0, 6.0, 4.0)
    assert mask_box(INSTANCES, 9) is None


def test_matching_with_boxes_ignore_and_soft_masks():
    boxes = {1: (0, 0, 20, 10), 2: (30, 10, 60, 40), 3: (0, 30, 10, 40)}
    # object 3's only pixel is ignored → no overlap → unmatched
    ignore = INSTANCES == 3
    matches = match_slots_to_objects(SLOTS, INSTANCES, CLASSES, boxes, image_size=(60, 40),
                                     ignore=ignore)
    assert [(m.slot_index, m.object_id) for m in matches] == [(0, 1), (2, 2)]
    assert matches[0].centre == pytest.approx((10 / 60, 5 / 40))
    assert matches[1].centre == pytest.approx((45 / 60, 25 / 40))
    # soft masks (K, H, W) whose argmax is SLOTS give the same matches; a slot with no pixels
    # (index 4) is allowed
    soft = np.eye(5)[SLOTS].transpose(2, 0, 1) * 0.6 + 0.1
    soft_matches = match_slots_to_objects(torch.from_numpy(soft), INSTANCES, CLASSES)
    assert soft_matches == match_slots_to_objects(SLOTS, INSTANCES, CLASSES)
    # only the objects named in `classes` are matched
    only_two = match_slots_to_objects(SLOTS, INSTANCES, {2: 0})
    assert [(m.slot_index, m.object_id) for m in only_two] == [(2, 2)]


def test_more_objects_than_slots_and_upsampled_soft_masks():
    instances = np.zeros((8, 8), dtype=np.int64)
    instances[:4, :4], instances[:4, 4:], instances[4:, :] = 1, 2, 3
    # two slots at 2×2: left / right halves; bilinear upsampling to 8×8 keeps the halves
    soft = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    matches = match_slots_to_objects(soft, instances, {1: 0, 2: 1, 3: 2})
    assert len(matches) == 2                          # 3 objects, 2 slots
    assert {m.slot_index for m in matches} == {0, 1}
    # Hungarian maximises total IoU: slot 0 (left half, 32 px) ↔ object 3 (bottom, 32 px) gives
    # 16/48, ↔ object 1 gives 16/32; the best total pairs slot 0–1 and slot 1–2 (0.5 + 0.5)
    assert {(m.slot_index, m.object_id) for m in matches} == {(0, 1), (1, 2)}


def test_samples_from_matches():
    slots = torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3)
    matches = match_slots_to_objects(SLOTS, INSTANCES, CLASSES)
    samples = ProbeSamples.from_matches("img-1", slots, matches)
    np.testing.assert_array_equal(samples.features, slots[[0, 2, 3]].numpy())
    np.testing.assert_array_equal(samples.classes, [7, 4, 1])
    assert samples.image_ids == ["img-1"] * 3
    both = ProbeSamples.concatenate([samples, ProbeSamples.from_matches("img-2", slots, [])])
    assert len(both) == 3

# ----------------------------------------------------------------------------- probes


def _synthetic(n_images=300, seed=0, num_classes=5, noise_dims=8):
    """Slots whose class is a one-hot block (linearly separable) and whose first two dims are
    4 × the centre (a linear function), plus noise dims; 3 objects per image."""
    rng = np.random.default_rng(seed)
    n = n_images * 3
    classes = rng.integers(0, num_classes, size=n)
    centres = rng.uniform(0.05, 0.95, size=(n, 2))
    features = np.concatenate([4 * centres, 3 * np.eye(num_classes)[classes],
                               rng.normal(size=(n, noise_dims))], axis=1)
    features += 0.05 * rng.normal(size=features.shape)
    ids = [f"{seed}-{i // 3}" for i in range(n)]
    return ProbeSamples(features, classes, centres, ids)


def test_probes_learn_linearly_separable_slots():
    train, test = _synthetic(300, seed=0), _synthetic(60, seed=1)
    # the paper's VOC budget (50 epochs) at its constant lr 3e-4
    result = property_prediction(train, test, num_classes=5, max_epochs=50, batch_size=16,
                                 seed=0)
    assert result["class_accuracy"] >= 0.95
    assert result["centre_mse"] < 0.005              # predicting the mean gives ≈ 0.07
    assert result["num_train"] + result["num_val"] == len(train) and result["num_test"] == 180
    assert result["num_val"] > 0 and result["num_val"] % 3 == 0   # whole images
    assert 1 <= result["class_best_epoch"] <= result["class_epochs_run"] <= 50


def test_chance_baselines_by_hand():
    fit = ProbeSamples(np.zeros((4, 3)), np.array([2, 5, 5, 2]),
                       np.array([[0.2, 0.4], [0.4, 0.4], [0.6, 0.8], [0.8, 0.8]]),
                       ["a", "a", "b", "b"])
    test = ProbeSamples(np.zeros((2, 3)), np.array([2, 7]), np.array([[0.5, 0.6], [0.1, 0.6]]),
                        ["c", "c"])
    majority, mean_centre = chance_baselines(fit, test)
    # classes 2 and 5 tie: the smaller index; the mean centre is (0.5, 0.6)
    assert majority == 0.5
    assert mean_centre == pytest.approx((0.0 + 0.0 + 0.4 ** 2 + 0.0) / 4)


def test_slots_without_position_score_the_mean_centre():
    """Slots that know the class but not where the object is: the class probe beats the
    majority baseline, the centre probe cannot beat the mean centre by more than noise."""
    train, test = _synthetic(300, seed=0), _synthetic(60, seed=1)
    for samples in (train, test):
        samples.features[:, :2] = 0.0                # drop the position dims
    result = property_prediction(train, test, num_classes=5, max_epochs=50, batch_size=16,
                                 seed=0)
    assert result["class_accuracy"] >= 0.95 > 0.5 > result["class_accuracy_majority"]
    assert result["centre_mse"] > 0.95 * result["centre_mse_mean"] > 0.05
    with_position = property_prediction(_synthetic(300, seed=0), _synthetic(60, seed=1),
                                        num_classes=5, max_epochs=50, batch_size=16, seed=0)
    assert with_position["centre_mse"] < 0.1 * with_position["centre_mse_mean"]


def test_early_stopping_when_nothing_improves():
    train = _synthetic(40, seed=2)
    x, y = train.features, train.classes
    fit = train_linear_probe(x[:90], y[:90], x[90:], y[90:], task="class", num_outputs=5,
                             max_epochs=50, batch_size=16, lr=0.0, weight_decay=0.0,
                             patience=5)
    assert fit.epochs_run == 5 and fit.best_epoch == 0
    assert len(fit.val_losses) == 6 and len(set(fit.val_losses)) == 1


def test_early_stopping_restores_the_best_weights():
    # centre probe fed pure noise: validation MSE soon rises; the kept weights are the best's
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(120, 30)), rng.uniform(size=(120, 2))
    fit = train_linear_probe(x[:20], y[:20], x[20:], y[20:], task="centre", num_outputs=2,
                             max_epochs=200, batch_size=4, lr=3e-2, patience=5, seed=1)
    assert fit.epochs_run < 200 and fit.epochs_run == fit.best_epoch + 5
    with torch.no_grad():
        kept = torch.nn.functional.mse_loss(fit.model(torch.tensor(x[20:], dtype=torch.float32)),
                                            torch.tensor(y[20:], dtype=torch.float32))
    assert float(kept) == pytest.approx(fit.best_val_loss, rel=1e-6)
    assert fit.best_val_loss == min(fit.val_losses)


def test_deterministic_and_split_by_id():
    train, test = _synthetic(80, seed=5), _synthetic(20, seed=6)
    kwargs = dict(num_classes=5, max_epochs=3, batch_size=8, seed=3)
    assert property_prediction(train, test, **kwargs) == property_prediction(train, test, **kwargs)
    # the split follows the image ids, not their position
    mask = validation_split(train.image_ids, 0.2)
    order = np.random.default_rng(0).permutation(len(train))
    np.testing.assert_array_equal(validation_split([train.image_ids[i] for i in order], 0.2),
                                  mask[order])
    assert 0 < mask.mean() < 0.5
    # a different seed gives different initial weights / shuffling
    other = property_prediction(train, test, **{**kwargs, "seed": 4})
    assert other != property_prediction(train, test, **kwargs)


def test_rejects_bad_inputs():
    train = _synthetic(10)
    with pytest.raises(ValueError):
        property_prediction(train, train, num_classes=3, max_epochs=1, batch_size=4)
    with pytest.raises(ValueError):
        validation_split(train.image_ids, 0.0)
    with pytest.raises(ValueError):
        match_slots_to_objects(SLOTS[:, :5], INSTANCES, CLASSES)
