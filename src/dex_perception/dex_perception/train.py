"""Train the pose CNN on rendered datasets (torch; CPU, or a CUDA GPU where there is one) and
export it to ONNX with its contract.

    python -m dex_perception.train --data data/pose --out runs/pose/pose.onnx --epochs 20

``--data`` takes one or more dataset directories (rendered for the same hand and cameras). On a
GPU the whole dataset is moved to GPU memory and the steps run in float32 with TF32 tensor
cores; the exported model runs on CPU in the perception node either way.

Per epoch it prints the validation position error (mm, mean Euclidean) and rotation error (deg,
mean angle). A checkpoint (``<out>.ckpt.pt``) is written after every epoch; ``--resume`` continues
from it (same data, same config) up to ``--epochs``. The export: ``images`` uint8 [B, C, H, W, 3]
→ ``position`` [B, 3], ``orientation`` [B, 4], dynamic batch, opset 17, with the pose contract
(docs/interfaces.md) in the metadata, checked against torch with ONNX Runtime, and a provenance
file ``<out stem>.md`` next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from dex_common.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dex_common.config_cli import this_machine
from dex_description.registry import HandSpec, get_hand
from dex_perception import dataset as ds
from dex_perception.net import NetConfig, PoseNet, net_loss, rotation_error_rad

OPSET = 17


@dataclass
class TrainConfig:
    hand: str = "shadow"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_frac: float = 0.1
    seed: int = 0
    threads: int = 2
    pixel_noise: float = 4.0  # σ of additive uint8 noise on training images (augmentation)
    net: NetConfig = field(default_factory=NetConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d


def command_line() -> str:
    """The exact command line of this process (``python -m ...`` kept as typed)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv
    return shlex.join(argv)


