"""Instance-level property prediction from slots (paper Sec. 5.3, Table 8; supplement Sec. 2.1).

The paper probes how much a slot knows about the object it binds: one linear layer predicts the
object's class (top-1 accuracy; GLASS: VOC 58.1 %, COCO 20.8 %), another the centre of its
bounding box with coordinates divided by the image size (MSE; VOC 0.037, COCO 0.059). Both use
AdamW at a constant lr 3e-4 and early stopping with patience 5, for at most 50 epochs on VOC and
10 on COCO; slots are matched to objects by IoU (docs/paper-facts.md "Evaluation"). On VOC, which has no
instance masks for its train split, the paper matches with the semantic mask: pass the semantic map
as ``instance_map`` (one object per class region) with that object's box.

Choices the paper leaves open, made here and configurable where it matters:

- Matching: soft slot masks (K, H, W) are resized bilinearly to the instance map and turned into
  a slot-index map by argmax over slots (as the official GLASS evaluation does); IoU between every
  slot and every annotated object; Hungarian assignment (``linear_sum_assignment``) maximising
  total IoU; pairs with IoU 0 are dropped (an object no slot touches gives no sample).
- Centre: box (x_min, y_min, x_max, y_max) in pixels → ((x_min + x_max) / 2 / W,
  (y_min + y_max) / 2 / H). Without boxes, the box of the object's mask, pixel edges included
  (columns c₀..c₁ span [c₀, c₁ + 1)).
- MSE: mean over objects and over both coordinates (``F.mse_loss``).
- Training: the two probes are trained independently, each with its own early stopping on its
  validation loss (cross-entropy / MSE); the untrained probe is epoch 0, so a probe that never
  improves stops after ``patience`` epochs and keeps its initial weights; the best epoch's weights
  are restored. AdamW weight decay is torch's default 1e-2 (the paper gives none).
- Validation split: by image, so the objects of one image never sit on both sides: an image is
  in the validation split when the SHA-256 of its id (``glass.seeding.sample_seed``), read as a
  number in [0, 1), is below ``val_fraction``. It depends on the ids only, not on their order or on
  the training seed, so runs with different seeds share one split.
- Determinism: a ``torch.Generator`` seeded with ``seed`` draws the initial weights (uniform in
  ±1/√D, the bound torch's own ``nn.Linear`` init gives weights and biases) and every epoch's
  shuffling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from glass.seeding import sample_seed

__all__ = ["SlotObjectMatch", "match_slots_to_objects", "mask_box", "ProbeSamples",
           "validation_split", "ProbeFit", "train_linear_probe", "property_prediction"]

PAPER_MAX_EPOCHS = {"voc": 50, "coco": 10}
PAPER_LR = 3e-4
PAPER_PATIENCE = 5


# ----------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class SlotObjectMatch:
    slot_index: int
    object_id: int
    class_index: int
    centre: tuple[float, float]     # (x, y), normalised by image width / height
    iou: float


def _slot_index_map(slot_masks, shape: tuple[int, int], num_slots: int | None
                    ) -> tuple[np.ndarray, int]:
    masks = slot_masks.detach().cpu().numpy() if isinstance(slot_masks, torch.Tensor) \
        else np.asarray(slot_masks)
    if masks.ndim == 2:
        if not np.issubdtype(masks.dtype, np.integer):
            raise TypeError(f"a slot-index map must hold integers, got {masks.dtype}")
        if masks.shape != shape:
            raise ValueError(f"slot-index map {masks.shape} and instance map {shape} differ in "
                             "shape (resize it with nearest neighbours first)")
        if masks.size and masks.min() < 0:
            raise ValueError("slot indices must be >= 0")
        count = int(masks.max()) + 1 if masks.size else 0
        return masks.astype(np.int64), max(count, num_slots or 0)
    if masks.ndim != 3:
        raise ValueError(f"slot masks must be (K, H, W) or an (H, W) index map, got {masks.shape}")
    soft = torch.as_tensor(masks, dtype=torch.float32)
    if tuple(soft.shape[-2:]) != shape:
        soft = F.interpolate(soft[None], size=shape, mode="bilinear", align_corners=False)[0]
    return soft.argmax(dim=0).numpy().astype(np.int64), soft.shape[0]


def mask_box(instance_map: np.ndarray, object_id: int) -> tuple[float, float, float, float] | None:
    """(x_min, y_min, x_max, y_max) of the object's pixels, pixel edges included; None if empty."""
    rows, cols = np.nonzero(np.asarray(instance_map) == object_id)
    if rows.size == 0:
        return None
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def match_slots_to_objects(slot_masks, instance_map: np.ndarray, classes: Mapping[int, int],
                           boxes: Mapping[int, Sequence[float]] | None = None, *,
                           image_size: tuple[int, int] | None = None,
                           ignore: np.ndarray | None = None,
                           num_slots: int | None = None) -> list[SlotObjectMatch]:
    """Hungarian-match one image's slots to its objects on IoU.

    ``slot_masks``: (K, H', W') soft masks (any resolution; resized to the instance map) or an
    (H, W) integer slot-index map. ``instance_map``: (H, W) object ids. ``classes``: object id →
    class index, for the objects to match (ids absent from it, e.g. background 0, are ignored).
    ``boxes``: object id → (x_min, y_min, x_max, y_max) in pixels of an image of ``image_size``
    = (width, height) (default: the instance map's); without it the mask's box. ``ignore``: bool
    (H, W), pixels left out of every IoU. ``num_slots``: K for an index map (default max + 1).

    Returns the matches with IoU > 0, in slot order.
    """
    instance_map = np.asarray(instance_map)
    if instance_map.ndim != 2:
        raise ValueError(f"instance_map must be (H, W), got {instance_map.shape}")
    shape = instance_map.shape
    slot_map, k = _slot_index_map(slot_masks, shape, num_slots)
    valid = np.ones(shape, dtype=bool)
    if ignore is not None:
        ignore = np.asarray(ignore)
        if ignore.shape != shape or ignore.dtype != bool:
            raise ValueError(f"ignore must be a bool map of shape {shape}")
        valid = ~ignore
    object_ids = sorted(int(i) for i in classes)
    if k == 0 or not object_ids:
        return []
    width, height = image_size if image_size is not None else (shape[1], shape[0])

    slots = slot_map[valid]
    objects = instance_map[valid]
    # intersections[k, o]: valid pixels of slot k in object o
    object_index = np.full(slots.shape, -1, dtype=np.int64)
    for column, object_id in enumerate(object_ids):
        object_index[objects == object_id] = column
    inside = object_index >= 0
    intersections = np.zeros((k, len(object_ids)), dtype=np.int64)
    np.add.at(intersections, (slots[inside], object_index[inside]), 1)
    slot_areas = np.bincount(slots, minlength=k)[:, None]
    object_areas = np.bincount(object_index[inside], minlength=len(object_ids))[None, :]
    unions = slot_areas + object_areas - intersections
    iou = np.where(unions > 0, intersections / np.maximum(unions, 1), 0.0)

    matches = []
    for slot, column in zip(*linear_sum_assignment(iou, maximize=True)):
        if iou[slot, column] <= 0:
            continue
        object_id = object_ids[column]
        box = boxes[object_id] if boxes is not None else mask_box(instance_map, object_id)
        x_min, y_min, x_max, y_max = (float(v) for v in box)
        centre = ((x_min + x_max) / 2.0 / width, (y_min + y_max) / 2.0 / height)
        matches.append(SlotObjectMatch(int(slot), object_id, int(classes[object_id]), centre,
                                       float(iou[slot, column])))
    return sorted(matches, key=lambda match: match.slot_index)


