"""Pretrain the tiny DINOv2 on toy-world images without labels (glass.pretrain.dinov2_ssl) and
measure the instance structure of its patch features against the random-weight model's
(glass.pretrain.instance_structure), on held-out toy-world val scenes.

    python experiments/pretrain_dinov2.py --steps 1500 --out reports/pretrain_dinov2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import Dinov2Model  # noqa: E402

from glass.data.toy_world import ToyWorldConfig, render_scene, scene_for_image  # noqa: E402
from glass.model.encoder import FrozenDinov2Encoder  # noqa: E402
from glass.pretrain.dinov2_ssl import (pretrain_dinov2,  # noqa: E402
                                       save_pretrained_dinov2)
from glass.pretrain.instance_structure import instance_structure  # noqa: E402
from glass.pretrain.params import SelfDistillationSettings  # noqa: E402
from glass.tiny.dinov2 import build_tiny_dinov2, tiny_dinov2_config  # noqa: E402


def val_samples(world: ToyWorldConfig, seed: int, count: int):
    for index in range(count):
        rendered = render_scene(scene_for_image(world, seed, "val", index), world)
        yield f"val-{index:05d}", rendered.image, rendered.instance_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("reports/pretrain_dinov2"))
    args = parser.parse_args()
    world = ToyWorldConfig(image_size=128)
    settings = replace(SelfDistillationSettings(), steps=args.steps, batch_size=args.batch_size,
                       warmup_steps=min(100, max(1, args.steps // 10)))
    args.out.mkdir(parents=True, exist_ok=True)
    random_dir = build_tiny_dinov2(args.out / "random", seed=args.seed)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    teacher, history = pretrain_dinov2(Dinov2Model(tiny_dinov2_config()), world, settings,
                                       seed=args.seed)
    seconds = time.perf_counter() - started
    trained_dir = save_pretrained_dinov2(teacher, args.out / "model")
    scores = {}
    for name, folder in (("random", random_dir), ("trained", trained_dir)):
        encoder = FrozenDinov2Encoder(str(folder), image_size=128)
        scores[name] = asdict(instance_structure(encoder, val_samples(world, 10_000,
                                                                      args.val_images)))
    report = {"settings": asdict(settings), "seed": args.seed, "train_seconds": round(seconds, 1),
              "threads": torch.get_num_threads(), "instance_structure": scores,
              "final_loss": history[-1] if history else None}
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["instance_structure"]), f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
