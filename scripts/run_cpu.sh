#!/usr/bin/env bash
# The main job: the CPU configuration of the whole stage graph (tiny models, toy world).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
start=$(date +%s)
dvc repro configs/cpu/dvc.yaml "$@"
dvc metrics show -R data/cpu/metrics
echo "CPU configuration reproduced in $(( $(date +%s) - start )) s; outputs in data/cpu/"
