"""DVC stage ``pretrain_dinov2`` (configs/toy-pretrain/dvc.yaml): the tiny DINOv2 trained on
toy-world scenes without labels, with its record, metrics and loss curve (glass.pretrain.run)."""

import argparse

from glass.params import load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.pretrain.run import run_dinov2_pretraining
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="configs/toy-pretrain/params.yaml")
    parser.add_argument("--out", required=True, help="the pretrained model folder to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON (dvc metrics)")
    parser.add_argument("--curve", required=True, help="loss per step, TSV (dvc plots)")
    args = parser.parse_args()
    params = load_params(args.params)
    run_dinov2_pretraining(read_section(params, "pretrain", PretrainParams), read_seed(params),
                           args.out, args.metrics, args.curve)


if __name__ == "__main__":
    run_stage("pretrain_dinov2", main)
