"""The ``dex`` command: start the node graph with no ROS 2 distro (``python -m dex_bringup.cli``).

    dex run   [--mode lockstep|realtime] [--source vision|state] [--trials N] [--seed S] [--record DIR]
    dex run   --hardware --hand leap --hand-port /dev/ttyUSB0 --camera-sources cam0=0,cam1=2,cam2=4
    dex demo  [--trials 3] [--source vision] [--seed 0] [--out runs/demo]
    dex graph [same options as run]     # print the node graph (what run/launch start)
    dex bench [--steps N]               # per-node step time and loop latency
    dex report RUN_DIR [--no-video]     # HTML page, plots and a video per trial, from the bags
    dex replay RUN_DIR [--consumer perception|policy --model M]   # republish; re-run a model
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from dex_bringup.graph import (
    CONTROLLERS,
    GraphError,
    NodeSpec,
    camera_remaps_from_text,
    camera_sources_from_text,
    describe,
    hardware_graph,
    parse_param,
    sim_graph,
)
from dex_bringup.procs import DEFAULT_ENV, ProcessGroup
from dex_bringup.supervise import RespawnPolicy, RunOutcome, run_graph, start_order
from dex_common.trial import GOAL_RULES


def _apply_env_defaults() -> None:
    # The monitor node lives in this process: same discovery settings as the children.
    for k, v in DEFAULT_ENV.items():
        os.environ.setdefault(k, v)


def _extra(params: list[str]) -> dict[str, dict[str, object]]:
    """``--param node.key=value`` options -> {node: {key: value}}."""
    out: dict[str, dict[str, object]] = {}
    for p in params:
        if "=" not in p or "." not in p.split("=", 1)[0]:
            raise GraphError(f"bad --param {p!r}; expected NODE.KEY=VALUE, e.g. dex_policy.slop=0.01")
        lhs, value = p.split("=", 1)
        node, key = lhs.split(".", 1)
        out.setdefault(node, {})[key] = parse_param(value)
    return out


def graph_from_args(args: argparse.Namespace, record_dir: str | None) -> list[NodeSpec]:
    if getattr(args, "hardware", False):
        return _hardware_graph_from_args(args, record_dir)
    return sim_graph(
        hand=args.hand,
        mode=args.mode,
        pose_source=args.source,
        num_trials=args.trials,
        seed=args.seed,
        record_dir=record_dir,
        policy_model=args.policy_model,
        pose_model=args.pose_model,
        extra=_extra(args.param),
        controller=args.controller,
        view_port=args.view_port if getattr(args, "view", False) else None,
        goal_rule=args.goal_rule,
    )


def _hardware_graph_from_args(args: argparse.Namespace, record_dir: str | None) -> list[NodeSpec]:
    """``--hardware``: what hardware.launch.py starts, for users without a ROS 2 distro."""
    wrong = [opt for opt, bad in (("--mode", args.mode != "lockstep"),
                                  ("--source state", args.source != "vision"),
                                  ("--view", getattr(args, "view", False))) if bad]
    if wrong:
        raise GraphError(f"--hardware runs in wall time, judged by vision, without a view: "
                         f"{', '.join(wrong)} does not apply")
    return hardware_graph(
        hand=args.hand,
        num_trials=args.trials,
        seed=args.seed,
        record_dir=record_dir,
        camera_remaps=camera_remaps_from_text(args.cameras, args.hand),
        policy_model=args.policy_model,
        pose_model=args.pose_model,
        extra=_extra(args.param),
        controller=args.controller,
        hand_port=args.hand_port or None,
        camera_sources=camera_sources_from_text(args.camera_sources, args.hand),
        calibration_dir=args.calibration_dir or None,
        goal_rule=args.goal_rule,
    )


def _add_graph_args(p: argparse.ArgumentParser, trials: int = 3, mode: bool = True) -> None:
    p.add_argument("--hand", default="shadow")
    if mode:
        p.add_argument("--mode", default="lockstep", help="lockstep | realtime")
        hw = p.add_argument_group(
            "real hand", "--hardware starts the real-hand graph (wall time, vision-judged), as "
            "hardware.launch.py does; docs/real_leap_hand.md")
        hw.add_argument("--hardware", action="store_true", help="the real-hand graph, no sim")
        hw.add_argument("--hand-port", default="", metavar="PORT",
                        help="serial port of a LEAP hand: start dex_hardware's driver (default: "
                             "the hand's own ros2_control stack publishes /joint_states)")
        hw.add_argument("--camera-sources", default="", metavar="NAME=SOURCE,...",
                        help="start dex_hardware camera nodes (OpenCV source: device index, "
                             "/dev/videoN, video file, URL)")
        hw.add_argument("--calibration-dir", default="", metavar="DIR",
                        help="NAME.json per camera from dex-calibrate-camera")
        hw.add_argument("--cameras", default="", metavar="NAME=TOPIC,...",
                        help="external camera drivers' image topic per registry camera")
    p.add_argument("--source", default="vision", help="vision (CNN pose) | state (ground truth)")
    p.add_argument("--trials", type=int, default=trials)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--goal-rule", default="uniform", choices=GOAL_RULES,
                   help="uniform: each goal uniform over SO(3) (Dactyl); far90: each new goal at "
                        "least 90 deg from the last (DROP)")
    p.add_argument("--controller", default="onnx", choices=CONTROLLERS,
                   help="onnx: the LSTM policy model; mpc: the sampling-MPC planner (slower "
                        "than real time on 2 cores: use lockstep)")
    p.add_argument("--policy-model", default=None, help="ONNX policy (default: the packaged one)")
    p.add_argument("--pose-model", default=None, help="ONNX pose model (default: packaged)")
    p.add_argument("--view", action="store_true",
                   help="serve a live 3D view on a local Foxglove WebSocket (ws://127.0.0.1:PORT; "
                        "layout: dex_bringup/foxglove/dex_layout.json)")
    p.add_argument("--view-port", type=int, default=8765, help="port of --view (default 8765)")
    p.add_argument("--respawn", action="store_true",
                   help="restart a node that dies (up to 3 times each); the trials resume at "
                        "the first one that did not end")
    p.add_argument(
        "--param", action="append", default=[], metavar="NODE.KEY=VALUE",
        help="extra node parameter, e.g. dex_trial.goal_timeout_s=4.0 or "
             "dex_trial.goal_rule=far90 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dex", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start the graph (sim, or the real hand with --hardware) "
                         "until its trials are done or Ctrl-C")
    _add_graph_args(run)
    run.add_argument("--record", default=None, metavar="DIR", help="write one bag per trial here")
    run.add_argument("--timeout", type=float, default=math.inf, metavar="S",
                     help="stop the graph after S wall-clock seconds (default: no limit)")
    run.add_argument("--keep-running", action="store_true",
                     help="keep the graph up after the trial node reports 'finished' (until "
                     "Ctrl-C)")
    demo = sub.add_parser("demo", help="run trials in lockstep and print the results")
    _add_graph_args(demo, mode=False)
    demo.add_argument("--out", default="runs/demo", help="bags go to OUT/<timestamp>/trial_NNN")
    demo.add_argument("--timeout", type=float, default=900.0, help="overall wall-clock limit, s")
    demo.add_argument("--quiet-nodes", action="store_true", help="only show node warnings/errors")
    demo.add_argument("--no-report", action="store_true",
                      help="skip the report (OUT/<timestamp>/report: page, plots, videos)")
    graph = sub.add_parser("graph", help="print the node graph")
    _add_graph_args(graph)
    graph.add_argument("--record", default=None, metavar="DIR")
    bench = sub.add_parser("bench", help="per-node step time and loop latency (lockstep)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    recover = sub.add_parser("bag-recover", help="make the bags of a killed recorder readable "
                             "(keeps each original as <bag>.damaged)")
    recover.add_argument("dirs", nargs="+", metavar="DIR", help="a bag, or a directory of bags")
    sub.add_parser("report", add_help=False,
                   help="HTML page, plots and a video per trial of a recorded run (dex report -h)")
    sub.add_parser("replay", add_help=False,
                   help="republish a recorded run's inputs; re-run a model on them and compare "
                        "(dex replay -h)")
    return ap


# After 'finished', in-flight messages (the trial's last status, a diagnostics round) still have
# to reach the recorder and the monitor before the graph is stopped; with a recorder, until it
# reports every trial's bag closed (it waits for streams still in flight), at most SETTLE_MAX_S.
SETTLE_S = 1.0
SETTLE_MAX_S = 10.0


def recorder_closed_all(monitor: object) -> bool:
    """The recorder's last /diagnostics says every trial the monitor saw has its bag closed."""
    diag = monitor.core.diagnostics.get("dex_recorder")
    if diag is None:
        return False
    try:
        return int(diag[2].get("closed_trials", -1)) >= len(monitor.core.rows)
    except ValueError:
        return False


