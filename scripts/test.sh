#!/usr/bin/env bash
# Set up (idempotent) and run the checks: ruff + the whole pytest suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${DEX_VENV:-$ROOT/.venv}/bin/activate"
echo "[test] test-only requirements"
pip install -q --disable-pip-version-check -r requirements-test.txt
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
echo "[test] ruff check src test launch"
ruff check src test launch
echo "[test] pytest"
set +e
python -m pytest -q test "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "[test] ERROR: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
