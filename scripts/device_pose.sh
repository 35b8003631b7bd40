#!/usr/bin/env bash
# Pose-net work for a session lent a GPU machine (the device tool's; issue 11). Nothing in the
# project needs a GPU: this renders and trains what the 2-core machine would take hours for.
#   1. renders Dactyl-randomized (`full`) datasets for each target in $HANDS, one process per
#      core, in chunks of $CHUNK samples, until $RENDER_S seconds are up (a chunk is started
#      only if it is expected to end in time, so every dataset kept is complete). A target is
#      a hand (`shadow`: the registry's cameras) or a hand at another camera resolution
#      (`shadow@200`: 200x200); targets of one hand draw the same seeds;
#   2. measures the training rate of the net on the GPU at each target's resolution and picks
#      the epochs that fit $TRAIN_S (the same for every target, all training at once);
#   3. trains one model per target (dex-perception-train --device cuda, all of its datasets),
#      exporting ONNX with its contract (checked against ONNX Runtime on the CPU);
#   4. packs each target's model, provenance, checkpoint and log into $OUT/pose_<target>.tar
#      (`@` becomes `_`), and the render logs and a PNG grid into $OUT/render.tar.
# Evaluate the models on the held-out sets of the 2-core machine (dex-perception-eval), not here.
# Run where the repo is the working directory; wheels the machine lacks in .whl/, GL loaders in
# .gl/ (the device tool's README).
set -u
OUT=${OUT:-runs/device_pose}
WORK=${WORK:-/tmp/device_pose}
HANDS=${HANDS:-"shadow leap"}
SHARE=${SHARE:-"2 1"}             # render processes per hand, in proportion
RENDER_S=${RENDER_S:-180}
TRAIN_S=${TRAIN_S:-270}
CHUNK=${CHUNK:-1000}
MAX_CHUNKS=${MAX_CHUNKS:-8}       # per process: caps the data at what memory and disk hold
SEED0=${SEED0:-1000}              # dataset seeds SEED0 + 100 * (process of its target) + chunk
                                  # (held-out sets: seeds 12 and 13)
NET=${NET:-"--input-downsample 1 --stem-channels 32 --stages 32,64,64,64"}
# Teacher-visited poses (dex-perception-dataset --teacher-states): directories of recorded
# teacher episodes, e.g. runs/bc_big (carry them: the run tool's `carry`), and the share of
# samples drawn from them. Empty: the random-walk / place / settle poses only.
TEACHER_STATES=${TEACHER_STATES:-}
P_TEACHER=${P_TEACHER:-0.5}
BATCH=${BATCH:-128}
LR=${LR:-3e-3}
DEVICE=${DEVICE:-cuda}
W=${WORKERS:-$(( $(nproc) - 1 ))}
mkdir -p "$OUT" "$WORK/data" "$WORK/logs"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

if [ -d .gl ] && command -v nvidia-smi >/dev/null; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
for d in /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json; do
  [ -f "$d" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$d
done
. scripts/device_python.sh || exit 1
export MUJOCO_GL=egl
python3 - <<'EOF' || exit 1
import time, mujoco, torch
from dex_perception.dataset import PoseSampler
s = PoseSampler("shadow")
t = time.perf_counter(); img = s.render(__import__("numpy").random.default_rng(0))
print(f"mujoco {mujoco.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      f" ({torch.cuda.get_device_name() if torch.cuda.is_available() else '-'}); first render "
      f"{img.shape} mean {img.mean():.1f} in {time.perf_counter() - t:.3f} s")
EOF
say "setup done; $W render processes; $(grep -m1 'model name' /proc/cpuinfo)"

hand_of() { echo "${1%@*}"; }                                   # shadow@200 -> shadow
res_args() { case "$1" in *@*) echo "--resolution ${1#*@}";; esac; }  # -> --resolution 200
side_of() { case "$1" in *@*) echo "${1#*@}";; *) echo 128;; esac; }   # pixels a side

# 1. Render: process i of target k by $SHARE; chunks until the deadline.
read -r -a hands <<< "$HANDS"; read -r -a share <<< "$SHARE"
total=0; for s in "${share[@]}"; do total=$((total + s)); done
render_end=$(( $(date +%s) + RENDER_S ))
for k in "${!hands[@]}"; do
  n=$(( W * share[k] / total )); [ "$n" -lt 1 ] && n=1
  for i in $(seq 0 $((n - 1))); do
    (
      j=0; last=0
      while :; do
        now=$(date +%s)
        [ $((now + last)) -ge "$render_end" ] || [ "$j" -ge "$MAX_CHUNKS" ] && break
        # shellcheck disable=SC2046
        python3 -m dex_perception.dataset --out "$WORK/data/${hands[k]}/p${i}_c${j}" \
          --hand "$(hand_of "${hands[k]}")" $(res_args "${hands[k]}") --samples "$CHUNK" \
          --shard-size 500 --visual full --seed $((SEED0 + 100 * i + j)) \
          ${TEACHER_STATES:+--teacher-states $TEACHER_STATES --p-teacher $P_TEACHER} \
          > "$WORK/logs/render_${hands[k]}_p${i}_c${j}.log" 2>&1 || break
        last=$(( $(date +%s) - now )); j=$((j + 1))
      done
    ) &
  done
