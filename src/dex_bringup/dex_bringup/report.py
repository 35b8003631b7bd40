"""``dex report RUN_DIR``: one static HTML page (no server) and PNGs about a recorded run.

From the run's trial bags (``dex run --record DIR`` / ``dex demo``) it writes into
``RUN_DIR/report/`` (or ``--out``):

- ``index.html``: the trial table in Dactyl's Table-3 format (mean ± sd, median, sorted counts)
  with the trial rules and the models used, and per trial its video and plots;
- ``outcomes.png``: successes per trial by end reason and their histogram;
- ``trial_NNN_rotation.png``: rotation error to the goal against time, successes marked, the
  success threshold drawn;
- ``trial_NNN_joint.png``: commanded against measured position of one actuator (``--actuator``);
- ``trial_NNN_vision.png`` (vision mode): the pose estimate's rotation and position error against
  the true pose;
- ``timing.png``: the loop's step and latency percentiles as the nodes reported them on
  /diagnostics (the bags hold percentiles, not per-step samples);
- ``trial_NNN.mp4`` (and ``.webm``, which the page embeds: browsers do not play MPEG-4 Part 2):
  the trial re-rendered from the bag, ``contact_sheet.png`` of the first trial.

Everything is derived from the bags; nothing is simulated again.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dex_bringup.trial_record import TrialRecord, find_trials, load_trial
from dex_common.trial_summary import plot as plot_outcomes
from dex_common.trial_summary import summarize

TIMING_KEYS = {  # node -> (label, diagnostics key prefix)
    "dex_policy": [("policy step", "step"), ("policy inference", "inference")],
    "dex_perception": [("pose inference", "inference")],
    "dex_sim": [("sim loop latency", "loop_latency"), ("physics", "physics"),
                ("render", "render"), ("publish", "publish")],
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trial_row(rec: TrialRecord) -> dict[str, Any]:
    o = rec.outcome
    t = rec.t_status
    return {"trial": rec.trial, "seed": o.get("seed", ""), "successes": rec.final_successes,
            "end_reason": rec.end_reason, "steps": int(o.get("steps") or len(t)),
            "duration_s": float(t[-1] - t[0]) if len(t) > 1 else 0.0,
            "bag": rec.path.name}


def plot_rotation(rec: TrialRecord, path: Path, threshold: float | None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    t0 = rec.t_status[0] if len(rec.t_status) else 0.0
    ax.plot(rec.t_status - t0, np.degrees(rec.rotation_error), lw=1.2,
            label="rotation error to the goal")
    for k, ts in enumerate(rec.success_times()):
        ax.axvline(ts - t0, color="tab:green", lw=1, alpha=0.7,
                   label="success" if k == 0 else None)
    if threshold is not None:
        ax.axhline(np.degrees(threshold), color="k", ls="--", lw=0.8,
                   label=f"success < {np.degrees(threshold):.0f}°")
    ax.set_xlabel("time in trial (s)")
    ax.set_ylabel("degrees")
    ax.set_ylim(0, 185)
    ax.set_title(f"trial {rec.trial}: {rec.final_successes} successes, {rec.end_reason}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def actuator_series(rec: TrialRecord, actuator: str) -> tuple[np.ndarray, ...] | None:
    """(t measured, measured, t commanded, commanded) of one actuator (coupled actuators are
    measured as the sum of their joints, as the command means), or None if absent."""
    if rec.hand is None or not len(rec.commands) or actuator not in rec.hand.actuator_names:
        return None
    a = list(rec.hand.actuator_names).index(actuator)
    if rec.commands.shape[1] != rec.hand.n_actuators:
        return None
    measured = rec.joints @ rec.hand.actuation_matrix()[a]
    return rec.t_joints, measured, rec.t_commands, rec.commands[:, a]


def plot_joint(rec: TrialRecord, actuator: str, path: Path) -> Path | None:
    s = actuator_series(rec, actuator)
    if s is None:
        return None
    plt = _plt()
    t_m, m, t_c, c = s
    t0 = min(t_m[0] if len(t_m) else 0.0, t_c[0] if len(t_c) else 0.0)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.step(t_c - t0, c, where="post", lw=1.2, label="commanded")
    ax.plot(t_m - t0, m, lw=1.2, label="measured")
    ax.set_xlabel("time in trial (s)")
    ax.set_ylabel(f"{actuator} (rad)")
    ax.set_title(f"trial {rec.trial}: {actuator} commanded vs measured")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def vision_summary(records: list[TrialRecord]) -> dict[str, float] | None:
    """Mean/median rotation (deg) and position (mm) error of the estimates over all trials."""
    rot, pos = [], []
    for r in records:
        _, a, b = r.vision_errors
        rot.append(a)
        pos.append(b)
    if not rot or not sum(len(a) for a in rot):
        return None
    a, b = np.degrees(np.concatenate(rot)), 1000 * np.concatenate(pos)
    return {"estimates": len(a), "rotation_mean_deg": float(a.mean()),
            "rotation_median_deg": float(np.median(a)), "position_mean_mm": float(b.mean()),
            "position_median_mm": float(np.median(b))}


def plot_vision(rec: TrialRecord, path: Path) -> Path | None:
    t, rot, pos = rec.vision_errors
    if not len(t):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(t - t[0], np.degrees(rot), color="tab:purple", lw=1.2, label="rotation (°)")
    ax.set_ylabel("rotation error (°)")
    ax.set_xlabel("time in trial (s)")
    ax2 = ax.twinx()
    ax2.plot(t - t[0], 1000 * pos, color="tab:brown", lw=1.0, label="position (mm)")
    ax2.set_ylabel("position error (mm)")
    ax.set_title(f"trial {rec.trial}: pose estimate vs truth (mean {np.degrees(rot).mean():.1f}°,"
                 f" {1000 * pos.mean():.1f} mm)")
    fig.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def timing_rows(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """Percentiles (ms) each node last reported on /diagnostics during the run."""
    diags: dict[str, dict[str, str]] = {}
    for r in records:  # the last trial's last report wins (counts cover the whole run)
        diags.update(r.diagnostics)
    rows = []
    for node, items in TIMING_KEYS.items():
        d = diags.get(node, {})
        for label, key in items:
            vals = {q: _float(d.get(f"{key}_{q}_ms")) for q in ("p50", "p99", "max")}
            if any(np.isfinite(v) for v in vals.values()):
                rows.append({"node": node, "what": label, **vals,
                             "count": d.get(f"{key}_count", "")})
    return rows


def _float(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def plot_timing(rows: list[dict[str, Any]], path: Path) -> Path | None:
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.42 * len(rows)))
    y = np.arange(len(rows))
    for off, q, color in ((-0.2, "p50", "tab:blue"), (0.0, "p99", "tab:orange"),
                          (0.2, "max", "tab:red")):
        ax.barh(y + off, [r[q] for r in rows], height=0.2, color=color, label=q)
    ax.set_yticks(y, [f"{r['what']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ms (as reported on /diagnostics)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k)))}</td>" for _, k in cols)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.2f}"
    return "" if v is None else str(v)


def build_report(run_dir: str | Path, out: str | Path | None = None, actuator: str | None = None,
                 video: bool = True, threshold: float | None = None,
                 progress: bool = False) -> Path:
    """Write the report; returns the path of ``index.html``."""
    from tqdm import tqdm

    bags = find_trials(run_dir)
    out = Path(out) if out else bags[0].parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    records = [load_trial(b) for b in tqdm(bags, desc="read bags", disable=not progress)]
    hand = next((r.hand for r in records if r.hand is not None), None)
    if threshold is None and hand is not None:
        from dex_common.trial import TrialConfig

        threshold = TrialConfig().success_threshold
    if actuator is None and hand is not None:
        actuator = hand.actuator_names[0]
    rows = [trial_row(r) for r in records]
    summary = summarize(rows)
    first = records[0].outcome
    meta = {"run": str(Path(run_dir)), "hand": hand.name if hand else "?",
            "mode": first.get("mode", ""), "controller": first.get("controller", ""),
            "policy model sha256": first.get("policy_model_sha256", "")[:16],
            "pose model sha256": first.get("pose_model_sha256", "")[:16],
            "success threshold": f"{threshold:.2f} rad" if threshold else "?",
            # bags from before the trial node recorded it were all judged with uniform goals
            "goal rule": first.get("goal_rule") or "uniform"}
    plot_outcomes({"rows": rows, "hand": meta["hand"], "controller": meta["controller"],
                   "rules": {"success_threshold_rad": threshold, "goal_rule": meta["goal rule"]}},
                  out / "outcomes.png")
    timing = timing_rows(records)
    plot_timing(timing, out / "timing.png")
    vision = vision_summary(records)
    sections = []
    renderer = None
    if video and hand is not None:
        from dex_bringup.trial_video import TrialRenderer

        renderer = TrialRenderer(hand.name)
    try:
        for rec in tqdm(records, desc="plots and videos", disable=not progress):
            stem = f"trial_{rec.trial:03d}" if rec.trial >= 0 else rec.path.name
            parts = [f"<h3>{html.escape(stem)}: {rec.final_successes} successes, "
                     f"{html.escape(rec.end_reason)}</h3>"]
            if renderer is not None:
                parts.append(_videos(rec, out, stem, renderer, first=not sections))
            parts.append(_img(plot_rotation(rec, out / f"{stem}_rotation.png", threshold)))
            if actuator:
                parts.append(_img(plot_joint(rec, actuator, out / f"{stem}_joint.png")))
            parts.append(_img(plot_vision(rec, out / f"{stem}_vision.png")))
            sections.append("\n".join(p for p in parts if p))
    finally:
        if renderer is not None:
            renderer.close()
    s = summary
    table3 = (f"consecutive successes: mean {s['mean']:.2f} ± {s['sd']:.2f} (sd), median "
              f"{s['median']:.1f} over {s['trials']} trials; drops {s['drops']}, timeouts "
              f"{s['timeouts']}, completed {s['completed']}<br>sorted: {s['sorted']}")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dex report: {html.escape(meta['run'])}</title>
<style>body{{font-family:sans-serif;max-width:980px;margin:1em auto}}table{{border-collapse:
collapse}}td,th{{border:1px solid #bbb;padding:2px 8px;text-align:right}}img,video{{max-width:
100%}}</style></head><body>
<h1>dex report</h1>
{_table([meta], [(k, k) for k in meta])}
<h2>Trials</h2>
<p id="table3">{table3}</p>
{_table(rows, [("trial", "trial"), ("seed", "seed"), ("successes", "successes"),
               ("end reason", "end_reason"), ("steps", "steps"), ("duration (s)", "duration_s"),
               ("bag", "bag")])}
{_img(out / "outcomes.png")}
<h2>Vision</h2>
{_table([vision], [(k, k) for k in vision]) if vision else "<p>no pose estimates recorded "
 "(state mode)</p>"}
<h2>Timing</h2>
{_table(timing, [("node", "node"), ("what", "what"), ("p50 ms", "p50"), ("p99 ms", "p99"),
                 ("max ms", "max"), ("count", "count")]) if timing else "<p>none reported</p>"}
{_img(out / "timing.png") if timing else ""}
<h2>Per trial</h2>
{"".join(f'<section class="trial">{x}</section>' for x in sections)}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                  "rows": rows, "vision": vision,
                                                  "timing": timing}, indent=1))
    return index


def _img(path: Path | None) -> str:
    return f'<img src="{html.escape(path.name)}" alt="{html.escape(path.stem)}">' if path else ""


def _videos(rec: TrialRecord, out: Path, stem: str, renderer, first: bool) -> str:
    """Write the trial's MP4 and WebM (one rendering); the first trial also gets the contact
    sheet. Returns the HTML that embeds them."""
    import cv2

    from dex_bringup.trial_video import FOURCC, contact_sheet, frames, open_writer, playback_fps

    fps = playback_fps(rec)
    size = (renderer.width, renderer.height)
    writers = [open_writer(out / f"{stem}{ext}", fps, size) for ext in FOURCC]
    kept: list[np.ndarray] = []
    n = 0
    try:
        for img in frames(rec, renderer):
            bgr = img[:, :, ::-1]
            for w in writers:
                w.write(bgr)
            kept.append(img)
            n += 1
    finally:
        for w in writers:
            w.release()
    parts = [f'<video controls muted src="{stem}.webm" width="{renderer.width}"></video>'
             f'<p><a href="{stem}.mp4">{stem}.mp4</a> ({n} frames, {fps:.1f} fps)</p>']
    if first and kept:
        pick = np.linspace(0, len(kept) - 1, min(8, len(kept))).round().astype(int)
        cv2.imwrite(str(out / "contact_sheet.png"),
                    contact_sheet([kept[i] for i in pick])[:, :, ::-1])
        parts.append(_img(out / "contact_sheet.png"))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dex report", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory (trial_000, ...), a bag, or a parent of runs "
                                   "(the newest run)")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/report)")
    p.add_argument("--actuator", default=None,
                   help="actuator for the commanded-vs-measured plot (default: the hand's first "
                        "actuator in registry order)")
    p.add_argument("--no-video", action="store_true", help="skip the videos (faster)")
    a = p.parse_args(argv)
    try:
        index = build_report(a.run_dir, a.out, a.actuator, video=not a.no_video, progress=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"dex report: {e}", file=sys.stderr)
        return 2
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
