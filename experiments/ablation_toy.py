"""The miniature guidance ablation (paper Table 6a in small) on the CPU configuration's toy world.

    python experiments/ablation_toy.py                  # the full run: 3 seeds, every setting
    python experiments/ablation_toy.py --steps 20 --seeds 0 --train-samples 64 --eval-images 8

Writes reports/ablation_toy.json and reports/ablation_toy.md. Model sizes and optimiser settings
come from configs/cpu/params.yaml (train section), and so do the models (its models section: the
toy world's pretrained DINOv2 and Stable Diffusion; a tiny random-weight role is built into the
work folder) and the generator (synth.backend with its settings). ``--oracle`` adds the
oracle_full row: full guidance on the oracle renderer's shards.
"""

import argparse
import logging
from pathlib import Path

from glass.ablation import SETTINGS, run_ablation
from glass.models import ModelsParams
from glass.params import load_params, read_section
from glass.stage_runner import run_stage
from glass.synth.params import GeneratorSettings, SynthParams
from glass.train.params import TrainParams
from glass.tiny.dinov2 import build_tiny_dinov2
from glass.tiny.stable_diffusion import build_tiny_stable_diffusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="configs/cpu/params.yaml")
    parser.add_argument("--steps", type=int, default=2000,
                        help="phase-1 steps per run (equal for all); a rerun with more steps "
                        "continues every run from its last checkpoint")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--eval-images", type=int, default=200)
    parser.add_argument("--generator", choices=["stable_diffusion", "toy"], default=None,
                        help="the shards' generator (default: the params' synth.backend)")
    parser.add_argument("--oracle", action=argparse.BooleanOptionalAction, default=True,
                        help="add the oracle_full row (full guidance, oracle renderer's shards)")
    parser.add_argument("--work-dir", default="scratch/ablation_toy")
    parser.add_argument("--report-dir", default="reports")
    args = parser.parse_args()
    params = load_params(args.params)
    models = read_section(params, "models", ModelsParams)
    train = read_section(params, "train", TrainParams)
    synth = read_section(params, "synth", SynthParams)
    work = Path(args.work_dir)

    def model_folder(role: str, spec, builder) -> str:
        if spec.id is not None:
            return spec.id
        folder = work / "models" / role
        if not folder.is_dir():
            builder(folder, seed=spec.seed)
        return str(folder)

    refs = {"encoder": model_folder("dinov2", models.dinov2, build_tiny_dinov2),
            "stable_diffusion": model_folder("decoder", models.decoder,
                                             build_tiny_stable_diffusion)}
    backend = args.generator or synth.backend
    generator = GeneratorSettings(
        backend=backend, stable_diffusion=synth.stable_diffusion, toy=synth.toy,
        models={"stable_diffusion": model_folder("stable_diffusion", models.stable_diffusion,
                                                 build_tiny_stable_diffusion)})
    oracle = (GeneratorSettings(backend="toy", toy=synth.toy)
              if args.oracle and backend != "toy" else None)
    train = train.replace(logging=train.logging.replace(checkpoint_every=max(args.steps // 4, 1),
                                                        grid_every=args.steps))
    report = run_ablation(train, refs, generator, synth.toy.world, work_dir=work,
                          report_dir=args.report_dir, steps=args.steps, seeds=args.seeds,
                          settings=args.settings, train_samples=args.train_samples,
                          eval_images=args.eval_images, oracle=oracle)
    logging.getLogger("glass.ablation").info("report: %s", {k: v for k, v in report.items()})
    print(Path(args.report_dir, "ablation_toy.md").read_text())


if __name__ == "__main__":
    run_stage("ablation_toy", main)
