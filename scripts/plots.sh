#!/usr/bin/env bash
# DVC plots of one configuration, as an HTML page that works offline (Vega bundled, no CDN):
#   scripts/plots.sh cpu|paper [show|diff] [dvc args...]
# The page is written to scratch/<config>/plots/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
config=${1:?usage: scripts/plots.sh cpu|paper [show|diff] [dvc args...]}
command=${2:-show}
shift $(( $# >= 2 ? 2 : 1 ))
template=scratch/plots_template.html
[ -s "$template" ] || python tools/plots_template.py "$template" > /dev/null
mapfile -t targets < <(python tools/dvc_targets.py "$config" plots)
dvc plots "$command" "${targets[@]}" --html-template "$template" -o "scratch/$config/plots" "$@"
