#!/usr/bin/env bash
# Set up (idempotent) and run the demo: the simulated hand doing trials with the pose CNN and the
# LSTM policy in the loop, recorded to one bag per trial. Extra args go to `dex demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${DEX_VENV:-$ROOT/.venv}/bin/activate"
exec dex demo "$@"
