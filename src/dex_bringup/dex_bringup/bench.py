"""``dex bench``: per-node step time and loop latency of the lockstep graph (a script, not a test).

Runs the real graph (sim with images, perception, policy) for ``--steps`` control steps, then
measures references in the same process and run: raw ONNX Runtime inference of the two default
models and raw MuJoCo rendering of the cameras. Prints p50/p99 ms and each node's ratio to its
reference (how much the ROS plumbing adds around the pure compute).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from dex_bringup.graph import sim_graph
from dex_bringup.monitor import percentiles_ms


def default_model(package: str, filename: str) -> Path | None:
    try:
        p = Path(str(resources.files(package) / "models" / filename))
    except ModuleNotFoundError:
        return None
    return p if p.exists() else None


def time_calls(fn, n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def onnx_reference(path: Path, n: int, threads: int = 2) -> list[float]:
    """Raw ONNX Runtime batch-1 inference of a model with zero/constant inputs."""
    from dex_common.ort_session import cpu_session

    sess = cpu_session(path, threads)  # the nodes' own session options
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        dtype = np.uint8 if "uint8" in i.type else np.float32
        feeds[i.name] = np.full(shape, 100 if dtype == np.uint8 else 0.0, dtype=dtype)
    return time_calls(lambda: sess.run(None, feeds), n)


def render_reference(hand: str, n: int) -> tuple[list[float], list[float]]:
    """(render all cameras, one physics control step) wall times with dex_sim's core.

    Each render follows a physics step, as in the node: the same state rendered back to back
    runs ~4x faster here (6.6 vs 25-32 ms with EGL's software rasterizer, which idles between
    frames), so that would flatter the reference."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dex_description.registry import get_hand
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim(hand, render=True)
    sim.reset(0)
    cams = get_hand(hand).camera_names
    step = time_calls(sim.step_control, n)

    def render_after_step() -> float:
        sim.step_control()
        t = time.perf_counter()
        for c in cams:
            sim.render(c)
        return time.perf_counter() - t

    render = [render_after_step() for _ in range(5 + n)][5:]  # the first ones make contexts
    return render, step


def _row(name: str, samples: list[float] | tuple[float, float], ref: tuple[float, float] | None) -> str:
    p50, p99 = samples if isinstance(samples, tuple) else percentiles_ms(samples)
    ratio = f"{p50 / ref[0]:.2f}x" if ref and ref[0] > 0 and p50 == p50 else ""
    return f"{name:<44} {p50:>9.2f} {p99:>9.2f} {ratio:>8}"


def diag_timings(values: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Every ``<name>_p50_ms`` / ``<name>_p99_ms`` pair of a diagnostics status -> (p50, p99)."""
    out = {}
    for key, text in values.items():
        if not key.endswith("_p50_ms"):
            continue
        name = key[: -len("_p50_ms")]
        try:
            out[name] = (float(text), float(values.get(name + "_p99_ms", "nan")))
        except ValueError:
            continue
    return out


# (node status name, timing name) -> the reference it is compared with
REFERENCES = {
    ("dex_policy", "step"): "policy ONNX",
    ("dex_policy", "inference"): "policy ONNX",
    ("dex_perception", "inference"): "pose ONNX",
    ("dex_perception", "step"): "pose ONNX",
    ("dex_sim", "render"): "render all cameras",
    ("dex_sim", "physics"): "physics control step",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dex bench", description=__doc__)
    ap.add_argument("--steps", type=int, default=200, help="control steps to time in the graph")
    ap.add_argument("--hand", default="shadow")
    ap.add_argument("--source", default="vision")
    ap.add_argument("--ref-n", type=int, default=100, help="calls per reference measurement")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args(argv)

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from dex_bringup.procs import DEFAULT_ENV, ProcessGroup
    from dex_bringup.ros_monitor import MonitorNode
    from dex_bringup.supervise import run_graph, start_order

    for k, v in DEFAULT_ENV.items():
        os.environ.setdefault(k, v)
    nodes = sim_graph(hand=args.hand, mode="lockstep", pose_source=args.source, num_trials=1000)
    vision = args.source == "vision"
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    mon = MonitorNode(hand=args.hand, vision=vision, name="dex_bench")
    group = ProcessGroup(start_order(nodes), line_filter=lambda _n, line: "ERROR" in line or "Traceback" in line)
    t0 = time.monotonic()
    try:
        out = run_graph(group, mon, lambda: rclpy.spin_once(mon, timeout_sec=0.05),
                        lambda: len(mon.core.latencies) >= args.steps, timeout_s=args.timeout,
                        settle_s=1.5)  # one more /diagnostics round
    finally:
        mon.destroy_node()
        rclpy.shutdown()
    problems = out.problems + (["interrupted"] if out.interrupted else [])
    wall = time.monotonic() - t0
    steps = len(mon.core.latencies)

    refs: dict[str, list[float]] = {}
    from dex_description.registry import get_hand

    name = get_hand(args.hand).name  # the models the graph loads for this hand
    pol = default_model("dex_policy", f"policy_{name}.onnx")
    pose = default_model("dex_perception", f"pose_{name}.onnx")
    if pol:
        refs["policy ONNX (raw ort, batch 1)"] = onnx_reference(pol, args.ref_n)
    if pose and vision:
        refs["pose ONNX (raw ort, batch 1)"] = onnx_reference(pose, args.ref_n)
    try:
        render, physics = render_reference(args.hand, min(args.ref_n, 50))
        if vision:
            refs["render all cameras (raw MuJoCo)"] = render
        refs["physics control step (raw MuJoCo)"] = physics
    except Exception as exc:  # the reference is optional; say why it is missing
        print(f"[bench] render reference unavailable: {exc}")

    ref50 = {k: percentiles_ms(v) for k, v in refs.items()}
    print(f"\n=== dex bench: {steps} lockstep steps in {wall:.1f} s wall ({args.source}) ===")
    print(f"{'measure':<44} {'p50 ms':>9} {'p99 ms':>9} {'vs ref':>8}")
    print(_row("loop latency (last camera -> /policy/action)", mon.core.latencies, None))
    for name, (_lvl, _msg, values) in sorted(mon.core.diagnostics.items()):
        for timing, pair in diag_timings(values).items():
            ref_name = REFERENCES.get((name, timing))
            ref = next((ref50[r] for r in ref50 if ref_name and r.startswith(ref_name)), None)
            print(_row(f"{name} {timing} (its /diagnostics)", pair, ref))
    for k, v in refs.items():
        print(_row(k, v, None))
    if problems:
        print("[bench] problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
