"""The ``evaluate`` params section (defaults: the paper configuration, ``params.yaml``; the metric
conventions default to the official GLASS evaluation, docs/paper-facts.md "Evaluation").

Two stages read it. ``predict`` runs the trained model over the evaluation images (the expensive
part) and reads everything but ``evaluate.metrics``; ``evaluate`` measures the stored predictions
against the ground truth and reads ``evaluate.metrics`` alone, so that a metric convention
(``include_background``, ``empty_fg_ari``, the mask source, COCO crowd and overlap handling, VOC
boundaries) reruns in seconds.

``evaluate.datasets`` maps a name to where a dataset's images are (a reader spec chosen by its
``kind``: coco, toy, voc, clevrtex, objects365); ``object_discovery``, ``generation``,
``property_prediction``, ``composition`` and ``metrics.ground_truth`` refer to those names, and
every reference is checked when the section is read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from glass.data.images import DEFAULT_MAX_IMAGE_PIXELS
from glass.data.params import DataParams
from glass.devices import check_device_name
from glass.eval.datasets.sample import Preprocess
from glass.eval.discovery import DiscoveryConventions
from glass.params import Params, ParamsError, describe_value, nested, param

CrowdMode = Literal["skip", "ignore", "background", "instance"]
OverlapMode = Literal["later_wins", "ignore", "smaller_wins"]


@dataclass(frozen=True)
class DatasetSpec(Params):
    """An ``evaluate.datasets`` entry: its ``kind`` picks the reader and its keys."""

    KINDS: ClassVar[dict[str, type["DatasetSpec"]]] = {}
    KIND: ClassVar[str] = ""

    kind: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.KIND:
            DatasetSpec.KINDS[cls.KIND] = cls

    @classmethod
    def from_params(cls, value: Any, key: str) -> "DatasetSpec":
        if cls is not DatasetSpec:
            return cls.parse(value, key)
        if not isinstance(value, dict):
            raise ParamsError(key, f"must be a mapping with a kind ({', '.join(cls.KINDS)}), "
                                   f"got {describe_value(value)}")
        kind = value.get("kind")
        if kind not in cls.KINDS:
            raise ParamsError(f"{key}.kind", f"must be one of {', '.join(cls.KINDS)}, got "
                                             f"{describe_value(kind)}")
        return cls.KINDS[kind].parse(value, key)

    def validate(self) -> None:
        if self.kind != self.KIND:
            raise self.invalid("kind", f"must be {self.KIND!r} for {type(self).__name__}")

    def reader_params(self, data: DataParams, prepared: Path, name: str = "") -> dict[str, Any]:
        """Keyword arguments of the reader (``glass.eval.datasets.load_eval_dataset``)."""
        values = {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)
                  if spec.name != "kind"}
        return {key: value for key, value in values.items() if value is not None
                or key in self.NULL_ALLOWED}

    def own_dataset(self, data: DataParams, name: str) -> None:
        """A null root (split, list) means the configuration's own dataset, ``data.<kind>``:
        only when ``data.dataset`` is this kind (the evaluate stage declares only that section
        as a DVC dependency, so another section's paths must be given here)."""
        if data.dataset != self.KIND:
            raise ParamsError(f"evaluate.datasets.{name}.root",
                              f"is null, which means the configuration's own {self.KIND} "
                              f"dataset, but data.dataset is {data.dataset}: give the root "
                              "(and split or list) explicitly")

    NULL_ALLOWED: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class CocoSpec(DatasetSpec):
    KIND: ClassVar[str] = "coco"

    kind: str = "coco"
    root: str | None = None                  # null: data.coco.root
    split: str | None = None                 # null: data.coco.eval_split
    images_dir: str | None = param(None, optional=True)
    annotation_file: str | None = param(None, optional=True)
    limit: int | None = param(None, min=0, optional=True)

    def reader_params(self, data: DataParams, prepared: Path, name: str = "") -> dict[str, Any]:
        params = super().reader_params(data, prepared)
        if self.root is None or self.split is None:
            self.own_dataset(data, name)
        params.setdefault("root", data.coco.root)
        params.setdefault("split", data.coco.eval_split)
        return params


@dataclass(frozen=True)
class ToySpec(DatasetSpec):
    KIND: ClassVar[str] = "toy"

    kind: str = "toy"
    root: str | None = None                  # null: the prepare stage's toy world
    split: str = "val"
    limit: int | None = param(None, min=0, optional=True)

    def reader_params(self, data: DataParams, prepared: Path, name: str = "") -> dict[str, Any]:
        params = super().reader_params(data, prepared)
        if self.root is None:
            self.own_dataset(data, name)
        params.setdefault("root", str(prepared / "toy"))
        return params


@dataclass(frozen=True)
class VocSpec(DatasetSpec):
    KIND: ClassVar[str] = "voc"

    kind: str = "voc"
    root: str | None = None                  # null: data.voc.root
    image_list: str | None = None            # null: data.voc.eval_list
    limit: int | None = param(None, min=0, optional=True)

    def reader_params(self, data: DataParams, prepared: Path, name: str = "") -> dict[str, Any]:
        params = super().reader_params(data, prepared)
        if self.root is None or self.image_list is None:
            self.own_dataset(data, name)
        params.setdefault("root", data.voc.root)
        params.setdefault("image_list", data.voc.eval_list)
        return params


@dataclass(frozen=True)
class ClevrTexSpec(DatasetSpec):
    KIND: ClassVar[str] = "clevrtex"

    kind: str = "clevrtex"
    root: str = "/datasets/clevrtex"
    variant: Literal["full", "pbg", "vbg", "grassbg", "camo", "outd"] = "full"
    split: Literal["test", "val", "train"] = "test"
    center_crop_fraction: float | None = param(None, gt=0.0, max=1.0, optional=True)
    limit: int | None = param(None, min=0, optional=True)


@dataclass(frozen=True)
class Objects365Spec(DatasetSpec):
    KIND: ClassVar[str] = "objects365"

    kind: str = "objects365"
    root: str | None = "/datasets/objects365"
    cache_dir: str | None = "scratch/paper/objects365_sam2"
    limit: int | None = param(5000, min=0)
    sam2_model: str | None = param(None, optional=True)   # null: the models stage's sam2
    annotation_file: str | None = param(None, optional=True)
    images_dir: str | None = param(None, optional=True)
    on_missing_image: Literal["raise", "skip"] = param("raise", optional=True)
    device: str = param("auto", optional=True)
    box_batch_size: int = param(64, min=1, optional=True)

    NULL_ALLOWED: ClassVar[tuple[str, ...]] = ("cache_dir",)

    def validate(self) -> None:
        super().validate()
        problem = check_device_name(self.device)
        if problem:
            raise self.invalid("device", problem)


@dataclass(frozen=True)
class GroundTruthSpec(Params):
    """``evaluate.metrics.ground_truth.<dataset>``: how its ground truth is built (defaults:
    the official GLASS evaluation). Each key applies to some kinds only."""

    APPLIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "crowd": ("coco", "toy", "objects365"), "overlap": ("coco", "toy", "objects365"),
        "voc_boundary": ("voc",), "clip_masks_to_boxes": ("objects365",)}

    crowd: CrowdMode | None = param(None, optional=True)              # null: skip (official)
    overlap: OverlapMode | None = param(None, optional=True)          # null: later_wins
    voc_boundary: Literal["ignore", "background"] | None = param(None, optional=True)
    clip_masks_to_boxes: bool | None = param(None, optional=True)

    def reader_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.APPLIES
                if getattr(self, name) is not None}