# ----------------------------------------------------------------------------- samples

@dataclass
class ProbeSamples:
    """One row per matched (slot, object): slot vector, class index, normalised box centre and
    the id of the image it comes from (the validation split groups by it)."""

    features: np.ndarray                            # (N, D) float32
    classes: np.ndarray                             # (N,) int64
    centres: np.ndarray                             # (N, 2) float32, (x, y) in [0, 1]
    image_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        self.centres = np.asarray(self.centres, dtype=np.float32).reshape(-1, 2)
        self.image_ids = [str(i) for i in self.image_ids]
        n = len(self.classes)
        if self.features.ndim != 2 or len(self.features) != n or len(self.centres) != n \
                or len(self.image_ids) != n:
            raise ValueError(f"inconsistent sample counts: features {self.features.shape}, "
                             f"classes {n}, centres {self.centres.shape}, "
                             f"image_ids {len(self.image_ids)}")

    def __len__(self) -> int:
        return len(self.classes)

    @classmethod
    def from_matches(cls, image_id: str, slots, matches: Sequence[SlotObjectMatch]
                     ) -> ProbeSamples:
        """``slots``: the image's (K, D) slot vectors."""
        slots = slots.detach().cpu().float().numpy() if isinstance(slots, torch.Tensor) \
            else np.asarray(slots, dtype=np.float32)
        rows = [m.slot_index for m in matches]
        return cls(slots[rows].reshape(len(rows), slots.shape[-1]),
                   [m.class_index for m in matches], [m.centre for m in matches],
                   [str(image_id)] * len(rows))

    @classmethod
    def concatenate(cls, parts: Sequence[ProbeSamples]) -> ProbeSamples:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no samples to concatenate")
        return cls(np.concatenate([p.features for p in parts]),
                   np.concatenate([p.classes for p in parts]),
                   np.concatenate([p.centres for p in parts]),
                   [i for p in parts for i in p.image_ids])

    def subset(self, keep: np.ndarray) -> ProbeSamples:
        keep = np.asarray(keep, dtype=bool)
        return ProbeSamples(self.features[keep], self.classes[keep], self.centres[keep],
                            [i for i, k in zip(self.image_ids, keep) if k])


