"""DVC stage ``evaluate``: object discovery, conditional and compositional generation and property
prediction of the trained model (glass.eval.run), as DVC metrics, plots and a report."""

import argparse

from glass.data.params import DataParams
from glass.eval.params import EvaluateParams
from glass.eval.run import run_evaluation
from glass.params import ConfigParams, load_params, read_section
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--model", required=True, help="trained model folder (train_phase2)")
    parser.add_argument("--prepared", required=True, help="output folder of the prepare stage")
    parser.add_argument("--models", required=True, help="output folder of the models stage")
    parser.add_argument("--out", required=True, help="folder for curves, grids and the report")
    parser.add_argument("--metrics", required=True, help="metrics JSON (DVC metrics)")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    evaluate.check_against(data)
    config = read_section(params, "config", ConfigParams)
    run_evaluation(evaluate, data, args.model, args.prepared, args.out, args.metrics,
                   models=args.models, config_name=config.name)


if __name__ == "__main__":
    run_stage("evaluate", main)
