"""Time overhead of attention capture: time(generation with capture) / time(plain generation).

Both variants run the same StableDiffusionPipeline call (same prompts, seeds, steps); the capture
variant also tokenises and encodes the class texts, allocates the running sums and installs the
capturing processors on the chosen layers (glass.synth.attention), exactly as the
``stable_diffusion`` backend does. Pseudo-mask refinement is not part of the capture and is not
timed here. The variants alternate (plain, capture, plain, ...) after one warm-up each, and the
ratio of the medians is reported. Target: <= 1.3.

Default model: the tiny random-weight SD (built into a temporary folder), 64 px, cross 4x4 and
self 8x8 (DD's latent/4 and latent/2). With ``--model`` and ``--device cuda`` the same script
times a real checkpoint (e.g. ``--model stabilityai/stable-diffusion-2-1-base --image-size 512
--cross 16 --self 32``).

Timings on a shared machine are noisy; ``--threads 1`` (the default) avoids the OpenMP
spin-waiting that makes multi-threaded torch on a busy small CPU slow by orders of magnitude.

    python benchmarks/capture_overhead.py [--steps 20 --batch 4 --repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from diffusers import StableDiffusionPipeline

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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SD checkpoint (default: tiny random-weight SD)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cross", type=int, default=4, help="cross-attention grid side")
    parser.add_argument("--self", dest="self_side", type=int, default=8,
                        help="self-attention grid side")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = default)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
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

    def synchronize() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(capture: bool) -> float:
        synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            call = {"prompt": prompts, "height": args.image_size, "width": args.image_size,
                    "num_inference_steps": args.steps, "output_type": "np",
                    "generator": [torch.Generator().manual_seed(i) for i in range(args.batch)]}
            if capture:
                groups = [class_token_groups(pipe.tokenizer, names) for names in classes]
                embeddings = encode_class_texts(pipe, classes, args.device)
                store = AttentionStore(args.batch, args.cross, args.self_side, embeddings, groups)
                with capture_attention(pipe.unet, store, layers):
                    pipe(**call, callback_on_step_end=store.on_step_end)
            else:
                pipe(**call)
        synchronize()
        return time.perf_counter() - start

    run(False), run(True)                       # warm-up: first calls allocate and pick kernels
    plain, captured = [], []
    for _ in range(args.repeats):
        plain.append(run(False))
        captured.append(run(True))
    print(f"model {model if args.model else 'tiny random-weight SD'}, device {args.device}, "
          f"threads {torch.get_num_threads()}, {args.image_size} px, batch {args.batch}, "
          f"{args.steps} steps; captured {sum(l.kind == 'cross' for l in layers)} cross layers at "
          f"{args.cross}x{args.cross} and {sum(l.kind == 'self' for l in layers)} self layers at "
          f"{args.self_side}x{args.self_side}")
    print("plain   s: " + " ".join(f"{t:.3f}" for t in plain))
    print("capture s: " + " ".join(f"{t:.3f}" for t in captured))
    ratio = statistics.median(captured) / statistics.median(plain)
    print(f"capture overhead ratio (median capture / median plain, {args.repeats} runs each): "
          f"{ratio:.3f} (target <= 1.3)")


if __name__ == "__main__":
    main()
