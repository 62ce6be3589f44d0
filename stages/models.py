"""DVC stage ``models``: one folder per model role, holding a hub reference or a tiny model
built from configs (glass.models)."""

import argparse
import logging

from glass.errors import InvalidInput
from glass.models import ModelsParams, materialize_model
from glass.params import load_params, read_section
from glass.stage_runner import run_stage

log = logging.getLogger("glass.stages.models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True, help="this configuration's params file")
    parser.add_argument("--out", required=True, help="folder that gets one subfolder per role")
    parser.add_argument("--roles", required=True,
                        help="comma-separated roles, exactly the outputs dvc.yaml declares")
    args = parser.parse_args()
    specs = read_section(load_params(args.params), "models", ModelsParams).roles()
    roles = args.roles.split(",")
    if set(specs) != set(roles):
        raise InvalidInput(f"params `models` has roles {sorted(specs)} but dvc.yaml declares "
                           f"{sorted(roles)}: keep the two lists equal")
    for role in roles:
        reference = materialize_model(role, specs[role], f"{args.out}/{role}")
        log.info("models.%s: %s", role, reference)


if __name__ == "__main__":
    run_stage("models", main)
