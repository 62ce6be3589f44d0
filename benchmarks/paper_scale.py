"""Paper-scale costs of GLASS, measured in one run on random-weight models built from configs.

Nothing is downloaded: every network is constructed from a config written below, with random
weights — Stable Diffusion 2.1-base's UNet, VAE and OpenCLIP-H text encoder, DINOv2 ViT-B/14,
and GLASS's slot attention, MLP decoder and diffusion decoder (the same SD 2.1 UNet at 256 px).
Random weights cost exactly what trained ones do, so times, memory and bytes are the real
model's (the tokenizer is the project's tiny CLIP BPE: prompts are padded to 77 tokens either
way, so the text encoder's cost does not depend on it).

What is measured:

1. synthesis: seconds per image of the ``stable_diffusion`` backend's pipeline call (512 px,
   guidance 7.5 with the params' negative prompt, SD 2.1's own PNDM scheduler), plain and with
   the cross/self-attention capture of ``glass.synth.attention`` (16x16 cross, 32x32 self, as
   the synthesis stage does it: class texts encoded, store allocated, processors installed, all
   inside the timing), and their ratio (median over ``--synth-repeats``);
2. capture memory: bytes HELD by our capture (the store's float32 running sums, cached class
   keys and class embeddings) against the bytes a naive capture would hold — every attention
   layer's probabilities, all heads, both guidance halves, every UNet call (Prompt-to-Prompt's
   AttentionStore without its resolution filter, as ``benchmarks/capture_memory.py`` runs it on
   a tiny model). The naive figure is counted from the UNet's layer shapes and the number of
   UNet calls, not allocated: at 512 px it is gigabytes per step. Per-layer transients of our
   capture (a few (B, n, n) float32 maps while one layer records) are not held and not counted;
3. training: phase-1 (slot attention + MLP decoder train, UNet frozen with gradients flowing
   through it) and phase-2 (UNet trains, the rest at 1e-8) steps per second and peak memory at
   ``--batch`` and ``--precision``, with the trainer's own ``parameter_groups``, Adam and
   gradient clipping, on random images and block pseudo masks (all three loss terms). Peak
   memory on CUDA is ``torch.cuda.max_memory_allocated`` (reset before each phase); on CPU it
   is the process's peak resident set (VmHWM of /proc/self/status, reset before each phase by
   writing 5 to /proc/self/clear_refs — so it includes the weights already resident; where that
   reset is not possible, ``ru_maxrss``, the lifetime peak, and the JSON says so);
4. checkpoint bytes: a checkpoint of the trainable parameters + Adam state (exp_avg, exp_avg_sq,
   step) for each phase against a full state dict of every GLASS module, frozen encoder and VAE
   included. Counted by summing tensor ``nbytes`` (the payload a serialiser writes, without its
   few-KB framing); nothing is serialised, since at paper scale that would copy gigabytes.

Timing starts after ``--warmup`` untimed calls (default 1 on CUDA, 0 on CPU, where paper-scale
calls take minutes and the first-call overhead is small beside them).

    # on a GPU (the paper's training batch, fp16 autocast):
    python benchmarks/paper_scale.py --device cuda --batch 32 --precision fp16
    # on a CPU, the smallest paper-scale run (minutes, ~16 GB RAM for phase 2):
    python benchmarks/paper_scale.py --scale paper --batch 1 --train-steps 1 --synth-steps 1
    # seconds, for tests: tiny configs, one step everywhere
    python benchmarks/paper_scale.py --smoke

Progress goes to stderr; stdout gets a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import (AutoencoderKL, DDPMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, Dinov2Config, Dinov2Model

from glass.model.diffusion_decoder import DiffusionDecoder
from glass.model.encoder import FrozenDinov2Encoder
from glass.model.glass import GlassModel, LossWeights
from glass.model.mlp_decoder import MLPDecoder
from glass.model.slot_attention import SlotAttention
from glass.synth.attention import (CROSS, AttentionStore, capture_attention,
                                   select_capture_layers, unet_attention_layers)
from glass.synth.class_tokens import class_token_groups, encode_class_texts
from glass.tiny.stable_diffusion import build_tiny_clip_tokenizer, sd21_base_scheduler_config
from glass.train.params import ModelParams, TrainParams
from glass.train.trainer import parameter_groups

STARTED = time.perf_counter()

# (prompt, classes) as the synthesis stage builds them: caption; class labels.
PROMPTS = [
    ("A bunch of people at the ocean about to surf.; person bird surfboard",
     ["person", "bird", "surfboard"]),
    ("A hot dog and a teddy bear on a table.; hot dog teddy bear dining table",
     ["hot dog", "teddy bear", "dining table"]),
    ("A dog sleeping on a couch.; dog couch", ["dog", "couch"]),
]
NEGATIVE_PROMPT = "low quality, blurry, distorted, deformed, watermark, text"   # params.yaml
GUIDANCE_SCALE = 7.5                                                           # params.yaml
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# Configurations


@dataclass(frozen=True)
class Scale:
    """Every size the benchmark builds: model configs and image sizes."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]                # CLIPTextConfig kwargs (token ids come from the tokenizer)
    dinov2: dict[str, Any]              # Dinov2Config kwargs
    model: ModelParams                  # slot attention / MLP decoder sizes, image sizes
    synth_image_size: int
    cross_res: int                      # captured cross-attention grid side
    self_res: int                       # captured self-attention grid side
    mask_size: int                      # pseudo-mask side (train.data.mask_size)


