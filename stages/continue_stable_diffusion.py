"""DVC stage ``continue_stable_diffusion`` (configs/toy-pretrain/dvc.yaml): a second cosine cycle
for the tiny text-to-image model that ``pretrain_stable_diffusion`` trained from scratch, saved
in Stable Diffusion's layout with its record, metrics, loss curve and a sample grid
(glass.pretrain.stable_diffusion_continued)."""

import argparse

from glass.params import load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.pretrain.stable_diffusion_continued import run_stable_diffusion_continuation
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="configs/toy-pretrain/params.yaml")
    parser.add_argument("--base", required=True, help="the from-scratch pipeline folder")
    parser.add_argument("--out", required=True, help="the pipeline folder to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON (dvc metrics)")
    parser.add_argument("--unet-curve", required=True, help="denoiser loss per step, TSV")
    parser.add_argument("--samples", required=True, help="sample grid PNG")
    args = parser.parse_args()
    params = load_params(args.params)
    run_stable_diffusion_continuation(read_section(params, "pretrain", PretrainParams),
                                      read_seed(params), args.base, args.out, args.metrics,
                                      args.unet_curve, args.samples)


if __name__ == "__main__":
    run_stage("continue_stable_diffusion", main)
