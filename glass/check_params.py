"""Read every section of a params file as the stages will, before any stage runs:

    python -m glass.check_params params.yaml configs/cpu/params.yaml

A stage reads only the sections it declares in dvc.yaml (so that a change elsewhere neither
reruns nor re-imports it); this command reads them all at once, so that a misspelt key in the
``evaluate`` section fails in seconds rather than after training. ``scripts/run_cpu.sh`` runs it
before ``dvc repro``. Exit status 2 and one line naming the key when a section is wrong.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from glass.caption.params import CaptionParams
from glass.data.params import DataParams
from glass.eval.params import EvaluateParams
from glass.models import ModelsParams
from glass.params import ConfigParams, load_params, read_section, read_seed
from glass.pretrain.params import PretrainParams
from glass.stage_runner import run_stage
from glass.synth.params import SynthParams
from glass.text.params import PromptsParams
from glass.train.params import TrainParams

SECTIONS = {"config": ConfigParams, "models": ModelsParams, "data": DataParams,
            "caption": CaptionParams, "prompts": PromptsParams, "synth": SynthParams,
            "train": TrainParams, "evaluate": EvaluateParams}
# the pretraining graph's params file (configs/toy-pretrain/params.yaml) has only these
PRETRAIN_SECTIONS = {"pretrain": PretrainParams}


def read_params_file(path: str | Path) -> dict[str, Any]:
    """Every section of the params file at ``path``, typed (``seed`` as an int): a
    configuration's file must have all of SECTIONS, the pretraining graph's PRETRAIN_SECTIONS."""
    params = load_params(path)
    sections: dict[str, Any] = {"seed": read_seed(params)}
    wanted = SECTIONS if "pretrain" not in params else PRETRAIN_SECTIONS
    for key, section in wanted.items():
        sections[key] = read_section(params, key, section)
    if "evaluate" in sections:
        sections["evaluate"].check_against(sections["data"])
    return sections


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", nargs="+", help="params files to check")
    args = parser.parse_args(argv)
    for path in args.params:
        read_params_file(path)
        print(f"{path}: every section is valid")


if __name__ == "__main__":
    run_stage("check_params", main)
