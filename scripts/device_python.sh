# Sourced by the device scripts (run from the repo root): the project's Python on a lent
# machine. Wheels the machine lacks go in .whl/ and are installed into /tmp/site; the packages
# run from src/ on PYTHONPATH; one thread per process (the scripts spread work over processes).
if ! python3 -c "import mujoco" 2>/dev/null && [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
  export PYTHONPATH=/tmp/site
fi
for p in src/*/; do PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/$p; done
export PYTHONPATH PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
