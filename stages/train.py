"""DVC stages ``train_phase1`` and ``train_phase2``: two-phase GLASS training (glass.train.trainer).

One entry point for both phases (``--phase``); launch on several GPUs with
``accelerate launch stages/train.py …`` (the command dvc.yaml runs is the single-process form).
"""

import argparse
import shutil
from pathlib import Path

from glass.io import publish_directory
from glass.model_reference import model_reference
from glass.params import load_params, read_section, read_seed
from glass.stage_runner import run_stage
from glass.train.params import TrainParams
from glass.train.run import run_fingerprint
from glass.train.trainer import train_phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--phase", type=int, choices=(1, 2), required=True)
    parser.add_argument("--shards", required=True, help="shard folder of the synthesize stage")
    parser.add_argument("--models", required=True, help="output folder of the models stage")
    parser.add_argument("--init", help="phase 1's output folder (phase 2 only)")
    parser.add_argument("--out", required=True, help="folder for the trained modules")
    parser.add_argument("--live", required=True, help="DVCLive folder (metrics, plots, grids)")
    parser.add_argument("--scratch", required=True,
                        help="checkpoints for resuming, outside DVC's outputs (DVC deletes those)")
    args = parser.parse_args()
    params = load_params(args.params)
    train, seed = read_section(params, "train", TrainParams), read_seed(params)
    refs = {"encoder": model_reference(f"{args.models}/dinov2"),
            "stable_diffusion": model_reference(f"{args.models}/decoder")}
    # a run resumes only from checkpoints of the same settings, data and starting point
    scratch = Path(args.scratch) / run_fingerprint(args.phase, train, seed, refs, args.shards,
                                                   args.init)
    train_phase(args.phase, train, seed, refs, args.shards, args.out, scratch / "run",
                scratch / "live", init_dir=args.init,
                cache_dir=Path(args.scratch).parent / "feature_cache")
    # the live folder stays in scratch while training so that a resumed run keeps its history;
    # it replaces the published one only once complete (also across filesystems)
    publish_directory(scratch / "live", args.live, keep_source=True)
    shutil.rmtree(scratch)


if __name__ == "__main__":
    run_stage("train", main)
