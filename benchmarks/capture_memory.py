"""Peak memory of our attention capture vs a naive capture that keeps every probability map.

Variants, all the same StableDiffusionPipeline call (same prompts, seeds, steps):

- plain: no capture (diffusers' default SDPA processors);
- ours: glass.synth.attention (cond half only, heads averaged at once, float32 running sums,
  only the cross- and self-attention layers at the chosen resolutions);
- naive: like Prompt-to-Prompt's AttentionStore without its resolution filter: every attention
  layer computes its probabilities explicitly (diffusers' ``get_attention_scores``) and keeps
  them, all heads and both guidance halves, at every step.

Reported: the peak tensor memory allocated during the call beyond what existed before it, for
each variant, and for the captures the extra over plain generation; the final line is the ratio
naive extra / ours extra. Both variants run at two step counts to show which one grows with steps.

How memory is measured (honest on CPU, where torch has no allocator statistics):
on CUDA, ``torch.cuda.max_memory_allocated`` (exact). On CPU, a TorchDispatchMode sees every aten
op's outputs; a storage first seen as an output of an op that does not alias one of its inputs
is a new allocation (its bytes count as live); it stops counting when the last tensor object
referring to it is garbage collected (weakref finalizers; CPython frees at once). The peak of the
live total is exact for tensors returned by ops; scratch memory internal to a kernel (e.g. inside
SDPA or a convolution) is invisible but identical across the variants, and numpy arrays sharing
a tensor's memory (the final image) are not counted. Slow (every op goes through Python), so
keep the tiny defaults on CPU.

    python benchmarks/capture_memory.py [--steps 10 20 --batch 4]
"""

from __future__ import annotations

import argparse
import tempfile
import weakref
from collections.abc import Callable

import torch
from diffusers import StableDiffusionPipeline
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from glass.synth.attention import AttentionStore, capture_attention, select_capture_layers
from glass.synth.class_tokens import class_token_groups, encode_class_texts
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion

PROMPTS = [
    ("A bunch of people at the ocean about to surf.; person bird surfboard",
     ["person", "bird", "surfboard"]),
    ("A hot dog and a teddy bear on a table.; hot dog teddy bear dining table",
     ["hot dog", "teddy bear", "dining table"]),
    ("A refrigerator in a small kitchen.; refrigerator oven", ["refrigerator", "oven"]),
    ("A dog sleeping on a couch.; dog couch", ["dog", "couch"]),
]


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storages allocated by aten ops while active (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.storages: dict[int, list[int]] = {}    # data_ptr -> [tensor objects, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, inputs)
        return out

    def _track(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        storage = tensor.untyped_storage()
        pointer, size = storage.data_ptr(), storage.nbytes()
        if pointer == 0 or size == 0:
            return
        entry = self.storages.get(pointer)
        if entry is None:
            if pointer in inputs:      # a view or in-place result of memory from before the mode
                return
            entry = self.storages[pointer] = [0, size]
            self.live += size
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        weakref.finalize(tensor, self._release, pointer)

    def _release(self, pointer: int) -> None:
        entry = self.storages[pointer]
        entry[0] -= 1
        if entry[0] == 0:
            del self.storages[pointer]
            self.live -= entry[1]


def peak_bytes(device: str, run: Callable[[], None]) -> int:
    """Peak tensor memory allocated during ``run()`` beyond what was allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    meter = LiveTensorBytes()
    with meter:
        run()
    return meter.peak


class NaiveStoringProcessor:
    """diffusers' AttnProcessor (explicit probabilities) that appends every probability map to a
    list: all layers, all heads, both guidance halves, every step."""

    def __init__(self, kept: list[torch.Tensor]):
        self.kept = kept

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if hidden_states.ndim != 3 or attn.group_norm is not None or attn.spatial_norm is not None:
            raise NotImplementedError("the naive baseline handles transformer-block attention only")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        self.kept.append(probs)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SD checkpoint (default: tiny random-weight SD)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cross", type=int, default=4, help="cross-attention grid side")
    parser.add_argument("--self", dest="self_side", type=int, default=8,
                        help="self-attention grid side")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20],
                        help="step counts to compare; the ratio uses the last")
    parser.add_argument("--batch", type=int, default=4)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(build_tiny_stable_diffusion(scratch))
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
        pipe = StableDiffusionPipeline.from_pretrained(
            model, dtype=dtype, safety_checker=None, requires_safety_checker=False).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    latent = args.image_size // pipe.vae_scale_factor
    layers = select_capture_layers(pipe.unet, latent, args.cross, args.self_side)
    chosen = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    prompts = [prompt for prompt, _ in chosen]
    classes = [names for _, names in chosen]
    originals = dict(pipe.unet.attn_processors)

    def call(steps: int) -> dict:
        return {"prompt": prompts, "height": args.image_size, "width": args.image_size,
                "num_inference_steps": steps, "output_type": "np",
                "generator": [torch.Generator().manual_seed(i) for i in range(args.batch)]}

    def plain(steps: int) -> None:
        with torch.inference_mode():
            pipe(**call(steps))

    def ours(steps: int) -> None:
        with torch.inference_mode():
            groups = [class_token_groups(pipe.tokenizer, names) for names in classes]
            embeddings = encode_class_texts(pipe, classes, args.device)
            store = AttentionStore(args.batch, args.cross, args.self_side, embeddings, groups)
            with capture_attention(pipe.unet, store, layers):
                pipe(**call(steps), callback_on_step_end=store.on_step_end)
            for index in range(args.batch):      # the results the backend reads
                store.cross_maps(index), store.self_attention(index)

    def naive(steps: int) -> None:
        kept: list[torch.Tensor] = []
        pipe.unet.set_attn_processor(NaiveStoringProcessor(kept))
        try:
            with torch.inference_mode():
                pipe(**call(steps))
        finally:
            pipe.unet.set_attn_processor(dict(originals))

    plain(2)                                    # warm-up outside any measurement
    print(f"model {model if args.model else 'tiny random-weight SD'}, device {args.device}, "
          f"{args.image_size} px, batch {args.batch}; ours captures "
          f"{sum(l.kind == 'cross' for l in layers)} cross layers at {args.cross}x{args.cross} "
          f"and {sum(l.kind == 'self' for l in layers)} self layers at "
          f"{args.self_side}x{args.self_side}; naive keeps all {len(originals)} layers")
    ratio = None
    for steps in args.steps:
        peaks = {name: peak_bytes(args.device, lambda run=run: run(steps))
                 for name, run in (("plain", plain), ("ours", ours), ("naive", naive))}
        extra_ours = peaks["ours"] - peaks["plain"]
        extra_naive = peaks["naive"] - peaks["plain"]
        print(f"{steps:4d} steps: peak plain {mib(peaks['plain'])}, ours {mib(peaks['ours'])} "
              f"(+{mib(extra_ours)}), naive {mib(peaks['naive'])} (+{mib(extra_naive)})")
        ratio = extra_naive / max(extra_ours, 1)
    print(f"capture memory ratio (naive / ours, peak extra tensor memory over plain generation, "
          f"{args.steps[-1]} steps): {ratio:.1f}")


def mib(size: int) -> str:
    return f"{size / 2**20:.3f} MiB"


if __name__ == "__main__":
    main()
