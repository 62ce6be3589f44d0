#!/usr/bin/env bash
# DVC metrics of one configuration only: scripts/metrics.sh cpu|paper [show|diff] [dvc args...]
#   scripts/metrics.sh cpu                 # dvc metrics show, CPU configuration
#   scripts/metrics.sh cpu diff HEAD~1     # what changed since the previous commit
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
config=${1:?usage: scripts/metrics.sh cpu|paper [show|diff] [dvc args...]}
command=${2:-show}
shift $(( $# >= 2 ? 2 : 1 ))
mapfile -t targets < <(python tools/dvc_targets.py "$config" metrics)
dvc metrics "$command" "${targets[@]}" "$@"
