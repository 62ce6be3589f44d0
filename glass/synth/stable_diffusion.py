"""The ``stable_diffusion`` synthesis backend: Stable Diffusion images with attention pseudo masks.

Paper Sec. 4 / supplement (docs/paper-facts.md, "Data generation" and "Pseudo masks"): SD 2.1
generates an image from each prompt (caption + class labels) while the class cross-attention
(16×16) and the self-attention (32×32) of the conditional half are averaged over heads, layers
and steps (glass.synth.attention); the pseudo mask refines each class map with the self-attention
(glass.synth.pseudo_mask). DD's 16/32 resolutions exist only at 512 px (SD 2.1-base), so they are
checked before any model is loaded. Each sample has its own torch generator seeded with its own
seed, so its initial latents (and, up to float reduction order, its image) do not depend on the
batch it is generated in (DD seeded one generator per run: a bug to avoid).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)

from glass.errors import InvalidInput
from glass.model_reference import load_errors, load_failure, portable_model_name
from glass.devices import resolve_device, resolve_dtype
from glass.synth.attention import (
    AttentionStore,
    capture_attention,
    select_capture_layers,
    validate_attention_resolutions,
)
from glass.synth.class_tokens import class_token_groups, encode_class_texts
from glass.synth.generator import SkipSample, SynthSample, label_to_coco_id
from glass.synth.pseudo_mask import NORMALISATIONS, pseudo_mask, refine_with_self_attention

logger = logging.getLogger(__name__)

# Scheduler names accepted by ``scheduler=`` (None keeps the checkpoint's own: PNDM for SD 2.1).
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    # latents are not bounded to [-1, 1]: SD's configs say clip_sample false, and one that
    # omits it (the toy SD's) would get DDIM's pixel-space default True
    "ddim": (DDIMScheduler, {"clip_sample": False}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}


class StableDiffusionGenerator:
    """Generator protocol backend on a diffusers StableDiffusionPipeline checkpoint.

    ``model``: hub id (must already be cached when offline) or local folder. Resolutions are grid
    sides: ``cross_attention_res``/``self_attention_res`` must be latent/2^k with latent =
    image_size / vae_scale_factor (16/32 at 512 px for SD 2.1-base). ``start_step``/``end_step``
    index the pipeline's denoising loop (end excluded, None = to the end); PNDM (SD 2.1's own
    scheduler) runs steps + 1 iterations, DDIM and DPM++ run ``steps``. DD used 100 steps,
    guidance 7.5 and fp16 (docs/paper-facts.md); tau/low/high are GLASS's refinement settings.
    """

    name = "stable_diffusion"

    def __init__(self, model: str, *, image_size: int = 512, steps: int = 50,
                 guidance_scale: float = 7.5, scheduler: str | None = None,
                 negative_prompt: str = "", dtype: str = "float16", device: str = "auto",
                 cross_attention_res: int = 16, self_attention_res: int = 32,
                 vae_scale_factor: int = 8, start_step: int = 0, end_step: int | None = None,
                 tau: int = 4, low: float = 0.4, high: float = 0.6,
                 normalisation: str = "minmax", store_attention: bool = False) -> None:
        # Everything that can be checked without the model comes first: a wrong resolution must
        # not cost a multi-GB model load.
        self.latent_size = validate_attention_resolutions(
            image_size, vae_scale_factor, cross_attention_res, self_attention_res)
        if steps < 1:
            raise InvalidInput(f"steps must be >= 1, got {steps}")
        if start_step < 0 or (end_step is not None and end_step <= start_step):
            raise InvalidInput(f"empty capture window: start_step={start_step}, end_step={end_step}")
        if scheduler is not None and scheduler not in SCHEDULERS:
            raise InvalidInput(f"unknown scheduler {scheduler!r}; expected one of "
                             f"{sorted(SCHEDULERS)} or None (the checkpoint's own)")
        if tau < 0 or not 0.0 <= low <= high <= 1.0:
            raise InvalidInput(f"need tau >= 0 and 0 <= low <= high <= 1, got tau={tau}, "
                             f"low={low}, high={high}")
        if normalisation not in NORMALISATIONS:
            raise InvalidInput(f"unknown normalisation {normalisation!r}; expected one of "
                               f"{', '.join(NORMALISATIONS)}")
        self.model_id = str(model)
        self.model_name = portable_model_name(self.model_id)     # what the samples record
        self.image_size = image_size
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.cross_res, self.self_res = cross_attention_res, self_attention_res
        self.start_step, self.end_step = start_step, end_step
        self.tau, self.low, self.high = tau, low, high
        self.normalisation = normalisation
        self.store_attention = store_attention
        self.device = torch.device(resolve_device(device))
        self.dtype = resolve_dtype(dtype, self.device, what="Stable Diffusion")

        self.pipeline = load_stable_diffusion(self.model_id, self.dtype).to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        if scheduler is not None:
            scheduler_class, overrides = SCHEDULERS[scheduler]
            self.pipeline.scheduler = scheduler_class.from_config(self.pipeline.scheduler.config,
                                                                  **overrides)
        if self.pipeline.vae_scale_factor != vae_scale_factor:
            raise InvalidInput(f"{self.model_id} has VAE scale factor "
                             f"{self.pipeline.vae_scale_factor}, not the configured "
                             f"{vae_scale_factor}: set vae_scale_factor accordingly")
        self.layers = select_capture_layers(self.pipeline.unet, self.latent_size,
                                            self.cross_res, self.self_res)
        self.settings = {
            "steps": steps,
            "guidance_scale": guidance_scale,
            "scheduler": type(self.pipeline.scheduler).__name__,
            "negative_prompt": negative_prompt,
            "image_size": image_size,
            "dtype": str(self.dtype).removeprefix("torch."),
            "resolutions": {
                "latent": self.latent_size, "cross": self.cross_res, "self": self.self_res,
                "cross_layers": [layer.name for layer in self.layers if layer.kind == "cross"],
                "self_layers": [layer.name for layer in self.layers if layer.kind == "self"],
            },
            "tau": tau, "low": low, "high": high, "normalisation": normalisation,
            "window": {"start_step": start_step, "end_step": end_step},
        }

    def generate(self, record: dict, seed: int) -> SynthSample:
        result = self.generate_batch([record], [seed])[0]
        if isinstance(result, SkipSample):
            raise result
        return result

    def generate_batch(self, records: list[dict],
                       seeds: list[int]) -> list[SynthSample | SkipSample]:
        """One result per record, in order: a SynthSample, or a SkipSample (with its reason) for
        a record whose class text does not fit the tokenizer."""
        if len(records) != len(seeds):
            raise InvalidInput(f"{len(records)} records but {len(seeds)} seeds")
        results: list[SynthSample | SkipSample | None] = [None] * len(records)
        runnable: list[int] = []
        groups: list[list[list[int]]] = []
        for index, record in enumerate(records):
            try:
                groups.append(class_token_groups(self.pipeline.tokenizer, list(record["classes"])))
                runnable.append(index)
            except ValueError as error:
                results[index] = SkipSample(f"{record['key']}: {error}")
        if runnable:
            samples = self._generate([records[i] for i in runnable], [seeds[i] for i in runnable],
                                     groups)
            for index, sample in zip(runnable, samples, strict=True):
                results[index] = sample
        return results

    def _generate(self, records: list[dict], seeds: list[int],
                  groups: list[list[list[int]]]) -> list[SynthSample]:
        with torch.inference_mode():
            store = None
            if any(groups):
                class_embeddings = encode_class_texts(
                    self.pipeline, [list(record["classes"]) for record in records], self.device)
                store = AttentionStore(len(records), self.cross_res, self.self_res,
                                       class_embeddings, groups, start_step=self.start_step,
                                       end_step=self.end_step)
            images = self._run_pipeline([record["prompt"] for record in records], seeds, store)
            return [self._sample(record, seed, image, store, index)
                    for index, (record, seed, image) in enumerate(zip(records, seeds, images))]

    def _run_pipeline(self, prompts: list[str], seeds: list[int],
                      store: AttentionStore | None) -> np.ndarray:
        """(B, H, W, 3) uint8 images; attention goes to ``store`` when there is one."""
        # One CPU generator per sample: the initial latents of a sample depend only on its seed
        # (not on its batch position), and are the same on CPU and GPU.
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        arguments = {
            "prompt": prompts, "negative_prompt": [self.negative_prompt] * len(prompts),
            "height": self.image_size, "width": self.image_size,
            "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale,
            "generator": generators, "output_type": "np",
        }
        if store is None:
            images = self.pipeline(**arguments).images
        else:
            with capture_attention(self.pipeline.unet, store, self.layers):
                images = self.pipeline(**arguments, callback_on_step_end=store.on_step_end).images
        # as diffusers' numpy_to_pil does for PIL output
        return (images * 255).round().astype(np.uint8)

    def _sample(self, record: dict, seed: int, image: np.ndarray, store: AttentionStore | None,
                index: int) -> SynthSample:
        classes = list(record["classes"])
        mask = attention = None
        settings = copy.deepcopy(self.settings)     # each sample owns its metadata
        if classes:
            cross_maps, self_attn = store.cross_maps(index), store.self_attention(index)
            mask = pseudo_mask(cross_maps.numpy(), self_attn.numpy(), self.image_size,
                               tau=self.tau, low=self.low, high=self.high,
                               normalisation=self.normalisation)
            if self.store_attention:
                refined = refine_with_self_attention(cross_maps, self_attn, self.tau)
                attention = refined.numpy().astype(np.float16)
            captured = store.cross_updates // sum(layer.kind == "cross" for layer in self.layers)
            settings["window"]["captured_steps"] = captured
        return SynthSample(
            key=record["key"], image=image, mask=mask, classes=classes, attention=attention,
            metadata={"caption": record.get("caption"), "prompt": record.get("prompt"),
                      "classes": classes, "label_to_coco_id": label_to_coco_id(classes),
                      "seed": seed, "generator": self.name,
                      "model": self.model_name,
                      "settings": settings})


def load_stable_diffusion(model_id: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """Load the pipeline (no safety checker), turning 'not available here' into an actionable
    error; there is no fallback model."""
    try:
        return StableDiffusionPipeline.from_pretrained(
            model_id, dtype=dtype, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    except load_errors() as error:
        raise load_failure("Stable Diffusion (synthesis)", model_id, error) from error