def sd21_unet_config(channels: list[int], heads: list[int], layers: int, cross_dim: int,
                     sample_size: int, groups: int = 32) -> dict[str, Any]:
    """SD 2.1-base's UNet layout: three cross-attention levels and a plain bottom level."""
    return {
        "sample_size": sample_size, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "block_out_channels": channels, "layers_per_block": layers,
        "cross_attention_dim": cross_dim,
        # diffusers' misnomer: for this UNet the number of heads per level
        "attention_head_dim": heads,
        "use_linear_projection": True, "norm_num_groups": groups, "act_fn": "silu",
        "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1,
    }


def sd_vae_config(channels: list[int], layers: int, sample_size: int,
                  groups: int = 32) -> dict[str, Any]:
    return {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels, "layers_per_block": layers, "act_fn": "silu",
        "norm_num_groups": groups, "sample_size": sample_size, "scaling_factor": 0.18215,
    }


def paper_scale() -> Scale:
    """SD 2.1-base (512 px synthesis, DD's 16/32 capture), DINOv2 ViT-B/14 at 448 px, the SD 2.1
    UNet as decoder at 256 px, and the paper's slot sizes (``ModelParams`` defaults)."""
    return Scale(
        name="paper",
        unet=sd21_unet_config([320, 640, 1280, 1280], [5, 10, 20, 20], layers=2, cross_dim=1024,
                              sample_size=64),
        vae=sd_vae_config([128, 256, 512, 512], layers=2, sample_size=768),
        text={"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096,
              "num_hidden_layers": 23, "num_attention_heads": 16, "projection_dim": 512,
              "max_position_embeddings": 77, "hidden_act": "gelu"},
        dinov2={"image_size": 518, "patch_size": 14, "hidden_size": 768,
                "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
                "layerscale_value": 1.0, "layer_norm_eps": 1e-6, "use_swiglu_ffn": False},
        model=ModelParams(),
        synth_image_size=512, cross_res=16, self_res=32, mask_size=512,
    )


def tiny_scale() -> Scale:
    """The same layouts shrunk until a run takes seconds: 64 px synthesis (8x8 latents, capture
    at DD's latent/4 and latent/2), 8x8 DINOv2 tokens, decoder at 64 px."""
    return Scale(
        name="tiny",
        unet=sd21_unet_config([32, 32, 64, 64], [2, 2, 4, 4], layers=1, cross_dim=32,
                              sample_size=8, groups=8),
        vae=sd_vae_config([16, 16, 32, 32], layers=1, sample_size=64, groups=8),
        text={"vocab_size": None, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "projection_dim": 32,
              "max_position_embeddings": 77, "hidden_act": "gelu"},
        dinov2={"image_size": 64, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                "num_attention_heads": 2, "mlp_ratio": 4, "layerscale_value": 1.0,
                "layer_norm_eps": 1e-6, "use_swiglu_ffn": False},
        model=ModelParams(encoder_image_size=64, decoder_image_size=64, num_slots=4,
                          num_iterations=2, slot_size=32, mlp_hidden_size=32,
                          mlp_decoder_hidden_size=64),
        synth_image_size=64, cross_res=2, self_res=4, mask_size=64,
    )


