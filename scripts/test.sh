#!/usr/bin/env bash
# The test suite (units + the CPU graph through dvc repro in a temporary copy of the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m pytest -q "$@"
