#!/usr/bin/env bash
# Teacher work for a session lent a many-core machine (the device tool's; nothing here needs its
# GPU: the planner's rollouts are CPU MuJoCo, and episodes and trials are independent, so they
# spread one per core).
#   1. evaluates teacher variants on unseen seeds (16 trials each, one worker per trial);
#   2. collects pure-teacher episodes (behavioural-cloning labels) with the best variant that is
#      easy to imitate (sparse noise + effort) if it keeps >= 80% of the shipped teacher's mean,
#      else with the shipped teacher, until the time is up;
#   3. packs everything into $OUT/teacher.tar (eval JSON/logs/plots, shards, log.jsonl); the work
#      itself happens in $WORK.
# Run where the repo is the working directory; wheels the machine lacks go in .whl/ (README of
# the device tool). Times in seconds: EVAL_S per variant, COLLECT_S of collection.
# Resumable: the collection resumes its shards if $OUT/collect exists.
set -u
OUT=${OUT:-runs/device}
WORK=${WORK:-/tmp/device_teacher}
W=${WORKERS:-$(nproc)}
EVAL_S=${EVAL_S:-100}
EVAL_STEPS=${EVAL_STEPS:-200}
COLLECT_S=${COLLECT_S:-240}
mkdir -p "$OUT" "$WORK"
. scripts/device_python.sh || exit 1
export MUJOCO_GL=${MUJOCO_GL:-disable}
python3 -c "import mujoco, dex_policy.dagger, dex_policy.evaluate; print('mujoco', mujoco.__version__)" \
  || exit 1
echo "workers $W; $(grep -m1 'model name' /proc/cpuinfo)"

declare -A ARGS=(
  [shipped]=""
  [sparse25_e5]="--mpc-noise-fraction 0.25 --mpc-effort 5"
  [sparse50_e10]="--mpc-noise-fraction 0.5 --mpc-effort 10"
)
for name in shipped sparse25_e5 sparse50_e10; do
  # shellcheck disable=SC2086
  timeout "$EVAL_S" python3 -m dex_policy.evaluate --controller mpc --hand leap --trials "$W" \
    --seed 100 --max-steps "$EVAL_STEPS" --workers "$W" --json "$WORK/eval_$name.json" \
    ${ARGS[$name]} > "$WORK/eval_$name.log" 2>&1
  echo "== $name (exit $?)"; grep -E "^(consecutive|sorted|decision)" "$WORK/eval_$name.log"
done

best=$(python3 - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
mean = {}
for p in out.glob("eval_*.json"):
    mean[p.stem[5:]] = json.loads(p.read_text())["summary"]["mean"]
ship = mean.get("shipped", 0.0)
sparse = {k: v for k, v in mean.items() if k != "shipped"}
pick = max(sparse, key=sparse.get) if sparse else "shipped"
print(pick if sparse and sparse[pick] >= 0.8 * ship else "shipped")
EOF
)
echo "collecting with $best: ${ARGS[$best]}"
# shellcheck disable=SC2086
timeout $((COLLECT_S + 90)) python3 -m dex_policy.dagger --out "$WORK/collect" --hand leap \
  --iterations 1 --episodes 400 --episode-steps 250 --seed 11 --workers "$W" \
  --max-minutes "$(awk "BEGIN{print $COLLECT_S/60}")" --resume ${ARGS[$best]} > "$WORK/collect.log" 2>&1
echo "collect exit $?; shards: $(ls "$WORK/collect/shards" 2>/dev/null | wc -l)"
echo "$best ${ARGS[$best]}" > "$WORK/collect/teacher.txt"
tar cf "$OUT/teacher.tar" -C "$WORK" . && ls -la "$OUT"