@dataclass(frozen=True)
class ProbeParams(Params):
    """``evaluate.metrics.probes``: the linear probes' training (supplement Sec. 2.1)."""

    max_epochs: int = param(10, min=1)       # supplement: 10 epochs on COCO (50 on VOC)
    batch_size: int = param(64, min=1)
    val_fraction: float = param(0.1, gt=0.0, max=0.9)
    seed: int = param(0, min=0)              # probe initialisation and validation split


def _paper_ground_truth() -> dict[str, GroundTruthSpec]:
    return {"coco_val": GroundTruthSpec(crowd="skip", overlap="later_wins"),
            "coco_train": GroundTruthSpec(crowd="skip", overlap="later_wins"),
            "voc_val": GroundTruthSpec(voc_boundary="ignore")}


@dataclass(frozen=True)
class MetricsParams(Params):
    """``evaluate.metrics``: what the ``evaluate`` stage computes from the stored predictions."""

    conventions: DiscoveryConventions = nested(DiscoveryConventions)
    ground_truth: dict[str, GroundTruthSpec] = dataclasses.field(
        default_factory=_paper_ground_truth)
    probes: ProbeParams = nested(ProbeParams)


@dataclass(frozen=True)
class GenerationParams(Params):
    """``evaluate.generation`` (Table 7): reconstruct images from their slots."""

    dataset: str | None = "coco_val"
    images: int = param(512, min=1)          # paper Sec. 5.2: FID on 512 images
    # the official evaluation (docs/paper-facts.md, "Official checkpoints"): DPM-Solver++, 250
    # steps, classifier-free guidance 1.3 against the empty prompt
    num_inference_steps: int = param(250, min=1)
    sampler: Literal["ddim", "dpm++"] = param("dpm++", optional=True)
    guidance_scale: float = param(1.3, min=1.0, optional=True)
    fid: bool = True
    lpips: bool = True
    dinov2_frechet: bool = True
    enabled: bool = param(True, optional=True)
    grid_rows: int = param(4, min=1, optional=True)


