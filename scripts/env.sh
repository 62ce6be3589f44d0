# Sourced by the run scripts: offline hubs, no telemetry, and NLTK data from a sibling
# shared/nltk_data folder when one exists (offline machines); elsewhere glass downloads it.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export DVC_NO_ANALYTICS=1
export RAY_USAGE_STATS_ENABLED=0
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}"
_glass_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${NLTK_DATA:-}" ] && [ -d "$_glass_root/../shared/nltk_data" ]; then
    export NLTK_DATA="$(cd "$_glass_root/../shared/nltk_data" && pwd)"
fi
export PATH="$_glass_root/.venv/bin:$PATH"
