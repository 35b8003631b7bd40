#!/usr/bin/env bash
# A long teacher evaluation on a lent many-core machine (the device tool's; nothing here needs
# its GPU): it continues a resumable `dex-policy-eval --resume` run, one Ray worker per core,
# for at most EVAL_S seconds, and leaves the result in $OUT. Every finished trial is already in
# the JSON, so a run cut by the time limit loses only the trials in flight; carry the JSON back
# in (RESULT=...) and run again to go on.
#   RESULT: the JSON to continue (default runs/teacher50/leap_far90_s2.json; its .timing.npz
#           beside it); EVAL_ARGS: the evaluation's own arguments (must match the JSON's).
# Example (device tool): carry [".whl", "runs/teacher50"], command
#   OUT=$OUT EVAL_S=540 bash scripts/device_teacher_eval.sh
set -u
OUT=${OUT:-runs/device}
RESULT=${RESULT:-runs/teacher50/leap_far90_s2.json}
EVAL_S=${EVAL_S:-540}
W=${WORKERS:-$(nproc)}
EVAL_ARGS=${EVAL_ARGS:---controller mpc --hand leap --trials 50 --seed 300 --goal-rule far90 --mpc-success 2}
mkdir -p "$OUT"
. scripts/device_python.sh || exit 1
export MUJOCO_GL=${MUJOCO_GL:-disable}
name=$(basename "$RESULT")
if [ -f "$RESULT" ]; then
  cp "$RESULT" "$OUT/$name"
  timing="${RESULT%.json}.timing.npz"
  [ -f "$timing" ] && cp "$timing" "$OUT/"
fi
echo "workers $W; $(grep -m1 'model name' /proc/cpuinfo)"
# shellcheck disable=SC2086
timeout "$EVAL_S" python3 -m dex_policy.evaluate $EVAL_ARGS --workers "$W" --resume \
  --json "$OUT/$name" > "$OUT/${name%.json}.log" 2>&1
echo "exit $? (124: the time limit; the finished trials are in the JSON)"
python3 - "$OUT/$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
print(f"{s['trials']} trials: mean {s['mean']:.2f}, median {s['median']:.1f}, sorted {s['sorted']}")
PY
