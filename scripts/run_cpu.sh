#!/usr/bin/env bash
# The main job: the CPU configuration of the whole stage graph (tiny models, toy world).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
start=$(date +%s)
# every params section at once, so a wrong key fails in seconds, not after the stages before it
python -m glass.check_params configs/cpu/params.yaml
dvc repro configs/cpu/dvc.yaml "$@"
bash scripts/metrics.sh cpu
echo "CPU configuration reproduced in $(( $(date +%s) - start )) s; outputs in data/cpu/"
