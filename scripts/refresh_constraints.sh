#!/usr/bin/env bash
# Rewrite constraints.txt: the exact versions of every package that the newest releases allowed by
# pyproject.toml resolve to today, installed into a fresh temporary venv. Run it deliberately (to
# take up new library releases), then rerun the CPU graph and commit constraints.txt together with
# configs/cpu/dvc.lock: the CPU lock is only reproducible within one pinned environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=$(mktemp -d)/venv
"$PY" -m venv "$venv"
PIP="$venv/bin/python -m pip"
$PIP install -q torch==2.14.1 torchvision==0.29.1
SAM2_BUILD_CUDA=0 $PIP install -q --no-build-isolation "sam2==1.1.0"
$PIP install -q -e ".[test,ssh]"
{
    echo "# Exact versions of the tested environment (scripts/setup.sh installs with -c this file)."
    echo "# Written by scripts/refresh_constraints.sh; do not edit by hand."
    $PIP freeze --exclude-editable | grep -v "^-e "
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "constraints.txt refreshed: $(grep -vc '^#' constraints.txt) packages"
