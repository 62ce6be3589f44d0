"""DVC stage ``prepare``: the configured dataset → image index files (glass.data.prepare)."""

import argparse

from glass.data.params import DataParams
from glass.data.prepare import prepare
from glass.params import load_params, read_section, read_seed
from glass.stage_runner import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()
    params = load_params(args.params)
    data, seed = read_section(params, "data", DataParams), read_seed(params)
    prepare(data, seed, args.out)


if __name__ == "__main__":
    run_stage("prepare", main)