@dataclass(frozen=True)
class PropertyPredictionParams(Params):
    """``evaluate.property_prediction`` (Table 8, supplement Sec. 2.1): the datasets whose slots
    the ``predict`` stage stores for the linear probes (trained by ``evaluate``)."""

    train_dataset: str | None = "coco_train"
    test_dataset: str | None = "coco_val"
    train_limit: int | None = param(None, min=1)
    test_limit: int | None = param(None, min=1)
    enabled: bool = param(True, optional=True)


@dataclass(frozen=True)
class CompositionParams(Params):
    """``evaluate.composition`` (Fig. 6): remove a slot, add one from another image."""

    dataset: str | None = "coco_val"
    images: int = param(8, min=2)
    # the official composition: DPM-Solver++, 75 steps, guidance 3
    num_inference_steps: int = param(75, min=1)
    sampler: Literal["ddim", "dpm++"] = param("dpm++", optional=True)
    guidance_scale: float = param(3.0, min=1.0, optional=True)
    mask_source: Literal["slot_attention", "mlp_decoder"] = param("slot_attention",
                                                                  optional=True)
    enabled: bool = param(True, optional=True)


def _paper_datasets() -> dict[str, DatasetSpec]:
    return {"coco_val": CocoSpec(), "coco_train": CocoSpec(split="train2017"),
            "voc_val": VocSpec(root="/datasets/VOCdevkit/VOC2012",
                               image_list="ImageSets/Segmentation/val.txt"),
            "clevrtex": ClevrTexSpec(), "objects365": Objects365Spec()}