def run_graph_with_monitor(
    nodes: list[NodeSpec],
    hand: str,
    vision: bool,
    timeout: float = math.inf,
    quiet: bool = False,
    keep_running: bool = False,
    respawn: bool = False,
) -> tuple[object, RunOutcome]:
    """Start ``nodes`` and watch them with a monitor node until the trial node reports
    ``finished`` (the one run loop of every ``dex`` command: ``supervise.run_graph``). Returns
    the monitor node (its ``core`` holds the trial rows) and the outcome; the recorder must
    have closed its bags cleanly, and at least one trial must have been reported."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from dex_bringup.ros_monitor import MonitorNode

    _apply_env_defaults()

    def progress(line: str) -> None:
        print(f"[dex] {line}", flush=True)

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = MonitorNode(hand=hand, vision=vision, progress=progress)
    group = ProcessGroup(start_order(nodes), line_filter=_node_line_filter(quiet))
    recording = any(n.name == "dex_recorder" for n in nodes)
    print(f"[dex] starting {', '.join(n.name for n in group.specs)} (Ctrl-C stops)", flush=True)
    try:
        out = run_graph(
            group, monitor, lambda: rclpy.spin_once(monitor, timeout_sec=0.05),
            lambda: monitor.core.finished, keep_running=keep_running, timeout_s=timeout,
            settle_s=SETTLE_S, settle_max_s=SETTLE_MAX_S,
            settled=(lambda: recorder_closed_all(monitor)) if recording else (lambda: True),
            respawn=RespawnPolicy() if respawn else None,
            trials_done=monitor.core.next_trial, progress=progress, heartbeat_s=15.0,
            heartbeat=lambda: "received " + (", ".join(
                f"{k} {v}" for k, v in sorted(monitor.counts.items())) or "nothing yet"))
    finally:
        monitor.destroy_node()
        rclpy.shutdown()
    if out.interrupted:
        progress("stopped (interrupted)")
    elif out.note:
        progress(out.note)
    rec = [c for c in group.children if c.name == "dex_recorder"]
    if rec and out.codes.get("dex_recorder") != 0 and not out.problems:
        out.problems.append(group.describe_exit(rec[0]))  # the bags must close cleanly
    if not monitor.core.rows and not out.interrupted:
        out.problems.append("no trial was reported on /trial/status")
    return monitor, out


def _node_line_filter(quiet: bool):
    if not quiet:
        return None
    return lambda _name, line: any(w in line for w in ("WARN", "ERROR", "Traceback", "Error", "FATAL"))


# ---- dex run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    nodes = graph_from_args(args, args.record)
    vision = any(n.package == "dex_perception" for n in nodes)
    monitor, out = run_graph_with_monitor(nodes, args.hand, vision, timeout=args.timeout,
                                          keep_running=args.keep_running, respawn=args.respawn)
    print(f"[dex] exit codes: {out.codes}", flush=True)
    if out.problems:
        print("[dex] " + "\n".join(out.problems), file=sys.stderr, flush=True)
    if monitor.core.rows:
        print(monitor.core.table())
    _print_restarts(out)
    return 1 if out.problems else 0


def _print_restarts(out: RunOutcome) -> None:
    for r in out.restarts:
        print(f"[dex] restart at {r.at_s:.1f} s: {r.died} died ({r.how}); restarted "
              f"{', '.join(r.started)}"
              + (f", trials resumed at trial {r.first_trial}" if r.first_trial is not None
                 else ""))


def print_bags(bag_root: Path) -> list[str]:
    """Read each bag back with rosbags and print topic counts; returns problems."""
    from dex_bringup.bagging import read_bag

    problems = []
    bags = sorted(p for p in bag_root.glob("*") if (p / "metadata.yaml").exists())
    if not bags:
        return [f"no bags in {bag_root}"]
    for bag in bags:
        try:
            counts, custom = read_bag(bag)
        except Exception as exc:
            problems.append(f"could not read {bag}: {exc}")
            continue
        outcome = ", ".join(f"{k}={custom[k]}" for k in ("successes", "end_reason", "steps") if k in custom)
        print(f"  {bag}  ({sum(counts.values())} messages{'; ' + outcome if outcome else ''})")
        for topic in sorted(counts):
            print(f"      {counts[topic]:>6}  {topic}")
    return problems


def cmd_demo(args: argparse.Namespace) -> int:
    bag_root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    args.mode = "lockstep"
    nodes = graph_from_args(args, str(bag_root))
    print("[dex] demo graph:\n" + describe(nodes), flush=True)
    vision = any(n.package == "dex_perception" for n in nodes)
    t0 = time.monotonic()
    monitor, out = run_graph_with_monitor(nodes, args.hand, vision, args.timeout,
                                          quiet=args.quiet_nodes, respawn=args.respawn)
    problems = out.problems
    wall = time.monotonic() - t0
    core = monitor.core
    print(f"\n=== dex demo: {len(core.rows)} trial(s), source {args.source}, {wall:.0f} s wall ===")
    print(core.table())
    _print_restarts(out)
    print("\nper-node /diagnostics (last report):")
    print(core.diagnostics_table())
    print(f"\nbags in {bag_root}:")
    problems += print_bags(bag_root)
    if not core.trials_ok():
        problems.append("not every trial ended")
    if not problems and not args.no_report:
        from dex_bringup.report import build_report

        index = build_report(bag_root, progress=True)
        print(f"\nreport: {index} (videos, plots; open it in a browser)")
    if problems:
        print("\n[dex] DEMO FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\n[dex] demo ok")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # bench has its own parser (argparse REMAINDER drops --options)
        from dex_bringup.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["report"]:
        from dex_bringup.report import main as report_main

        return report_main(argv[1:])
    if argv[:1] == ["replay"]:
        from dex_bringup.replay import main as replay_main

        return replay_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "graph":
            print(describe(graph_from_args(args, args.record)))
            return 0
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "demo":
            return cmd_demo(args)
        if args.cmd == "bag-recover":
            from dex_bringup.bag_recover import main as recover_main

            return recover_main(args.dirs)
    except GraphError as exc:
        print(f"dex: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
