"""Do the encoder's tokens, and the slots built from them, say where things are?

    python experiments/position_information.py

A slot-conditioned decoder can only place an object where its slot says it is
(glass/pretrain/position_information.py). Closed-form ridge probes, each against the chance level
of always answering the fit set's mean:

- the tiny DINOv2 (trained, models/toy/dinov2, and the random one of the same config and seed):
  token features → the token's grid position, and object-pooled features → the object's centre,
  on held-out toy-world scenes (the pretraining's evaluation split: the first ``--fit-images``
  fit, the next ``--test-images`` are scored);
- the slots of trained GLASS models (default: the CPU graph's, after phase 2; run
  ``dvc repro configs/cpu/dvc.yaml`` first), read from the predict stage's stored slots:
  each slot Hungarian-matched to a ground-truth object (as the property probe of the evaluate
  stage) → the object's box centre, fitted on toy_train and scored on toy_val.

Writes reports/position_information.{json,md}.
"""

import argparse
import itertools
import tempfile
from dataclasses import asdict
from pathlib import Path

from glass.eval.params import EvaluateParams
from glass.eval.predictions import Predictions
from glass.eval.run import open_readers, probe_samples
from glass.io import atomic_open, write_json
from glass.model.encoder import FrozenDinov2Encoder
from glass.params import load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.pretrain.position_information import ProbeScore, encoder_position_information, ridge_probe
from glass.pretrain.run import EVAL_SPLIT, held_out_samples
from glass.stage_runner import run_stage
from glass.tiny.dinov2 import build_tiny_dinov2


def slot_centre_probe(predictions_dir: str, evaluate: EvaluateParams, ridge: float) -> ProbeScore:
    predictions = Predictions(predictions_dir)
    readers = open_readers(evaluate, predictions, {"toy_train", "toy_val"})
    source = evaluate.metrics.conventions.mask_source
    fit = probe_samples(readers["toy_train"], predictions, "toy_train", None, source)
    test = probe_samples(readers["toy_val"], predictions, "toy_val", None, source)
    return ridge_probe(fit.features, fit.centres, test.features, test.centres, ridge)


def markdown(report: dict) -> str:
    def row(features: str, target: str, score: dict) -> str:
        return (f"| {features} | {target} | {score['mse']:.4f} | {score['mean_mse']:.4f} | "
                f"{score['mse'] / score['mean_mse']:.2f} | {score['fit']} / {score['test']} |")

    lines = [f"Ridge probes (λ = {report['ridge']}): test MSE against always answering the fit "
             "set's mean (ratio 1 = nothing read, 0 = exact)", "",
             "| features | target | probe MSE | mean MSE | ratio | fit / test |",
             "|---|---|---|---|---|---|"]
    lines += [row(f"tiny DINOv2, {name}", target.replace("_", " "), score)
              for name, scores in report["encoder"].items() for target, score in scores.items()]
    lines += [row(f"slots, {name}", "object box centre", score)
              for name, score in report["slots"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/toy-pretrain/params.yaml")
    parser.add_argument("--cpu-params", default="configs/cpu/params.yaml",
                        help="the configuration whose evaluate section reads the predictions")
    parser.add_argument("--trained", default="models/toy/dinov2")
    parser.add_argument("--predictions", nargs="*",
                        default=["CPU graph=data/cpu/eval/predictions"],
                        help="NAME=FOLDER of the predict stage's stored slots (none given: no slot rows)")
    parser.add_argument("--fit-images", type=int, default=200)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--ridge", type=float, default=1e-2)
    parser.add_argument("--out", default="reports/position_information")
    args = parser.parse_args()
    params = load_params(args.params)
    pretrain, seed = read_section(params, "pretrain", PretrainParams), read_seed(params)
    world = pretrain.world
    evaluate = read_section(load_params(args.cpu_params), "evaluate", EvaluateParams)

    def fit_and_test():
        # one stream of scenes: the probe drains the fit slice first, the rest is the test set
        scenes = held_out_samples(world, seed, args.fit_images + args.test_images)
        return itertools.islice(scenes, args.fit_images), scenes
    report = {"ridge": args.ridge, "split": EVAL_SPLIT, "trained": args.trained,
              "encoder": {}, "slots": {}}
    with tempfile.TemporaryDirectory() as scratch:
        random_dir = build_tiny_dinov2(Path(scratch) / "random", seed=pretrain.dinov2.model_seed)
        for name, folder in (("random", random_dir), ("trained", args.trained)):
            encoder = FrozenDinov2Encoder(str(folder), image_size=world.image_size)
            scores = encoder_position_information(encoder, *fit_and_test(), args.ridge)
            report["encoder"][name] = {k: asdict(v) for k, v in scores.items()}
            print(name, scores)
    for entry in args.predictions:
        name, _, folder = entry.partition("=")
        if not folder:
            raise SystemExit(f"--predictions {entry!r}: expected NAME=FOLDER")
        score = slot_centre_probe(folder, evaluate, args.ridge)
        report["slots"][name] = asdict(score)
        print(name, score)
    write_json(f"{args.out}.json", report)
    with atomic_open(f"{args.out}.md", "w") as handle:
        handle.write(markdown(report))


if __name__ == "__main__":
    run_stage("position_information", main)
