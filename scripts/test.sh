#!/usr/bin/env bash
# Set up (idempotent) and run the checks: ruff + the whole pytest suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${DEX_VENV:-$ROOT/.venv}/bin/activate"
echo "[test] test-only requirements"
# (pip's notes about configured local index folders missing on this machine are noise)
pip install -q --disable-pip-version-check -r requirements-test.txt \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# Debian's Chromium: the report page is checked in a real headless browser (test_report).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian's chromium (headless browser for the report page test)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >/dev/null 2>&1 || echo "[test] WARNING: could not install chromium; the browser test will fail"
  else
    echo "[test] note: chromium missing (apt-get install chromium); the browser test will fail"
  fi
fi
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
