"""Score a pose model on held-out renders: Dactyl's Table 6 rows, histograms, JSON.

    dex-perception-eval --model runs/pose/pose_dex_shadow.onnx \
        --data randomized=data/pose_val_full --data plain=data/pose_val_plain \
        --json runs/pose/eval.json --png runs/pose/eval.png

Each ``--data NAME=DIR`` is a dataset made by ``dex-perception-dataset`` with a seed the model
never trained on (``--visual full`` for Dactyl's "randomized" row, ``--visual none`` for its
"plain" one). The model runs through ONNX Runtime with the same loader and contract checks the
perception node uses (``PoseEstimator``), batched. Per set: mean and median rotation error
(degrees, the angle of the relative rotation, q ≡ −q) and position error (mm, Euclidean), and
the same by where the pose came from (``rollout``, ``place``, ``settle``), and, for a set
rendered with ``--visibility``, by how much of the cube the hand hides (the share of its
silhouette out of sight, averaged over the cameras).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dex_common.rotations import rotation_distances
from dex_perception import dataset as ds
from dex_perception.runtime import PoseEstimator

# Dactyl (arXiv 1808.00177, Table 6), MuJoCo renders: mean rotation (deg) / position (mm) error.
DACTYL_TABLE6 = {"rotation_error_deg": 3.23, "position_error_mm": 3.71}
# Bins of the hidden share of the cube's silhouette (mean over cameras), [lo, hi).
HIDDEN_BINS = ((0.0, 0.01), (0.01, 0.05), (0.05, 0.15), (0.15, 1.01))


def rotation_errors_deg(quat: np.ndarray, quat_gt: np.ndarray) -> np.ndarray:
    """Angle (deg) between unit quaternions, row by row (w, x, y, z; q ≡ −q)."""
    return np.degrees(rotation_distances(quat, quat_gt))


def predict_batched(estimator: PoseEstimator, images: np.ndarray, batch: int = 32,
                    progress: bool = True, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """(positions [N, 3], unit quaternions [N, 4]) for images [N, C, H, W, 3], ``batch`` sets
    per call."""
    out = [estimator.predict_batch(images[i:i + batch])
           for i in tqdm(range(0, len(images), batch), desc=desc, disable=not progress,
                         leave=False)]
    return np.concatenate([p for p, _ in out]), np.concatenate([q for _, q in out])


def summarize(rot_deg: np.ndarray, pos_mm: np.ndarray) -> dict[str, float]:
    return {
        "samples": int(len(rot_deg)),
        "rotation_error_deg": float(rot_deg.mean()),
        "rotation_error_deg_median": float(np.median(rot_deg)),
        "position_error_mm": float(pos_mm.mean()),
        "position_error_mm_median": float(np.median(pos_mm)),
        "within_0.4_rad": float(np.mean(rot_deg < np.degrees(0.4))),
    }


def evaluate_set(estimator: PoseEstimator, data: str | Path, batch: int = 32,
                 progress: bool = True) -> dict:
    """Errors of the model on one dataset: overall, by pose source, and the raw arrays."""
    images, pos, quat, meta = ds.load(data)
    ds.check_dataset(meta, estimator.spec)
    p, q = predict_batched(estimator, images, batch, progress, desc=Path(data).name)
    rot = rotation_errors_deg(q, quat.astype(np.float64))
    pos_mm = np.linalg.norm(p - pos, axis=1) * 1e3
    sources = ds.load_sources(data)
    by_source = {name: summarize(rot[sources == k], pos_mm[sources == k])
                 for k, name in enumerate(ds.SOURCES) if np.any(sources == k)}
    row = {"data": str(data), "visual": meta.get("render_config", {}).get("visual", "?"),
           "seed": meta.get("seed"), **summarize(rot, pos_mm), "by_source": by_source,
           "_rot": rot, "_pos": pos_mm}
    visible = ds.load_visibility(data)
    if visible is not None:
        hidden = 1.0 - np.nanmean(visible, axis=1)  # a camera that misses the cube: left out
        row["_hidden"] = hidden
        row["by_hidden"] = {f"{lo:.0%}-{min(hi, 1.0):.0%}": summarize(rot[m], pos_mm[m])
                            for lo, hi in HIDDEN_BINS
                            if np.any(m := (hidden >= lo) & (hidden < hi))}
    return row


def table(model: str, rows: dict[str, dict]) -> str:
    """Dactyl's Table 6 layout: one row per test set, mean (median)."""
    lines = [f"pose model {model}",
             "| test set | samples | rotation error, deg: mean (median) | position error, mm: "
             "mean (median) | rotation < 0.4 rad |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} ({r['visual']} renders) | {r['samples']} | "
                     f"{r['rotation_error_deg']:.2f} ({r['rotation_error_deg_median']:.2f}) | "
                     f"{r['position_error_mm']:.2f} ({r['position_error_mm_median']:.2f}) | "
                     f"{100 * r['within_0.4_rad']:.0f}% |")
    lines.append(f"| Dactyl, MuJoCo renders (Table 6) | | {DACTYL_TABLE6['rotation_error_deg']} | "
                 f"{DACTYL_TABLE6['position_error_mm']} | |")
    return "\n".join(lines)


