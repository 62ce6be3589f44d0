"""Phase-1 training speed with and without the encoder feature cache, as a ratio from one run.

The frozen encoder's features of a generated image never change, so with
``train.data.feature_cache`` they are computed once and read back in later epochs (and in phase
2). This script trains phase 1 of the CPU configuration's model on toy-world shards three times:
without the cache, with an empty cache (the first pass fills it), and with the filled cache; it
reports steps/s of the first and last and their ratio. With the tiny random-weight DINOv2 the
encoder is a small part of a step, so the gain here is small; with DINOv2 ViT-B/14 at 448 px it
is a large part of phase 1.

    python benchmarks/feature_cache.py [--steps 60]
"""

import argparse
import tempfile
import time
from pathlib import Path

from glass.ablation import toy_prompt_records
from glass.params import load_params, read_section
from glass.synth.params import GeneratorSettings, SynthParams
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis
from glass.tiny.dinov2 import build_tiny_dinov2
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion
from glass.train.params import TrainParams
from glass.train.trainer import train_phase


def timed_run(train: TrainParams, refs, shards, root: Path, name: str, cache: Path | None) -> float:
    config = train.replace(data=train.data.replace(feature_cache=cache is not None, flip=False))
    start = time.perf_counter()
    train_phase(1, config, 0, refs, shards, root / name / "model", root / name / "scratch",
                root / name / "live", cache_dir=cache)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    params = load_params(args.params)
    train = read_section(params, "train", TrainParams)
    train = train.replace(phase1=train.phase1.replace(steps=args.steps),
                          logging=train.logging.replace(checkpoint_every=args.steps,
                                                        grid_every=args.steps))
    toy = read_section(params, "synth", SynthParams).toy
    batch = train.data.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        refs = {"encoder": str(build_tiny_dinov2(root / "dinov2")),
                "stable_diffusion": str(build_tiny_stable_diffusion(root / "decoder"))}
        # as many samples as the run consumes, so the filling pass sees every one once
        records = toy_prompt_records(args.steps * batch, 0, toy.world.classes)
        run_sharded_synthesis(records, GeneratorSpec("toy", GeneratorSettings(backend="toy", toy=toy)),
                              root / "shards", shard_size=100, seed=0, batch_size=8, num_workers=0,
                              jpeg_quality=95, store_attention=False, progress=False)
        plain = timed_run(train, refs, root / "shards", root, "plain", None)
        filling = timed_run(train, refs, root / "shards", root, "filling", root / "cache")
        cached = timed_run(train, refs, root / "shards", root, "cached", root / "cache")
    print(f"phase 1, {args.steps} steps of batch {batch}: without cache {args.steps / plain:.2f} "
          f"steps/s, filling the cache {args.steps / filling:.2f} steps/s, cache hits "
          f"{args.steps / cached:.2f} steps/s")
    print(f"feature cache speed-up (cache hits / no cache): {plain / cached:.2f}x")


if __name__ == "__main__":
    main()