@dataclass(frozen=True)
class EvaluateParams(Params):
    """``evaluate``: every task of the evaluate stage."""

    # the trained folder to evaluate: this configuration's own, or any other GlassModel folder,
    # e.g. a converted official checkpoint (python -m glass.convert official; README)
    model: str = "data/paper/train/phase2/model"
    seed: int = param(0, min=0)              # slot initialisation and diffusion noise, per key
    device: str = "cuda"
    preprocess: Preprocess = nested(Preprocess)
    limit: int | None = param(None, min=1)   # at most this many images per dataset
    # images declaring more pixels are skipped (with the reason) before they are decoded
    max_image_pixels: int = param(DEFAULT_MAX_IMAGE_PIXELS, min=1)
    datasets: dict[str, DatasetSpec] = dataclasses.field(default_factory=_paper_datasets)
    object_discovery: tuple[str, ...] = ("coco_val", "voc_val", "clevrtex", "objects365")
    generation: GenerationParams = nested(GenerationParams)
    property_prediction: PropertyPredictionParams = nested(PropertyPredictionParams)
    composition: CompositionParams = nested(CompositionParams)
    metrics: MetricsParams = nested(MetricsParams)

    def validate(self) -> None:
        problem = check_device_name(self.device)
        if problem:
            raise self.invalid("device", problem)
        for field_name, name in self.dataset_references():
            if name not in self.datasets:
                raise self.invalid(field_name, f"names dataset {name!r}, which is not defined "
                                               f"under evaluate.datasets (defined: "
                                               f"{', '.join(sorted(self.datasets)) or 'none'})")
        for name, truth in self.metrics.ground_truth.items():
            field_name = f"metrics.ground_truth.{name}"
            if name not in self.datasets:
                raise self.invalid(field_name, "is not a dataset defined under evaluate.datasets")
            kind = self.datasets[name].kind
            for key, kinds in GroundTruthSpec.APPLIES.items():
                if getattr(truth, key) is not None and kind not in kinds:
                    raise self.invalid(f"{field_name}.{key}", f"does not apply to a {kind} "
                                                              f"dataset (only to {', '.join(kinds)})")

    def dataset_references(self) -> list[tuple[str, str]]:
        """(field, dataset name) of every task that is switched on."""
        refs = [(f"object_discovery[{i}]", name) for i, name in enumerate(self.object_discovery)]
        tasks = (("generation", self.generation, ("dataset",)),
                 ("composition", self.composition, ("dataset",)),
                 ("property_prediction", self.property_prediction,
                  ("train_dataset", "test_dataset")))
        for task, section, keys in tasks:
            if section.enabled:
                refs += [(f"{task}.{key}", getattr(section, key)) for key in keys
                         if getattr(section, key)]
        return refs

    def used_datasets(self) -> set[str]:
        return {name for _, name in self.dataset_references()}

    def predicted_datasets(self) -> list[str]:
        """The datasets whose slot masks ``predict`` stores: object discovery and the probes'."""
        names = list(self.object_discovery)
        probe = self.property_prediction
        if probe.enabled:
            names += [name for name in (probe.train_dataset, probe.test_dataset) if name]
        return sorted(dict.fromkeys(names))

    def limit_for(self, name: str) -> int | None:
        """How many readable images of ``name`` are predicted: the probes' limits for their
        datasets (the largest, when a dataset serves several tasks), else ``limit``."""
        probe = self.property_prediction
        limits = []
        if name in self.object_discovery:
            limits.append(self.limit)
        if probe.enabled and name == probe.train_dataset:
            limits.append(probe.train_limit)
        if probe.enabled and name == probe.test_dataset:
            limits.append(probe.test_limit)
        if None in limits or not limits:
            return None
        return max(limits)

    def predict_params(self) -> dict[str, Any]:
        """What decides the stored predictions (everything but ``metrics``)."""
        # the model is not a path here: the predictions fingerprint its folder's files
        return {key: value for key, value in self.as_dict().items()
                if key not in ("metrics", "model")}

    def check_against(self, data: DataParams) -> None:
        """Cross-section check: a dataset with a null root (split, list) must be the
        configuration's own (``data.dataset``); ParamsError naming the key otherwise."""
        for name in sorted(self.used_datasets()):
            spec = self.datasets[name]
            inherits = any(getattr(spec, key, "") is None for key in ("root", "split", "image_list"))
            if inherits and spec.kind in ("coco", "voc", "toy"):
                spec.own_dataset(data, name)
