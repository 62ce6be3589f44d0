#!/usr/bin/env bash
# The main job: the CPU configuration of the whole stage graph (tiny models, toy world).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
start=$(date +%s)
# every params section at once, so a wrong key fails in seconds, not after the stages before it
python -m glass.check_params configs/cpu/params.yaml
dvc repro configs/cpu/dvc.yaml "$@"
# a changed lock was made here: record the CPU kind, whose kernels decide the float outputs' last
# bits (glass/machine.py; tests compare bytes only on the kind the lock was made on)
if ! git diff --quiet -- configs/cpu/dvc.lock 2>/dev/null || [ ! -f configs/cpu/lock_machine.json ]; then
    python -m glass.machine configs/cpu/lock_machine.json
fi
bash scripts/metrics.sh cpu
echo "CPU configuration reproduced in $(( $(date +%s) - start )) s; outputs in data/cpu/"
