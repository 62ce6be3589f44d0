"""DVC stage ``evaluate``: object discovery and property prediction measured on the ``predict``
stage's stored predictions with the metric conventions of ``evaluate.metrics``, as DVC metrics,
plots and a report beside the paper's numbers (glass.eval.run)."""

import argparse

from glass.eval.params import EvaluateParams
from glass.eval.run import run_evaluation
from glass.params import ConfigParams, load_params, read_section
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--predictions", required=True, help="the predict stage's folder")
    parser.add_argument("--generation", required=True,
                        help="the predict stage's generation metrics (for the report)")
    parser.add_argument("--out", required=True, help="folder for curves, grids and the report")
    parser.add_argument("--metrics", required=True, help="metrics JSON (DVC metrics)")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    config = read_section(params, "config", ConfigParams)
    run_evaluation(evaluate, args.predictions, args.out, args.metrics,
                   generation_path=args.generation, config_name=config.name)


if __name__ == "__main__":
    run_stage("evaluate", main)