done
wait
for h in "${hands[@]}"; do
  say "$h: $(ls -d "$WORK/data/$h"/*/shard_00000.npz 2>/dev/null | wc -l) datasets of $CHUNK"
done
tail -qn1 "$WORK"/logs/render_*_c0.log | head -4

# 2. The training rate on this GPU at each target's resolution, for the epochs that fit (all
#    targets train at once and share the GPU, so an epoch of all of them takes the sum).
targets_px=""; for t in "${hands[@]}"; do targets_px="$targets_px $t:$(side_of "$t")"; done
# shellcheck disable=SC2086
epochs=$(python3 - "$BATCH" "$TRAIN_S" "$WORK/data" "$DEVICE" $targets_px <<EOF
import sys, time, torch
from pathlib import Path
from dex_perception.train import main as _  # noqa: F401  (import check)
from dex_perception.net import NetConfig, PoseNet, net_loss
batch, budget, root, dev, targets = (int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]),
                                     sys.argv[4], [a.split(":") for a in sys.argv[5:]])
opt = dict(zip("$NET".split()[::2], "$NET".split()[1::2]))  # --flag value pairs
kw = dict(input_downsample=int(opt["--input-downsample"]), stem_channels=int(opt["--stem-channels"]),
          stages=tuple(int(c) for c in opt["--stages"].split(",")))
torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
epoch_s = 0.0
for name, side in targets:
    side = int(side)
    net = PoseNet(NetConfig(**kw, height=side, width=side)).to(dev).train()
    adam = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randint(0, 255, (batch, 3, side, side, 3), dtype=torch.uint8, device=dev)
    p = torch.zeros(batch, 3, device=dev)
    q = torch.tensor([[1.0, 0, 0, 0]], device=dev).repeat(batch, 1)
    for k in range(60):
        if k == 20:
            sync(); t = time.perf_counter()
        loss = net_loss(net, x, p, q)[0]; adam.zero_grad(); loss.backward(); adam.step()
    sync()
    rate = 40 * batch / (time.perf_counter() - t)
    n = len(list((root / name).glob("*/shard_00000.npz"))) * int("$CHUNK") * 0.9
    epoch_s += n / rate
    print(f"probe {name} ({side}x{side}): {rate:.0f} samples/s alone; {n:.0f} training samples",
          file=sys.stderr)
epochs = max(1, int(0.75 * budget / max(epoch_s, 1e-9)))
print(f"one epoch of every target ~{epoch_s:.1f} s -> {epochs} epochs", file=sys.stderr)
print(epochs)
EOF
)
say "epochs: ${epochs:-?}"
[ -n "${epochs:-}" ] || exit 1

# 3. Train one model per target, concurrently on the GPU (the resolution comes from the data).
for h in "${hands[@]}"; do
  data=$(ls -d "$WORK/data/$h"/*/ 2>/dev/null | while read -r d; do
    grep -q '"complete": true' "$d/meta.json" 2>/dev/null && echo "$d"; done)
  [ -z "$data" ] && { say "$h: no complete dataset"; continue; }
  # shellcheck disable=SC2086
  timeout $((TRAIN_S + 120)) python3 -m dex_perception.train --device "$DEVICE" \
    --hand "$(hand_of "$h")" --data $data --out "$WORK/model_$h/pose_dex_${h/@/_}.onnx" \
    --epochs "$epochs" \
    --batch-size "$BATCH" --lr "$LR" $NET --max-minutes "$(awk "BEGIN{print $TRAIN_S/60}")" \
    > "$WORK/logs/train_$h.log" 2>&1 &
done
wait
say "training done"
for h in "${hands[@]}"; do
  grep -a -E "^(epoch|exported|val|time budget|Traceback|[A-Za-z]*Error)" "$WORK/logs/train_$h.log" \
    | tail -n 6
  cp "$WORK/logs/train_$h.log" "$WORK/model_$h/" 2>/dev/null
  (cd "$WORK" && tar cf "$OUT/pose_${h/@/_}.tar" "model_$h") 2>/dev/null
done
ls "$WORK"/data/*/p0_c0/shard_00000.png 2>/dev/null | head -2 | while read -r f; do
  cp "$f" "$WORK/logs/grid_$(basename "$(dirname "$(dirname "$f")")").png"; done
for d in "$WORK"/data/*/*/; do  # each dataset's meta (command, seconds, renders/s)
  cp "$d/meta.json" "$WORK/logs/meta_$(basename "$(dirname "$d")")_$(basename "$d").json"
done
(cd "$WORK" && tar cf "$OUT/render.tar" logs) 2>/dev/null
ls -la "$OUT"
say "done"
