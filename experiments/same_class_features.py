"""Do the toy world's encoder features separate two instances of one class?

    python experiments/same_class_features.py

The trained tiny DINOv2 (models/toy/dinov2) against the random one of the same config (seed of
the pretraining params), on held-out toy-world scenes (the pretraining's evaluation split):
k-means ARI over the tokens of every instance pair, same-class pairs and different-class pairs
apart (glass/pretrain/same_class_separation.py). Writes reports/same_class_features.json: the
measure behind the ablation's same-class merging (README, "The miniature ablation").
"""

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

from glass.data.toy_world import render_scene, scene_for_image
from glass.io import write_json
from glass.model.encoder import FrozenDinov2Encoder
from glass.params import load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.pretrain.run import EVAL_SEED_OFFSET, EVAL_SPLIT
from glass.pretrain.same_class_separation import pair_separation
from glass.stage_runner import run_stage
from glass.tiny.dinov2 import build_tiny_dinov2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/toy-pretrain/params.yaml")
    parser.add_argument("--trained", default="models/toy/dinov2")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--report", default="reports/same_class_features.json")
    args = parser.parse_args()
    params = load_params(args.params)
    pretrain, seed = read_section(params, "pretrain", PretrainParams), read_seed(params)
    world = pretrain.world

    def samples():
        for index in range(args.images):
            rendered = render_scene(scene_for_image(world, seed + EVAL_SEED_OFFSET, EVAL_SPLIT,
                                                    index), world)
            yield (f"{EVAL_SPLIT}-{index:05d}", rendered.image, rendered.instance_map,
                   rendered.instance_classes)

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        random_dir = build_tiny_dinov2(Path(scratch) / "random", seed=pretrain.dinov2.model_seed)
        for name, folder in (("random", random_dir), ("trained", args.trained)):
            encoder = FrozenDinov2Encoder(str(folder), image_size=world.image_size)
            results[name] = asdict(pair_separation(encoder, samples(), seed=seed))
            print(name, results[name])
    write_json(args.report, {"images": args.images, "split": EVAL_SPLIT, "trained": args.trained,
                             "pair_separation": results})


if __name__ == "__main__":
    run_stage("same_class_features", main)
