"""DVC stage ``caption``: one caption record per image (glass.caption.run)."""

import argparse

import glass.caption.blip2  # noqa: F401  (declared as a dependency: the blip2 backend uses it)
from glass.caption.params import CaptionParams
from glass.caption.run import run_captioning
from glass.model_reference import model_reference
from glass.params import load_params, read_section, read_seed
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--prepared", required=True, help="output folder of the prepare stage")
    parser.add_argument("--out", required=True, help="captions JSONL to write")
    parser.add_argument("--scratch", required=True, help="folder for resumable partial work")
    parser.add_argument("--blip2-model", required=True, help="models stage folder of BLIP-2")
    args = parser.parse_args()
    params = load_params(args.params)
    caption, seed = read_section(params, "caption", CaptionParams), read_seed(params)
    run_captioning(f"{args.prepared}/index_caption.jsonl", f"{args.prepared}/class_stats.json",
                   caption, seed, args.out, args.scratch,
                   blip2_model=model_reference(args.blip2_model))


if __name__ == "__main__":
    run_stage("caption", main)
