"""DVC stage ``predict``: the trained model over the evaluation images — slot masks and slots of
every image (stored for the ``evaluate`` stage), conditional-generation metrics and the
reconstruction and composition grids (glass.eval.predict)."""

import argparse

from glass.data.params import DataParams
from glass.eval.params import EvaluateParams
from glass.eval.predict import run_prediction
from glass.params import load_params, read_section
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--model", required=True, help="trained GLASS folder (evaluate.model)")
    parser.add_argument("--prepared", required=True, help="output folder of the prepare stage")
    parser.add_argument("--models", required=True, help="output folder of the models stage")
    parser.add_argument("--out", required=True, help="predictions folder to write")
    parser.add_argument("--scratch", required=True, help="folder for resumable partial work")
    parser.add_argument("--metrics", required=True, help="generation metrics JSON (DVC metrics)")
    parser.add_argument("--images", required=True, help="folder of the generation grids")
    args = parser.parse_args()
    params = load_params(args.params)
    evaluate = read_section(params, "evaluate", EvaluateParams)
    data = read_section(params, "data", DataParams)
    evaluate.check_against(data)
    run_prediction(evaluate, data, args.model, args.prepared, args.out, args.scratch,
                   args.metrics, args.images, models=args.models)


if __name__ == "__main__":
    run_stage("predict", main)
