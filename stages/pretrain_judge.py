"""DVC stage ``pretrain_judge`` (configs/toy-pretrain/dvc.yaml): the toy-world segmenter that
judges generated images and their pseudo masks, with its record, held-out accuracy and loss
curve (glass.pretrain.judge_run)."""

import argparse

from glass.params import load_params, read_section, read_seed
from glass.pretrain.judge_run import run_judge_training
from glass.pretrain.params import PretrainParams
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="configs/toy-pretrain/params.yaml")
    parser.add_argument("--out", required=True, help="the judge's model folder to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON (dvc metrics)")
    parser.add_argument("--curve", required=True, help="loss per step, TSV (dvc plots)")
    args = parser.parse_args()
    params = load_params(args.params)
    run_judge_training(read_section(params, "pretrain", PretrainParams), read_seed(params),
                       args.out, args.metrics, args.curve)


if __name__ == "__main__":
    run_stage("pretrain_judge", main)
