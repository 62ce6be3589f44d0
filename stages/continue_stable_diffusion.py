"""DVC stages ``continue_stable_diffusion`` and ``zero_snr_stable_diffusion``
(configs/toy-pretrain/dvc.yaml): a further training cycle for a saved tiny text-to-image model,
saved in Stable Diffusion's layout with its record, metrics, loss curve and a sample grid
(glass.pretrain.stable_diffusion_continued). ``--cycle`` names the cycle's params section."""

import argparse

from glass.params import load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.pretrain.stable_diffusion_continued import CYCLES, run_further_cycle
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="configs/toy-pretrain/params.yaml")
    parser.add_argument("--cycle", required=True, choices=sorted(CYCLES),
                        help="the cycle's section of pretrain")
    parser.add_argument("--base", required=True, help="the pipeline folder to train further")
    parser.add_argument("--out", required=True, help="the pipeline folder to write")
    parser.add_argument("--metrics", required=True, help="metrics JSON (dvc metrics)")
    parser.add_argument("--unet-curve", required=True, help="denoiser loss per step, TSV")
    parser.add_argument("--samples", required=True, help="sample grid PNG")
    args = parser.parse_args()
    params = load_params(args.params)
    run_further_cycle(read_section(params, "pretrain", PretrainParams), read_seed(params),
                      args.base, args.out, args.metrics, args.unet_curve, args.samples,
                      CYCLES[args.cycle])


if __name__ == "__main__":
    run_stage("continue_stable_diffusion", main)
