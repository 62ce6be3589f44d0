#!/usr/bin/env bash
# Creates .venv (if missing) and installs glass with its test tools, offline-friendly, at the exact
# versions of constraints.txt (the environment the CPU lock was made in; refresh it with
# scripts/refresh_constraints.sh). torch/torchvision are the builds pip finds on the project's CPU
# machines; sam2 is built without its CUDA extension (it is optional there) and against that torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
if ! .venv/bin/python -c "import sam2" 2>/dev/null; then
    SAM2_BUILD_CUDA=0 $PIP install -q -c constraints.txt --no-build-isolation "sam2==1.1.0"
fi
$PIP install -q -c constraints.txt -e ".[test]"
echo "glass installed in $(pwd)/.venv"