def plot(rows: dict[str, dict], path: Path, title: str) -> None:
    """Histograms of rotation and position error, one colour per test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    occl = [(n, r) for n, r in rows.items() if "_hidden" in r]
    fig, axes = plt.subplots(1, 3 if occl else 2, figsize=(15 if occl else 10, 3.8))
    ax_r, ax_p = axes[0], axes[1]
    rot_hi = max(float(np.percentile(r["_rot"], 99)) for r in rows.values())
    pos_hi = max(float(np.percentile(r["_pos"], 99)) for r in rows.values())
    for name, r in rows.items():
        ax_r.hist(np.minimum(r["_rot"], rot_hi), bins=50, range=(0, rot_hi), alpha=0.55,
                  label=f"{name}: mean {r['rotation_error_deg']:.1f}°")
        ax_p.hist(np.minimum(r["_pos"], pos_hi), bins=50, range=(0, pos_hi), alpha=0.55,
                  label=f"{name}: mean {r['position_error_mm']:.1f} mm")
    ax_r.axvline(np.degrees(0.4), color="k", ls="--", lw=1, label="0.4 rad (success threshold)")
    ax_r.set_xlabel("rotation error (deg; 99th percentile and above in the last bin)")
    ax_p.set_xlabel("position error (mm)")
    for ax in (ax_r, ax_p):
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    if occl:
        ax_h = axes[2]
        for name, r in occl:
            ax_h.scatter(100 * r["_hidden"], r["_rot"], s=4, alpha=0.5, label=name)
        ax_h.set_xlabel("share of the cube's silhouette the hand hides (%, mean over cameras)")
        ax_h.set_ylabel("rotation error (deg)")
        ax_h.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _named(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    return (name, path) if sep else (Path(spec).name, spec)


def sets_resolution(paths: list[str], hand: str) -> tuple[int, int] | None:
    """The (width, height) the test sets were rendered at, None for the registry's; sets at
    different resolutions cannot be judged with one model."""
    from dex_description.registry import get_hand

    base = get_hand(hand)
    cams = {ds.dataset_spec(ds.read_meta(p), base).cameras[0] for p in paths}
    sizes = sorted({(c.width, c.height) for c in cams})
    if len(sizes) > 1:
        raise ValueError(f"the test sets were rendered at different resolutions {sizes}:"
                         " judge them separately")
    cam = base.cameras[0]
    return None if sizes[0] == (cam.width, cam.height) else sizes[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="pose ONNX model (default: the shipped one)")
    ap.add_argument("--hand", default="shadow")
    ap.add_argument("--data", action="append", required=True, metavar="[NAME=]DIR",
                    help="a held-out dataset (repeat for several test sets)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--png", default=None, help="write the error histograms here")
    args = ap.parse_args(argv)
    try:
        sets = list(map(_named, args.data))
        est = PoseEstimator(args.model, args.hand, threads=args.threads,
                            resolution=sets_resolution([p for _, p in sets], args.hand))
        rows = {name: evaluate_set(est, path, args.batch) for name, path in sets}
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    print(table(str(est.model_path), rows))
    for name, r in rows.items():
        parts = [f"{s} {v['rotation_error_deg']:.1f}° / {v['position_error_mm']:.1f} mm (n={v['samples']})"
                 for s, v in r["by_source"].items()]
        print(f"{name} by pose source: " + "; ".join(parts))
        if "by_hidden" in r:
            parts = [f"{b} {v['rotation_error_deg']:.1f}° / {v['position_error_mm']:.1f} mm "
                     f"(n={v['samples']})" for b, v in r["by_hidden"].items()]
            print(f"{name} by share of the cube hidden: " + "; ".join(parts))
    if args.png:
        plot(rows, Path(args.png), f"{est.model_path.name} (sha256 {est.sha256[:12]})")
        print(f"wrote {args.png}")
    if args.json:
        out = {"model": str(est.model_path), "model_sha256": est.sha256, "hand": args.hand,
               "dactyl_table6": DACTYL_TABLE6,
               "sets": {n: {k: v for k, v in r.items() if not k.startswith("_")}
                        for n, r in rows.items()}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