def validation_split(image_ids: Sequence[str], val_fraction: float) -> np.ndarray:
    """Bool mask, True for samples whose image falls in the validation split (see module doc)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    # sample_seed gives 63 bits of SHA-256(id): / 2**63 is uniform in [0, 1).
    draw = {i: sample_seed(0, i, "property-probe-val") / 2.0**63 for i in set(image_ids)}
    return np.array([draw[i] < val_fraction for i in image_ids], dtype=bool)


# ----------------------------------------------------------------------------- probes

@dataclass
class ProbeFit:
    model: nn.Linear
    epochs_run: int                  # training epochs done (≤ max_epochs)
    best_epoch: int                  # 0 = the untrained probe was never beaten
    best_val_loss: float
    val_losses: list[float]          # index e = after epoch e (0 = before training)


def _loss(task: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets) if task == "class" else F.mse_loss(outputs, targets)


def train_linear_probe(train_x, train_y, val_x, val_y, *, task: str, num_outputs: int,
                       max_epochs: int, batch_size: int, lr: float = PAPER_LR,
                       weight_decay: float = 1e-2, patience: int = PAPER_PATIENCE,
                       seed: int = 0, device: str | torch.device = "cpu") -> ProbeFit:
    """Train one ``nn.Linear`` probe with AdamW at constant ``lr``, early stopping on the
    validation loss (``task`` "class": cross-entropy on int targets; "centre": MSE on float
    targets), and return it with the best epoch's weights."""
    if task not in ("class", "centre"):
        raise ValueError(f"task must be 'class' or 'centre', got {task!r}")
    if max_epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError("max_epochs, batch_size and patience must be >= 1")
    device = torch.device(device)
    target_dtype = torch.long if task == "class" else torch.float32
    train_x = torch.as_tensor(train_x, dtype=torch.float32, device=device)
    val_x = torch.as_tensor(val_x, dtype=torch.float32, device=device)
    train_y = torch.as_tensor(train_y, dtype=target_dtype, device=device)
    val_y = torch.as_tensor(val_y, dtype=target_dtype, device=device)
    if len(train_x) == 0 or len(val_x) == 0:
        raise ValueError(f"empty split: {len(train_x)} training, {len(val_x)} validation samples")

    generator = torch.Generator().manual_seed(int(seed))
    in_features = train_x.shape[1]
    model = nn.Linear(in_features, num_outputs)
    bound = in_features ** -0.5
    with torch.no_grad():
        nn.init.uniform_(model.weight, -bound, bound, generator=generator)
        nn.init.uniform_(model.bias, -bound, bound, generator=generator)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(_loss(task, model(val_x), val_y))

    losses = [val_loss()]
    best_loss, best_epoch = losses[0], 0
    best_state = {name: value.clone() for name, value in model.state_dict().items()}
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=generator).to(device)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            _loss(task, model(train_x[rows]), train_y[rows]).backward()
            optimizer.step()
        losses.append(val_loss())
        if losses[-1] < best_loss:
            best_loss, best_epoch = losses[-1], epoch
            best_state = {name: value.clone() for name, value in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return ProbeFit(model, epoch, best_epoch, best_loss, losses)


@torch.no_grad()
def _scores(class_probe: nn.Linear, centre_probe: nn.Linear, samples: ProbeSamples,
            device: torch.device) -> tuple[float, float]:
    x = torch.as_tensor(samples.features, device=device)
    predicted = class_probe(x).argmax(dim=1).cpu().numpy()
    accuracy = float((predicted == samples.classes).mean())
    centres = torch.as_tensor(samples.centres, device=device)
    return accuracy, float(F.mse_loss(centre_probe(x), centres))


def chance_baselines(fit_set: ProbeSamples, test: ProbeSamples) -> tuple[float, float]:
    """What a probe scores on ``test`` without looking at the slots: the accuracy of always
    answering the most frequent class of ``fit_set`` (the smallest index among ties), and the MSE
    of always answering its mean centre. A probe at or below these has read nothing from the
    slots (e.g. slots that carry no position give a centre MSE at the mean's)."""
    if len(fit_set) == 0:
        raise ValueError("no training samples for the chance baselines")
    majority = int(np.bincount(fit_set.classes).argmax())
    mean_centre = fit_set.centres.astype(np.float64).mean(axis=0)
    return (float((test.classes == majority).mean()),
            float(((test.centres.astype(np.float64) - mean_centre) ** 2).mean()))


def property_prediction(train: ProbeSamples, test: ProbeSamples, num_classes: int, *,
                        max_epochs: int, batch_size: int, val_fraction: float = 0.1,
                        lr: float = PAPER_LR, weight_decay: float = 1e-2,
                        patience: int = PAPER_PATIENCE, seed: int = 0,
                        device: str | torch.device = "cpu") -> dict:
    """Train the class and centre probes on ``train`` (minus its validation images) and score
    them on ``test``: paper Table 8's top-1 accuracy (a fraction, not %) and centre MSE.

    Returns ``{"class_accuracy", "centre_mse", "class_accuracy_majority", "centre_mse_mean"
    (glass.eval.property_probe.chance_baselines), "val_class_accuracy", "val_centre_mse",
    "num_train", "num_val", "num_test", "class_epochs_run", "class_best_epoch",
    "centre_epochs_run", "centre_best_epoch"}``.
    """
    for name, samples in (("train", train), ("test", test)):
        if len(samples) and (samples.classes.min() < 0 or samples.classes.max() >= num_classes):
            raise ValueError(f"{name} class indices must lie in [0, {num_classes})")
    if len(test) == 0:
        raise ValueError("no test samples")
    is_val = validation_split(train.image_ids, val_fraction)
    fit_set, val_set = train.subset(~is_val), train.subset(is_val)
    common = dict(max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                  weight_decay=weight_decay, patience=patience, seed=seed, device=device)
    class_fit = train_linear_probe(fit_set.features, fit_set.classes, val_set.features,
                                   val_set.classes, task="class", num_outputs=num_classes,
                                   **common)
    centre_fit = train_linear_probe(fit_set.features, fit_set.centres, val_set.features,
                                    val_set.centres, task="centre", num_outputs=2, **common)
    device = torch.device(device)
    accuracy, mse = _scores(class_fit.model, centre_fit.model, test, device)
    val_accuracy, val_mse = _scores(class_fit.model, centre_fit.model, val_set, device)
    majority, mean_centre = chance_baselines(fit_set, test)
    return {"class_accuracy": accuracy, "centre_mse": mse,
            "class_accuracy_majority": majority, "centre_mse_mean": mean_centre,
            "val_class_accuracy": val_accuracy, "val_centre_mse": val_mse,
            "num_train": len(fit_set), "num_val": len(val_set), "num_test": len(test),
            "class_epochs_run": class_fit.epochs_run, "class_best_epoch": class_fit.best_epoch,
            "centre_epochs_run": centre_fit.epochs_run,
            "centre_best_epoch": centre_fit.best_epoch}
