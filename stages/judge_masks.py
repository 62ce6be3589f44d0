"""DVC stage ``judge_masks``: the shards' pseudo masks scored against the judge, a segmenter
independent of the attention path (glass.synth.mask_quality): class presence, IoU per label,
unsure share, and a grid image | pseudo mask | judge."""

import argparse

from glass.params import load_params, read_section
from glass.stage_runner import run_stage
from glass.synth.mask_quality import run_judge_masks
from glass.synth.params import SynthParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="the configuration's params file")
    parser.add_argument("--shards", required=True, help="the synthesize stage's shard folder")
    parser.add_argument("--metrics", required=True, help="metrics JSON (dvc metrics)")
    parser.add_argument("--grid", required=True, help="grid PNG (dvc plots)")
    args = parser.parse_args()
    judge = read_section(load_params(args.params), "synth", SynthParams).judge
    run_judge_masks(args.shards, judge.model, args.metrics, args.grid, judge.min_presence,
                    judge.grid_samples)


if __name__ == "__main__":
    run_stage("judge_masks", main)
