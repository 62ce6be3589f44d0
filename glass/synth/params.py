"""The ``synth`` params section (defaults: the paper configuration, ``params.yaml``).

Synthesis settings split in two: those that decide the shards' bytes (``GeneratorSettings``,
built in every worker and fingerprinted) and those that only change the speed (``batch_size``,
``num_workers``), which never enter a fingerprint, so that changing them neither redoes
finished shards nor changes the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from glass.data.toy_world import ToyWorldConfig
from glass.devices import DtypeName, check_device_name
from glass.model_reference import portable_model_name
from glass.params import Params, nested, param
from glass.synth.attention import validate_attention_resolutions


@dataclass(frozen=True)
class StableDiffusionParams(Params):
    """``synth.stable_diffusion``: Dataset Diffusion's generation and GLASS's refinement
    (supplement; paper Sec. 4)."""

    image_size: int = param(512, min=8)      # DD's attention resolutions exist at 512 px
    steps: int = param(100, min=1)           # Dataset Diffusion
    guidance_scale: float = param(7.5, min=0.0)
    scheduler: Literal["ddim", "pndm", "dpm++", "euler"] | None = None   # null: the checkpoint's
    negative_prompt: str = "low quality, blurry, distorted, deformed, watermark, text"
    dtype: DtypeName = "float16"
    device: str = "auto"
    vae_scale_factor: int = param(8, min=1)
    cross_attention_res: int = param(16, min=1)   # 1/4 of the 64x64 latent (DD)
    self_attention_res: int = param(32, min=1)    # 1/2 of the latent
    start_step: int = param(0, min=0)             # timestep window of the running sums
    end_step: int | None = param(None, min=1)
    tau: int = param(4, min=0)                    # refined = A_self^tau · a_c
    low: float = param(0.4, min=0.0, max=1.0)     # objectness < low → background
    high: float = param(0.6, min=0.0, max=1.0)    # objectness >= high → class; between: 255
    # "minmax": per class (the paper's); "mass": objectness from the summed class maps, class by
    # each map's share of its attention mass (ours; glass.synth.pseudo_mask)
    normalisation: Literal["minmax", "mass"] = "minmax"

    def validate(self) -> None:
        problem = check_device_name(self.device)
        if problem:
            raise self.invalid("device", problem)
        if self.low > self.high:
            raise self.invalid("low", f"({self.low}) must be <= high ({self.high})")
        if self.end_step is not None and self.end_step <= self.start_step:
            raise self.invalid("end_step", f"({self.end_step}) must be > start_step "
                                           f"({self.start_step}): the capture window is empty")
        try:
            validate_attention_resolutions(self.image_size, self.vae_scale_factor,
                                           self.cross_attention_res, self.self_attention_res)
        except ValueError as error:
            raise self.invalid("cross_attention_res", str(error)) from None


@dataclass(frozen=True)
class SynthToyParams(Params):
    """``synth.toy``: the toy generator's unsure band and its world (keys beside it)."""

    unsure_band: int = param(1, min=0)
    world: ToyWorldConfig = nested(ToyWorldConfig, flatten=True)


@dataclass(frozen=True)
class Sam2Params(Params):
    """``synth.sam2``: SAM 2's automatic mask generator (sam2's own defaults) and our labelling
    rule; used only with ``mask_source: sam2`` (paper Table 6c)."""

    device: str = "auto"
    points_per_side: int = param(32, min=1)
    points_per_batch: int = param(64, min=1)
    pred_iou_thresh: float = param(0.8, min=0.0, max=1.0)
    stability_score_thresh: float = param(0.95, min=0.0, max=1.0)
    box_nms_thresh: float = param(0.7, min=0.0, max=1.0)
    crop_n_layers: int = param(0, min=0)
    min_mask_region_area: int = param(0, min=0)
    min_class_overlap: float = param(0.5, min=0.0, max=1.0)

    def validate(self) -> None:
        problem = check_device_name(self.device)
        if problem:
            raise self.invalid("device", problem)


@dataclass(frozen=True)
class JudgeParams(Params):
    """``synth.judge``: the segmenter that scores the shards' pseudo masks independently of the
    attention path (glass.synth.mask_quality; the judge_masks stage). ``model`` null: no judge
    (the paper configuration has none for real-world images)."""

    model: str | None = None                          # a ToySegmenter folder (models/toy/judge)
    min_presence: float = param(0.004, gt=0.0, max=1.0)   # image share for "class present"
    grid_samples: int = param(8, min=1)


@dataclass(frozen=True)
class GeneratorSettings(Params):
    """Everything a synthesis worker needs to build its generator, and that decides the bytes
    of what it generates: the backend's settings and the models (``from_pretrained`` refs)."""

    backend: Literal["stable_diffusion", "toy"] = "stable_diffusion"
    mask_source: Literal["attention", "sam2"] = "attention"
    store_attention: bool = False
    stable_diffusion: StableDiffusionParams = nested(StableDiffusionParams)
    toy: SynthToyParams = nested(SynthToyParams)
    sam2: Sam2Params = nested(Sam2Params)
    models: dict[str, str] = field(default_factory=dict)

    def needed_models(self) -> list[str]:
        roles = ["stable_diffusion"] if self.backend == "stable_diffusion" else []
        return roles + (["sam2"] if self.mask_source == "sam2" else [])

    def relevant(self) -> dict:
        """The settings that decide the bytes: only the chosen backend's and mask source's. Models
        by their portable names (no machine path); their weights enter through
        glass.model_reference.model_contents in the run's fingerprint."""
        models = {role: portable_model_name(ref) for role, ref in self.models.items()}
        out = {"backend": self.backend, "mask_source": self.mask_source,
               "store_attention": self.store_attention, "models": models,
               self.backend: getattr(self, self.backend).as_dict()}
        if self.mask_source == "sam2":
            out["sam2"] = self.sam2.as_dict()
        return out


@dataclass(frozen=True)
class SynthParams(Params):
    """``synth``: prompts → shards of generated images with pseudo masks."""

    backend: Literal["stable_diffusion", "toy"] = "stable_diffusion"
    mask_source: Literal["attention", "sam2"] = "attention"
    no_class_prompts: Literal["skip", "generate_without_mask"] = "skip"
    images_per_prompt: int = param(1, min=1)
    max_samples: int | None = param(100_000, min=1)   # paper Sec. 5: 100K generated images
    shard_size: int = param(1000, min=1)              # samples per WebDataset shard
    batch_size: int = param(8, min=1)                 # speed only
    num_workers: int | None = param(None, min=0)      # speed only; null = one per GPU
    ray_connect_timeout_s: float = param(60.0, gt=0.0)  # RAY_ADDRESS must answer within this
    jpeg_quality: int = param(95, min=1, max=100)
    store_attention: bool = False
    stable_diffusion: StableDiffusionParams = nested(StableDiffusionParams)
    toy: SynthToyParams = nested(SynthToyParams)
    sam2: Sam2Params = nested(Sam2Params)
    judge: JudgeParams = nested(JudgeParams)          # scores the shards; never changes them

    def generator_settings(self, models: dict[str, str]) -> GeneratorSettings:
        return GeneratorSettings(backend=self.backend, mask_source=self.mask_source,
                                 store_attention=self.store_attention,
                                 stable_diffusion=self.stable_diffusion, toy=self.toy,
                                 sam2=self.sam2, models=dict(models))

    def needed_models(self) -> list[str]:
        return self.generator_settings({}).needed_models()