def config_hash(cfg: TrainConfig, data_meta: dict | list[dict]) -> str:
    metas = data_meta if isinstance(data_meta, list) else [data_meta]
    data = [{k: m.get(k) for k in ("samples", "seed", "render_config")} for m in metas]
    blob = json.dumps(
        {"train": cfg.to_dict(), "data": data[0] if len(data) == 1 else data},
        sort_keys=True,
        default=str,
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the CUDA GPU where there is one, else the CPU; or exactly ``cpu`` / ``cuda``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU here (use --device cpu)")
    return torch.device(name)


def lr_at(lr: float, step: int, total: int, warmup: float = 0.05) -> float:
    """Linear warm-up then cosine decay to 2% of ``lr``."""
    w = max(1, int(warmup * total))
    if step < w:
        return lr * (step + 1) / w
    t = min(1.0, (step - w) / max(1, total - w))
    return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


def _augment(images: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    if sigma <= 0:
        return images
    noise = torch.randn(images.shape, generator=gen, device=images.device) * sigma
    return (images.to(torch.float32) + noise).clamp_(0, 255).to(torch.uint8)


@torch.no_grad()
def evaluate(
    model: PoseNet, images: np.ndarray, pos: np.ndarray, quat: np.ndarray, batch: int = 64
) -> dict[str, float]:
    """Mean / median position error (mm) and rotation error (deg) over a set (in float32, on
    the model's device)."""
    model.eval()
    dev = next(model.parameters()).device
    pe, re = [], []
    for i in range(0, len(images), batch):
        p, q = model(torch.from_numpy(images[i : i + batch]).to(dev))
        pe.append(torch.linalg.vector_norm(p - torch.from_numpy(pos[i : i + batch]).to(dev),
                                           dim=1))
        re.append(rotation_error_rad(q, torch.from_numpy(quat[i : i + batch]).to(dev)))
    pe_mm = torch.cat(pe).cpu().numpy() * 1e3
    re_deg = np.degrees(torch.cat(re).cpu().numpy())
    return {
        "position_error_mm": float(pe_mm.mean()),
        "position_error_mm_median": float(np.median(pe_mm)),
        "rotation_error_deg": float(re_deg.mean()),
        "rotation_error_deg_median": float(np.median(re_deg)),
        "samples": len(images),
    }


def pose_contract(
    spec: HandSpec, producer: str, cfg_hash: str, eval_: dict, compute: str = ""
) -> dict[str, str]:
    """The pose-model metadata of docs/interfaces.md (all values strings)."""
    cam = spec.cameras[0]
    return {
        "dex.kind": "pose",
        "dex.contract_version": "1",
        "dex.hand": spec.name,
        "dex.hand_facts_hash": spec.facts_hash(),
        "dex.producer": producer,
        "dex.config_hash": cfg_hash,
        "dex.created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dex.eval": json.dumps(eval_, sort_keys=True),
        "dex.compute": compute or this_machine(),
        "dex.cameras": json.dumps(spec.camera_names),
        "dex.image": json.dumps({"height": cam.height, "width": cam.width, "encoding": "rgb8"}),
    }


def _torch_to_onnx(model: PoseNet, dummy: torch.Tensor) -> onnx.ModelProto:
    """Export with a dynamic batch. The TorchScript exporter takes <1 s here where the
    torch.export one takes 10-20 s on this CPU (it matters for tests); it is deprecated, so
    fall back to the torch.export exporter when it is gone."""
    names = {"input_names": ["images"], "output_names": ["position", "orientation"]}
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        f = Path(d) / "m.onnx"
        try:
            torch.onnx.export(
                model, (dummy,), str(f), **names, opset_version=OPSET, dynamo=False,
                dynamic_axes={k: {0: "batch"} for k in ("images", "position", "orientation")},
            )
            return onnx.load(str(f))
        except (TypeError, RuntimeError, NotImplementedError) as e:
            print(f"TorchScript ONNX export unavailable ({e}); using torch.export", flush=True)
        program = torch.onnx.export(
            model, (dummy,), None, **names, opset_version=max(OPSET, 18), dynamo=True,
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, verbose=False,
        )
        return program.model_proto


def export_onnx(
    model: PoseNet, path: Path, metadata: dict[str, str], check_images: np.ndarray
) -> float:
    """Export to ONNX (dynamic batch), attach the contract, verify with ONNX Runtime.

    Returns the max |ORT − torch| over both outputs on ``check_images``.
    """
    import onnx
    import onnxruntime as ort

    from dex_common.contract import record_sha256, write_contract

    model = model.eval()
    cfg = model.cfg
    dummy = torch.zeros((2, cfg.n_cameras, cfg.height, cfg.width, 3), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = _torch_to_onnx(model, dummy)
    write_contract(proto, metadata)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    record_sha256(path)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        tp, tq = model(torch.from_numpy(check_images))
    op, oq = sess.run(["position", "orientation"], {"images": check_images})
    return float(max(np.abs(op - tp.numpy()).max(), np.abs(oq - tq.numpy()).max()))


def write_provenance(path: Path, contract: dict[str, str], info: dict) -> Path:
    """``<stem>.md`` next to the model: command, compute, data, time, measured errors."""
    ev = json.loads(contract["dex.eval"])
    lines = [
        f"# {path.name}",
        "",
        "Cube pose CNN (dex_perception.net.PoseNet), ONNX, contract kind `pose`.",
        "",
        f"- produced by: `{contract['dex.producer']}`",
        f"- dataset: `{info['data']}` ({info['dataset_samples']} samples; made by "
        f"`{info['dataset_command']}`, {info['dataset_elapsed_s']} s, "
        f"{info['dataset_renders_per_s']} renders/s)",
        f"- split: {info['train_samples']} train / {ev['samples']} val",
        f"- compute: {contract['dex.compute']}; training time {info['train_time_s']:.0f} s, "
        f"{info['epochs']} epochs",
        f"- created (UTC): {contract['dex.created_utc']}; config hash {contract['dex.config_hash']}"
        f"; hand facts hash {contract['dex.hand_facts_hash']}",
        f"- ONNX Runtime vs torch max abs diff: {info['ort_max_abs_diff']:.2e}",
        "",
        "| val error | this model (mean / median) | Dactyl, MuJoCo renders |",
        "|---|---|---|",
        f"| position (mm) | {ev['position_error_mm']:.2f} / {ev['position_error_mm_median']:.2f}"
        " | 3.71 |",
        f"| rotation (deg) | {ev['rotation_error_deg']:.2f} / "
        f"{ev['rotation_error_deg_median']:.2f} | 3.23 |",
        "",
    ]
    out = path.with_suffix(".md")
    out.write_text("\n".join(lines))
    return out


def train(
    data: str | Path | list[str | Path],
    out: str | Path,
    cfg: TrainConfig,
    resume: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    producer: str | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    init: str | Path | None = None,
) -> dict:
    """Train on one or more datasets, checkpoint each epoch, export + verify ONNX; returns a
    summary dict. ``device``: ``cpu``, ``cuda`` or ``auto`` (``pick_device``). ``init``: start
    from the weights (and net layout) of another run's checkpoint — fine-tuning a model on new
    data, with a fresh schedule."""
    dev = pick_device(device)
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt.pt")
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = None
    if resume:  # before the (slow) dataset load, so a bad checkpoint fails at once
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = load_checkpoint(ckpt_path)  # tensors and plain data only: never runs code
    start_weights = None
    if init is not None and ckpt is None:
        if not Path(init).is_file():
            raise FileNotFoundError(f"--init: no checkpoint at {init}")
        start = load_checkpoint(init)
        start_weights = start["model"]
        cfg.net = NetConfig.from_dict(start["net"])
    registry_spec = get_hand(cfg.hand)
    torch.set_num_threads(cfg.threads)
    images, pos, quat, metas = ds.load_many(paths)
    meta = metas[0]
    # A dataset at another resolution makes a model for that resolution.
    spec = ds.dataset_spec(meta, registry_spec)
    if spec is not registry_spec:
        cam = spec.cameras[0]
        print(f"note: the dataset is {cam.width}x{cam.height}, not the registry's resolution; "
              "the model will load only where the cameras render that", flush=True)
    ds.check_dataset(meta, spec)
    cam = spec.cameras[0]
    if start_weights is not None:  # its layout is fixed: the data must fit it
        want = (cfg.net.n_cameras, cfg.net.height, cfg.net.width, tuple(cfg.net.pos_center))
        have = (len(spec.cameras), cam.height, cam.width,
                tuple(float(v) for v in spec.cube.rest_pos))
        if want != have:
            raise ValueError(f"--init: that model is for (cameras, height, width, cube rest) "
                             f"{want}; the data is {have}")
    cfg.net.n_cameras, cfg.net.height, cfg.net.width = len(spec.cameras), cam.height, cam.width
    cfg.net.pos_center = tuple(float(v) for v in spec.cube.rest_pos)

    start_epoch, history, train_time = 0, [], 0.0
    if ckpt is not None:
        cfg.net = NetConfig.from_dict(ckpt["net"])
        start_epoch, history, train_time = ckpt["epoch"], ckpt["history"], ckpt["train_time_s"]

    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(images))
    n_val = max(1, int(round(cfg.val_frac * len(images))))
    val_idx, tr_idx = np.sort(perm[:n_val]), perm[n_val:]
    v_img, v_pos, v_quat = images[val_idx], pos[val_idx], quat[val_idx]

    torch.manual_seed(cfg.seed)
    model = PoseNet(cfg.net)
    if start_weights is not None:
        model.load_state_dict(start_weights)
    model = model.to(dev)
    on_gpu = dev.type == "cuda"
    if on_gpu:  # float32 with TF32 convs/matmuls (bf16 outputs would quantize the pose at ~0.2°)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # On a GPU the training images live in its memory (uint8: 40k samples are 5.9 GB) and the
    # batches are gathered there; on the CPU they are sliced from the numpy array as before.
    source = torch.from_numpy(images).to(dev) if on_gpu else None
    pos_t, quat_t = torch.from_numpy(pos).to(dev), torch.from_numpy(quat).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(tr_idx) / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])

    deadline = time.monotonic() + 60.0 * max_minutes if max_minutes else None
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        # Every random stream restarts per epoch from (seed, epoch): a resumed run draws what
        # the uninterrupted run drew, so it ends bit-identical (tested).
        order = tr_idx[np.random.default_rng(cfg.seed * 1000 + epoch).permutation(len(tr_idx))]
        gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + epoch)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        # The loss is summed on the device and read back every 20 steps: a read is a GPU sync.
        tot = torch.zeros((), dtype=torch.float64, device=dev)
        for s in bar:
            b = np.sort(order[s * cfg.batch_size : (s + 1) * cfg.batch_size])
            bt = torch.from_numpy(b).to(dev)
            x = source[bt] if source is not None else torch.from_numpy(images[b])
            x = _augment(x, cfg.pixel_noise, gen)
            loss, pm, rl = net_loss(model, x, pos_t[bt], quat_t[bt])
            for g in opt.param_groups:  # warm-up + cosine over all epochs (resume-safe)
                g["lr"] = lr_at(cfg.lr, epoch * steps_per_epoch + s, total_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.detach()
            if s % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}",
                                pos_mm=f"{math.sqrt(pm.item()) * 1e3:.1f}")
        tot = float(tot)
        train_time += time.perf_counter() - t0
        ev = evaluate(model, v_img, v_pos, v_quat)
        history.append({"epoch": epoch + 1, "loss": tot / steps_per_epoch, **ev})
        print(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {tot / steps_per_epoch:.4f}  val position "
            f"{ev['position_error_mm']:.2f} mm  rotation {ev['rotation_error_deg']:.2f} deg  "
            f"({train_time:.0f} s)",
            flush=True,
        )
        save_checkpoint(
            {"model": model.state_dict(), "opt": opt.state_dict(),
             "epoch": epoch + 1, "history": history, "train_time_s": train_time,
             "net": cfg.net.to_dict(), "train": cfg.to_dict()},
            ckpt_path,
        )
        if deadline is not None and time.monotonic() > deadline and epoch + 1 < cfg.epochs:
            print(f"time budget of {max_minutes} min reached after epoch {epoch + 1}; stopping"
                  " (resume with --resume)")
            break

    ev = evaluate(model, v_img, v_pos, v_quat)
    ev["epochs_trained"] = history[-1]["epoch"] if history else 0
    del source
    model = model.cpu()
    producer = producer or command_line()
    compute = this_machine() + (f" + {torch.cuda.get_device_name(dev)}" if on_gpu else "")
    contract = pose_contract(spec, producer, config_hash(cfg, metas), ev, compute)
    diff = export_onnx(model, out, contract, v_img[: min(8, len(v_img))])
    print(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB); ORT vs torch max abs diff "
          f"{diff:.2e}")
    if diff > 1e-3:
        raise RuntimeError(f"ONNX Runtime output differs from torch by {diff:.2e} (> 1e-3)")
    info = {
        "data": ", ".join(str(p) for p in paths),
        "dataset_samples": sum(m.get("samples", 0) for m in metas),
        "dataset_command": meta.get("command", "") + (
            f" (and {len(metas) - 1} more datasets)" if len(metas) > 1 else ""),
        "dataset_elapsed_s": round(sum(m.get("elapsed_s") or 0.0 for m in metas), 2),
        "dataset_renders_per_s": meta.get("renders_per_s"),
        "device": str(dev),
        "train_samples": len(tr_idx),
        "train_time_s": train_time,
        "epochs": ev["epochs_trained"],
        "ort_max_abs_diff": diff,
    }
    readme = write_provenance(out, contract, info)
    return {"eval": ev, "history": history, "ort_max_abs_diff": diff, "onnx": str(out),
            "provenance": str(readme), "checkpoint": str(ckpt_path), **info}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, nargs="+",
                    help="dataset directories (dex-perception-dataset; same hand and cameras)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--hand", default="shadow")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--stem-channels", type=int, default=NetConfig.stem_channels,
                    help="channels of the first two convs (Dactyl: 32; 16 is ~2.5x faster)")
    ap.add_argument("--input-downsample", type=int, default=NetConfig.input_downsample,
                    help="average-pool camera images by this factor inside the net (1 = none)")
    ap.add_argument("--stages", default=",".join(str(c) for c in NetConfig.stages))
    ap.add_argument("--rotation", choices=("6d", "quat"), default=NetConfig.rotation,
                    help="orientation head: 6-D (Gram-Schmidt, continuous) or quaternion")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop after the epoch that crosses this wall-time budget")
    ap.add_argument("--checkpoint", default=None, help="checkpoint path (default <out>.ckpt.pt)")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    ap.add_argument("--init", default=None, metavar="CKPT",
                    help="fine-tune: start from another run's checkpoint (its weights and net "
                         "layout; the net options are ignored), with a fresh schedule")
    ap.add_argument("--device", default="auto",
                    help="auto (a CUDA GPU where there is one, else the CPU), cpu or cuda")
    args = ap.parse_args(argv)
    stages = tuple(int(c) for c in args.stages.split(","))
    strides = (1,) + (2,) * max(0, len(stages) - 2) + ((1,) if len(stages) > 1 else ())
    if len(stages) == len(NetConfig.stage_strides):
        strides = NetConfig.stage_strides
    net = NetConfig(stem_channels=args.stem_channels, stages=stages, stage_strides=strides,
                    input_downsample=args.input_downsample, rotation=args.rotation)
    cfg = TrainConfig(hand=args.hand, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, threads=args.threads, val_frac=args.val_frac, net=net)
    try:
        res = train(args.data, args.out, cfg, resume=args.resume, max_minutes=args.max_minutes,
                    checkpoint=args.checkpoint, device=args.device, init=args.init)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    ev = res["eval"]
    print(f"val position error {ev['position_error_mm']:.2f} mm, rotation error "
          f"{ev['rotation_error_deg']:.2f} deg; provenance {res['provenance']}")


if __name__ == "__main__":
    main()
