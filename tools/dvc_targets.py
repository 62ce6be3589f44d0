"""The DVC metrics and plots files of one configuration, for targeted DVC commands.

    python tools/dvc_targets.py cpu metrics      # data/cpu/metrics/prompts.json ...
    python tools/dvc_targets.py paper plots

Untargeted ``dvc metrics show`` / ``dvc plots show`` read every dvc.yaml of the repository, so
they list the other configuration's missing outputs too; a dvc.yaml given as a target is read as
a data file (a bogus chart of the YAML). These are the files instead, read from the stage
definitions with the configuration's ``config.out``. ``scripts/metrics.sh`` and
``scripts/plots.sh`` use them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGURATIONS = {"paper": "params.yaml", "cpu": "configs/cpu/params.yaml"}


def targets(configuration: str, kind: str) -> list[str]:
    """The ``kind`` ("metrics" or "plots") paths of ``configuration``'s stages, in stage order."""
    if configuration not in CONFIGURATIONS:
        raise SystemExit(f"configuration must be one of {sorted(CONFIGURATIONS)}, got "
                         f"{configuration!r}")
    if kind not in ("metrics", "plots"):
        raise SystemExit(f"kind must be metrics or plots, got {kind!r}")
    params = yaml.safe_load((REPO / CONFIGURATIONS[configuration]).read_text())
    out = params["config"]["out"]
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found: list[str] = []
    for stage in stages.values():
        for entry in stage.get(kind, []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            path = path.replace("${config.out}", out)
            if path not in found:
                found.append(path)
    return found


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    print("\n".join(targets(*argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
