#!/usr/bin/env bash
# Reference speed of gymnasium-robotics' HandManipulateBlock-v1, in its OWN venv.
#
# gymnasium-robotics' Shadow-hand envs break on mujoco >= 3.12 (an assert on joint types in
# mujoco_utils.py), while dex runs mujoco 4, so the reference lives in a separate venv. Pins
# (checked 2026-11: these install from PyPI and HandManipulateBlock-v1 steps):
#   gymnasium-robotics==1.4.2  (latest on PyPI; 1.4.x needs gymnasium >= 1.0)
#   gymnasium==1.4.0
#   mujoco==3.11.0             (the newest release its hand envs run on)
#
# Usage:
#   scripts/bench_gym_robotics.sh --setup-only        # create/refresh the venv, then exit
#   scripts/bench_gym_robotics.sh [probe args...]     # ensure venv, run the probe (JSON on stdout)
#       probe args: --seconds S --repeats R --env-id ID  (see src/dex_bringup/dex_bringup/benchmarks/gymrob_probe.py)
# Env: DEX_GYMROB_VENV (default ${XDG_CACHE_HOME:-~/.cache}/dex/gymrob-venv: outside the repo, a
#      third-party venv with its own tests must not sit in the source tree),
#      PYTHON (interpreter used to create the venv; default python3).
# Idempotent: a stamp file records the pins; an existing venv with the same pins that imports
# is reused without touching the network. All chatter goes to stderr; stdout is the probe's JSON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEX_GYMROB_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dex/gymrob-venv}"
PY="${PYTHON:-python3}"
PINS=("gymnasium-robotics==1.4.2" "gymnasium==1.4.0" "mujoco==3.11.0")
STAMP="$VENV/.dex-gymrob-pins"
PROBE="$ROOT/src/dex_bringup/dex_bringup/benchmarks/gymrob_probe.py"

venv_ok() {
    [[ -x "$VENV/bin/python" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "${PINS[*]}" ]] || return 1
    "$VENV/bin/python" -c "import gymnasium, gymnasium_robotics, mujoco" >/dev/null 2>&1
}

if ! venv_ok; then
    echo "bench_gym_robotics: building $VENV (${PINS[*]})" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install -q "${PINS[@]}" >&2
    "$VENV/bin/python" -c "import gymnasium, gymnasium_robotics, mujoco" >&2
    echo "${PINS[*]}" > "$STAMP"
fi

if [[ "${1:-}" == "--setup-only" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi
exec "$VENV/bin/python" "$PROBE" "$@"