SCALES: dict[str, Callable[[], Scale]] = {"paper": paper_scale, "tiny": tiny_scale}


@dataclass(frozen=True)
class Settings:
    """The run's resolved command-line settings."""

    scale: Scale
    device: torch.device
    precision: str
    batch: int
    train_steps: int
    synth_steps: int
    synth_batch: int
    synth_repeats: int
    warmup: int
    seed: int

    @property
    def autocast_dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @property
    def mixed(self) -> bool:
        return self.precision != "fp32"

    def as_dict(self) -> dict[str, Any]:
        return {"scale": self.scale.name, "device": str(self.device), "precision": self.precision,
                "batch": self.batch, "train_steps": self.train_steps,
                "synth_steps": self.synth_steps, "synth_batch": self.synth_batch,
                "synth_repeats": self.synth_repeats, "warmup": self.warmup, "seed": self.seed,
                "synth_image_size": self.scale.synth_image_size,
                "encoder_image_size": self.scale.model.encoder_image_size,
                "decoder_image_size": self.scale.model.decoder_image_size,
                "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Small helpers


def progress(message: str) -> None:
    print(f"[paper_scale {time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr,
          flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(tensor.nbytes for tensor in tensors)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class PeakMemory:
    """Peak memory since the last ``reset``: CUDA allocator statistics on a GPU, the process's
    resident-set high-water mark on a CPU (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.kind = "torch.cuda.max_memory_allocated (reset per phase)"
        elif self._can_reset_rss():
            self.kind = "peak RSS, VmHWM of /proc/self/status (reset per phase via clear_refs)"
        else:
            self.kind = "peak RSS, ru_maxrss (process lifetime, NOT reset per phase)"

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            return PeakMemory._vm_hwm() is not None
        except OSError:
            return False

    @staticmethod
    def _vm_hwm() -> int | None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def reset(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif "clear_refs" in self.kind:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

    def peak(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if "clear_refs" in self.kind:
            return int(self._vm_hwm())
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # kB on Linux


# ---------------------------------------------------------------------------------------------
# Building the models


@dataclass
class Models:
    """The Stable Diffusion modules, shared by synthesis and (UNet, VAE) the GLASS decoder."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel | None
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    encoder_dir: Path
    counts: dict[str, int] = field(default_factory=dict)


def build_text_encoder(scale: Scale, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    text = dict(scale.text)
    text["vocab_size"] = text["vocab_size"] or len(tokenizer)
    config = CLIPTextConfig(**text, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config).eval()


def save_random_dinov2(scale: Scale, folder: Path) -> int:
    """Write a random DINOv2 where ``FrozenDinov2Encoder`` (which loads by ``from_pretrained``)
    reads it; the in-memory copy is dropped. Returns its parameter count."""
    model = Dinov2Model(Dinov2Config(**scale.dinov2))
    count = parameter_count(model)
    model.save_pretrained(folder, safe_serialization=True)
    return count


def build_models(scale: Scale, scratch: Path) -> Models:
    progress(f"building {scale.name}-scale models (random weights)")
    tokenizer = build_tiny_clip_tokenizer()
    encoder_dir = scratch / "dinov2"
    counts = {"dinov2": save_random_dinov2(scale, encoder_dir)}
    text_encoder = build_text_encoder(scale, tokenizer)
    unet = UNet2DConditionModel(**scale.unet).eval()
    vae = AutoencoderKL(**scale.vae).eval()
    counts |= {"text_encoder": parameter_count(text_encoder), "unet": parameter_count(unet),
               "vae": parameter_count(vae)}
    progress("parameters: " + ", ".join(f"{name} {count / 1e6:.1f}M"
                                        for name, count in counts.items()))
    return Models(tokenizer, text_encoder, unet, vae, encoder_dir, counts)


def synthesis_pipeline(models: Models, settings: Settings) -> StableDiffusionPipeline:
    """SD 2.1-base as the synthesis backend runs it: its own PNDM scheduler, no safety checker,
    half precision on a GPU (``synth.stable_diffusion.dtype: float16``)."""
    pipe = StableDiffusionPipeline(
        vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer,
        unet=models.unet, scheduler=PNDMScheduler(**sd21_base_scheduler_config()),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(settings.device)
    if settings.device.type == "cuda":
        pipe.to(dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def as_float32(module: torch.nn.Module) -> torch.nn.Module:
    """The module in float32, as the trainer loads the UNet (synthesis may have halved it);
    untouched when it already is (diffusers warns about every cast)."""
    return module if module.dtype == torch.float32 else module.to(torch.float32)


def training_scheduler() -> DDPMScheduler:
    """The training noise schedule ``DiffusionDecoder.from_pretrained`` reads from SD 2.1-base's
    scheduler folder: its betas and epsilon prediction, as a DDPM scheduler."""
    base = sd21_base_scheduler_config()
    return DDPMScheduler(num_train_timesteps=base["num_train_timesteps"],
                         beta_start=base["beta_start"], beta_end=base["beta_end"],
                         beta_schedule=base["beta_schedule"], steps_offset=base["steps_offset"],
                         prediction_type=base["prediction_type"], clip_sample=False)


def build_glass(models: Models, scale: Scale, device: torch.device) -> GlassModel:
    """GLASS around the (float32) SD UNet and VAE, as the trainer's ``build_model`` does for
    phase 1."""
    sizes = scale.model
    encoder = FrozenDinov2Encoder(str(models.encoder_dir), image_size=sizes.encoder_image_size)
    decoder = DiffusionDecoder(as_float32(models.unet), as_float32(models.vae),
                               training_scheduler(), image_size=sizes.decoder_image_size)
    slot_attention = SlotAttention(
        input_dim=encoder.feature_dim, grid_size=list(encoder.grid_size),
        num_slots=sizes.num_slots, num_iterations=sizes.num_iterations,
        slot_size=sizes.slot_size, mlp_hidden_size=sizes.mlp_hidden_size,
        output_dim=decoder.conditioning_dim)
    mlp_decoder = MLPDecoder(slot_size=sizes.slot_size, feature_dim=encoder.feature_dim,
                             num_tokens=encoder.num_tokens,
                             hidden_size=sizes.mlp_decoder_hidden_size,
                             num_hidden_layers=sizes.mlp_decoder_hidden_layers)
    models.counts |= {"slot_attention": parameter_count(slot_attention),
                      "mlp_decoder": parameter_count(mlp_decoder)}
    return GlassModel(encoder, slot_attention, mlp_decoder, decoder).to(device)


# ---------------------------------------------------------------------------------------------
# 1-2. Synthesis with and without attention capture


def store_bytes(store: AttentionStore) -> int:
    """What the capture keeps for the whole denoising loop."""
    held = [store.cross_sum, store.self_sum, store.token_weights, store.class_embeddings]
    return tensor_bytes(held + list(store.class_keys.values()))


def naive_capture_bytes(unet: UNet2DConditionModel, latent_size: int, rows: int,
                        text_tokens: int, unet_calls: int, itemsize: int) -> int:
    """Bytes of every attention probability map of ``unet_calls`` UNet calls on ``rows`` batch
    rows (both guidance halves): per layer rows × heads × queries × keys, in the pipeline's
    dtype — what keeping ``get_attention_scores`` of every layer holds."""
    per_call = 0
    for layer in unet_attention_layers(unet, latent_size):
        module = unet.get_submodule(layer.name.removesuffix(".processor"))
        queries = layer.side ** 2
        keys = text_tokens if layer.kind == CROSS else queries
        per_call += rows * module.heads * queries * keys * itemsize
    return per_call * unet_calls


@dataclass
class SynthRun:
    seconds: float
    store: AttentionStore | None


def synthesize(pipe: StableDiffusionPipeline, settings: Settings, capture: bool) -> SynthRun:
    """One pipeline call on ``synth_batch`` prompts (per-sample CPU generators, as the
    backend); with ``capture`` also the backend's class encoding, store and processors."""
    scale, batch = settings.scale, settings.synth_batch
    chosen = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    latent = scale.synth_image_size // pipe.vae_scale_factor
    layers = select_capture_layers(pipe.unet, latent, scale.cross_res, scale.self_res)
    call = {"prompt": [prompt for prompt, _ in chosen],
            "negative_prompt": [NEGATIVE_PROMPT] * batch,
            "height": scale.synth_image_size, "width": scale.synth_image_size,
            "num_inference_steps": settings.synth_steps, "guidance_scale": GUIDANCE_SCALE,
            "generator": [torch.Generator("cpu").manual_seed(settings.seed + i)
                          for i in range(batch)],
            "output_type": "np"}
    store = None
    synchronize(settings.device)
    start = time.perf_counter()
    with torch.inference_mode():
        if capture:
            classes = [names for _, names in chosen]
            groups = [class_token_groups(pipe.tokenizer, names) for names in classes]
            embeddings = encode_class_texts(pipe, classes, settings.device)
            store = AttentionStore(batch, scale.cross_res, scale.self_res, embeddings, groups)
            with capture_attention(pipe.unet, store, layers):
                pipe(**call, callback_on_step_end=store.on_step_end)
            for index in range(batch):          # what the backend reads back
                store.cross_maps(index), store.self_attention(index)
        else:
            pipe(**call)
    synchronize(settings.device)
    return SynthRun(time.perf_counter() - start, store)


def measure_synthesis(pipe: StableDiffusionPipeline, settings: Settings) -> dict[str, Any]:
    for _ in range(settings.warmup):
        progress("synthesis warm-up")
        synthesize(pipe, settings, capture=False), synthesize(pipe, settings, capture=True)
    plain, captured = [], []
    store = None
    # alternating, so slow drift of a shared machine hits both variants alike
    for repeat in range(settings.synth_repeats):
        progress(f"synthesis {repeat + 1}/{settings.synth_repeats}: plain")
        plain.append(synthesize(pipe, settings, capture=False).seconds)
        progress(f"synthesis {repeat + 1}/{settings.synth_repeats}: with capture")
        run = synthesize(pipe, settings, capture=True)
        captured.append(run.seconds)
        store = run.store
    plain_s = statistics.median(plain) / settings.synth_batch
    capture_s = statistics.median(captured) / settings.synth_batch
    scale = settings.scale
    latent = scale.synth_image_size // pipe.vae_scale_factor
    layers = select_capture_layers(pipe.unet, latent, scale.cross_res, scale.self_res)
    unet_calls = store.step          # one callback per denoising-loop iteration
    rows = 2 * settings.synth_batch  # classifier-free guidance doubles the UNet batch
    ours = store_bytes(store)
    naive = naive_capture_bytes(pipe.unet, latent, rows, pipe.tokenizer.model_max_length,
                                unet_calls, pipe.unet.dtype.itemsize)
    return {
        "synthesis": {"plain_s_per_image": plain_s, "capture_s_per_image": capture_s,
                      "capture_time_ratio": capture_s / plain_s, "unet_calls": unet_calls,
                      "cross_layers_captured": sum(l.kind == CROSS for l in layers),
                      "self_layers_captured": sum(l.kind != CROSS for l in layers),
                      "attention_layers": len(pipe.unet.attn_processors)},
        "capture_memory": {"ours_bytes": ours, "naive_all_layer_bytes": naive,
                           "naive_over_ours": naive / ours},
    }


# ---------------------------------------------------------------------------------------------
# 3-4. Training steps, peak memory and checkpoint bytes


def random_batch(settings: Settings, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, E, E) in [0, 1] and pseudo masks (B, M, M) of a 4x4 block layout of
    background and three classes, so the Hungarian matching and every loss term have work."""
    scale, batch = settings.scale, settings.batch
    side = scale.model.encoder_image_size
    images = torch.rand(batch, 3, side, side, generator=generator)
    blocks = torch.randint(0, 4, (batch, 1, 4, 4), generator=generator).float()
    masks = F.interpolate(blocks, size=(scale.mask_size, scale.mask_size), mode="nearest")
    return images.to(settings.device), masks[:, 0].to(torch.uint8).to(settings.device)


def checkpoint_bytes(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The trainable parameters and their Adam state. A parameter whose state is missing (a
    step skipped by the fp16 grad scaler) counts what Adam allocates on its first step:
    exp_avg and exp_avg_sq like the parameter and a float32 step."""
    weights = state = 0
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            weights += parameter.nbytes
            held = optimizer.state.get(parameter)
            if held:
                state += tensor_bytes(v for v in held.values() if isinstance(v, torch.Tensor))
            else:
                state += 2 * parameter.nbytes + 4
    return {"trainable_weights_bytes": weights, "adam_state_bytes": state,
            "checkpoint_bytes": weights + state}


def train_phase(model: GlassModel, phase: int, settings: Settings,
                memory: PeakMemory) -> dict[str, Any]:
    """``warmup`` + ``train_steps`` optimisation steps of ``phase``, as the trainer takes them
    (its parameter groups, Adam, clipping at train.optim.max_grad_norm), timing the last."""
    train = TrainParams()
    device = settings.device
    free_memory(device)
    memory.reset()
    optimizer = torch.optim.Adam(parameter_groups(model, phase, train))
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    generator = torch.Generator().manual_seed(settings.seed + phase)
    batch = random_batch(settings, generator)
    model.train()

    def step() -> None:
        with torch.autocast(device.type, dtype=settings.autocast_dtype, enabled=settings.mixed):
            output = model(*batch, LossWeights(), generator=generator)
        scaler.scale(output.loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, train.optim.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(output.loss):
            raise RuntimeError(f"phase {phase}: non-finite loss {output.terms}")

    for index in range(settings.warmup):
        progress(f"phase {phase} warm-up step {index + 1}/{settings.warmup}")
        step()
    synchronize(device)
    start = time.perf_counter()
    for index in range(settings.train_steps):
        progress(f"phase {phase} step {index + 1}/{settings.train_steps}")
        step()
    synchronize(device)
    elapsed = time.perf_counter() - start
    result = {"steps_per_s": settings.train_steps / elapsed,
              "s_per_step": elapsed / settings.train_steps,
              "peak_memory_bytes": memory.peak(),
              "trainable_parameters": sum(p.numel() for p in trainable)}
    result |= checkpoint_bytes(optimizer)
    progress(f"phase {phase}: {result['s_per_step']:.2f} s/step, peak "
             f"{gib(result['peak_memory_bytes'])}")
    return result


def measure_training(model: GlassModel, settings: Settings) -> dict[str, Any]:
    memory = PeakMemory(settings.device)
    phases = {f"phase{phase}": train_phase(model, phase, settings, memory) for phase in (1, 2)}
    full = tensor_bytes(model.state_dict().values())
    return {
        "training": phases | {"memory_kind": memory.kind},
        "checkpoint": {
            "phase1_bytes": phases["phase1"]["checkpoint_bytes"],
            "phase2_bytes": phases["phase2"]["checkpoint_bytes"],
            "full_state_dict_bytes": full,
            "phase1_over_full": phases["phase1"]["checkpoint_bytes"] / full,
            "phase2_over_full": phases["phase2"]["checkpoint_bytes"] / full,
            "counted_by": "sum of tensor nbytes (no serialisation)",
        },
    }


# ---------------------------------------------------------------------------------------------
# Report


def gib(size: float) -> str:
    return f"{size / 2**30:.3f} GiB" if size >= 2**28 else f"{size / 2**20:.3f} MiB"


def table(results: dict[str, Any]) -> str:
    synth, memory = results["synthesis"], results["capture_memory"]
    training, checkpoint = results["training"], results["checkpoint"]
    settings = results["settings"]
    rows = [
        ("settings", f"{settings['scale']} scale, {settings['device']}, {settings['precision']}, "
                     f"train batch {settings['batch']}, synth batch {settings['synth_batch']}, "
                     f"{settings['synth_steps']} synth steps, {settings['threads']} threads"),
        ("parameters", ", ".join(f"{name} {count / 1e6:.2f}M"
                                 for name, count in results["parameters"].items())),
        ("synthesis plain", f"{synth['plain_s_per_image']:.3f} s/image"),
        ("synthesis + capture", f"{synth['capture_s_per_image']:.3f} s/image"),
        ("capture time ratio", f"{synth['capture_time_ratio']:.3f}"),
        ("capture memory (ours)", f"{gib(memory['ours_bytes'])} held "
                                  f"({synth['cross_layers_captured']} cross + "
                                  f"{synth['self_layers_captured']} self layers)"),
        ("capture memory (naive)", f"{gib(memory['naive_all_layer_bytes'])} "
                                   f"({synth['attention_layers']} layers x "
                                   f"{synth['unet_calls']} UNet calls)"),
        ("naive / ours", f"{memory['naive_over_ours']:.1f}"),
    ]
    for phase in ("phase1", "phase2"):
        stats = training[phase]
        rows += [(f"{phase} train", f"{stats['steps_per_s']:.4f} steps/s "
                                    f"({stats['s_per_step']:.2f} s/step), "
                                    f"{stats['trainable_parameters'] / 1e6:.2f}M trainable"),
                 (f"{phase} peak memory", gib(stats["peak_memory_bytes"]))]
    rows += [
        ("memory measured as", training["memory_kind"]),
        ("phase1 checkpoint", f"{gib(checkpoint['phase1_bytes'])} "
                              f"({checkpoint['phase1_over_full']:.3f} x full)"),
        ("phase2 checkpoint", f"{gib(checkpoint['phase2_bytes'])} "
                              f"({checkpoint['phase2_over_full']:.3f} x full)"),
        ("full state dict", gib(checkpoint["full_state_dict_bytes"])),
        ("bytes counted by", checkpoint["counted_by"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--scale", choices=sorted(SCALES), default="paper")
    parser.add_argument("--smoke", action="store_true",
                        help="--scale tiny with one step (and one call) everywhere")
    parser.add_argument("--batch", type=int, help="training batch (default 32 cuda, 1 cpu)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS),
                        help="training autocast precision (default fp16 cuda, fp32 cpu)")
    parser.add_argument("--train-steps", type=int, help="timed steps per phase "
                                                        "(default 10 cuda, 1 cpu)")
    parser.add_argument("--synth-steps", type=int, help="denoising steps (default 10 cuda, 2 cpu)")
    parser.add_argument("--synth-batch", type=int,
                        help="prompts per pipeline call (default 8 cuda = synth.batch_size, "
                             "1 cpu)")
    parser.add_argument("--synth-repeats", type=int,
                        help="timed calls per variant, median taken (default 3 cuda, 1 cpu)")
    parser.add_argument("--warmup", type=int, help="untimed calls/steps first "
                                                   "(default 1 cuda, 0 cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> Settings:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"

    def pick(value: int | None, cuda: int, cpu: int) -> int:
        """An explicit value wins; else 1 for --smoke, else the device's default."""
        if value is not None:
            return value
        return 1 if args.smoke else (cuda if gpu else cpu)

    settings = Settings(
        scale=SCALES["tiny" if args.smoke else args.scale](), device=device,
        precision=args.precision or ("fp16" if gpu else "fp32"),
        batch=pick(args.batch, 32, 1), train_steps=pick(args.train_steps, 10, 1),
        synth_steps=pick(args.synth_steps, 10, 2), synth_batch=pick(args.synth_batch, 8, 1),
        synth_repeats=pick(args.synth_repeats, 3, 1),
        warmup=args.warmup if args.warmup is not None else (0 if args.smoke or not gpu else 1),
        seed=args.seed)
    for name in ("batch", "train_steps", "synth_steps", "synth_batch", "synth_repeats"):
        if getattr(settings, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if settings.warmup < 0:
        raise SystemExit("--warmup must be at least 0")
    return settings


def run(settings: Settings) -> dict[str, Any]:
    torch.manual_seed(settings.seed)
    results: dict[str, Any] = {"settings": settings.as_dict()}
    with tempfile.TemporaryDirectory(prefix="paper_scale_") as scratch:
        models = build_models(settings.scale, Path(scratch))
        pipe = synthesis_pipeline(models, settings)
        results |= measure_synthesis(pipe, settings)
        # training needs no text encoder: drop it before the optimiser state arrives
        del pipe
        models.text_encoder = None
        free_memory(settings.device)
        progress("building GLASS")
        model = build_glass(models, settings.scale, settings.device)
        results |= measure_training(model, settings)
    results["parameters"] = dict(models.counts)
    return results


def check_finite_positive(results: dict[str, Any]) -> list[str]:
    """Paths of measured numbers (everything outside ``settings``) that are not finite and
    positive (``main`` names them on stderr)."""
    bad: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (math.isfinite(value) and value > 0):
                bad.append(path)

    walk({key: value for key, value in results.items() if key != "settings"}, "")
    return bad


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = resolve_settings(args)
    results = run(settings)
    print(table(results))
    print(json.dumps(results))
    bad = check_finite_positive(results)
    progress("done" + (f"; NOT finite and positive: {', '.join(bad)}" if bad else ""))


if __name__ == "__main__":
    main()
