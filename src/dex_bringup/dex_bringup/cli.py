"""The ``dex`` command: start the node graph with no ROS 2 distro (``python -m dex_bringup.cli``).

    dex run   [--mode lockstep|realtime] [--source vision|state] [--trials N] [--seed S] [--record DIR]
    dex demo  [--trials 3] [--source vision] [--seed 0] [--out runs/demo]
    dex graph [same options as run]     # print the node graph (what run/launch start)
    dex bench [--steps N]               # per-node step time and loop latency
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dex_bringup.graph import CONTROLLERS, GraphError, NodeSpec, describe, parse_param, sim_graph
from dex_bringup.procs import DEFAULT_ENV, ProcessGroup


class _Stop(Exception):
    """SIGTERM/SIGINT received by the dex command itself."""


def _raise_stop(_sig: int, _frame: object) -> None:
    raise _Stop()


def _install_signals() -> None:
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)


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
    )


def start_order(nodes: list[NodeSpec]) -> list[NodeSpec]:
    """Consumers before producers (recorder, policy, perception, then the sim)."""
    return list(reversed(nodes))


def readiness_checks(nodes: list[NodeSpec]) -> list[tuple[str, str, int]]:
    """(``pub``|``sub``, topic, minimum count) that show the non-sim nodes are on the graph.

    A watcher node (demo monitor, test tap) that subscribes /trial/status itself counts too.
    """
    names = {n.name for n in nodes}
    checks: list[tuple[str, str, int]] = []
    if "dex_policy" in names:
        checks += [("pub", "/trial/status", 1), ("pub", "/policy/action", 1), ("sub", "/joint_states", 1)]
    if "dex_perception" in names:
        checks.append(("pub", "/object/pose", 1))
    if "dex_recorder" in names:
        checks.append(("sub", "/trial/status", 2))
    return checks


def start_staged(group: ProcessGroup, watcher: object, spin: object, timeout: float = 60.0) -> list[str]:
    """Start every node but the sim, wait until ``watcher`` (an rclpy node) sees them on the
    graph, then start the sim: in lockstep the first trial starts as soon as the sim sees the
    policy, so the monitor and the recorder must already be matched or trial 0 goes unseen.
    Returns problems (empty when ready)."""
    sim_names = [s.name for s in group.specs if s.package == "dex_sim"]
    # The watcher (monitor, test tap) must see trial 0 too: the sim waits for it as well.
    for spec in group.specs:
        if spec.name in sim_names and hasattr(watcher, "get_name"):
            waits = [n for n in str(spec.parameters.get("wait_nodes", "")).split(",") if n]
            if watcher.get_name() not in waits:
                spec.parameters["wait_nodes"] = ",".join([*waits, watcher.get_name()])
    group.start([s.name for s in group.specs if s.name not in sim_names])
    checks = readiness_checks(group.specs)
    deadline = time.monotonic() + timeout
    missing = checks
    while time.monotonic() < deadline:
        spin()
        if group.dead():
            return [group.describe_exit(c) for c in group.dead()]
        missing = [
            (kind, topic, n)
            for kind, topic, n in checks
            if (watcher.count_publishers(topic) if kind == "pub" else watcher.count_subscribers(topic)) < n
        ]
        if not missing:
            break
    else:
        return [f"nodes not on the graph after {timeout:.0f} s: missing {missing}"]
    end = time.monotonic() + 0.5  # let the new endpoints match both ways
    while time.monotonic() < end:
        spin()
    group.start()
    return []


def _add_graph_args(p: argparse.ArgumentParser, trials: int = 3, mode: bool = True) -> None:
    p.add_argument("--hand", default="shadow")
    if mode:
        p.add_argument("--mode", default="lockstep", help="lockstep | realtime")
    p.add_argument("--source", default="vision", help="vision (CNN pose) | state (ground truth)")
    p.add_argument("--trials", type=int, default=trials)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--controller", default="onnx", choices=CONTROLLERS,
                   help="onnx: the LSTM policy model; mpc: the sampling-MPC planner (slower "
                        "than real time on 2 cores: use lockstep)")
    p.add_argument("--policy-model", default=None, help="ONNX policy (default: the packaged one)")
    p.add_argument("--pose-model", default=None, help="ONNX pose model (default: packaged)")
    p.add_argument(
        "--param", action="append", default=[], metavar="NODE.KEY=VALUE",
        help="extra node parameter, e.g. dex_policy.goal_timeout_s=4.0 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dex", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="start the simulated graph until its trials are done or Ctrl-C")
    _add_graph_args(run)
    run.add_argument("--record", default=None, metavar="DIR", help="write one bag per trial here")
    run.add_argument("--keep-running", action="store_true",
                     help="keep the graph up after the policy reports 'finished' (until Ctrl-C)")
    demo = sub.add_parser("demo", help="run trials in lockstep and print the results")
    _add_graph_args(demo, mode=False)
    demo.add_argument("--out", default="runs/demo", help="bags go to OUT/<timestamp>/trial_NNN")
    demo.add_argument("--timeout", type=float, default=900.0, help="overall wall-clock limit, s")
    demo.add_argument("--quiet-nodes", action="store_true", help="only show node warnings/errors")
    graph = sub.add_parser("graph", help="print the node graph")
    _add_graph_args(graph)
    graph.add_argument("--record", default=None, metavar="DIR")
    bench = sub.add_parser("bench", help="per-node step time and loop latency (lockstep)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    recover = sub.add_parser("bag-recover", help="make the bags of a killed recorder readable "
                             "(keeps each original as <bag>.damaged)")
    recover.add_argument("dirs", nargs="+", metavar="DIR", help="a bag, or a directory of bags")
    return ap


# After 'finished', in-flight messages (the trial's last status, a diagnostics round) still have
# to reach the recorder and the monitor before the graph is stopped.
SETTLE_S = 1.0


def _settle(spin: Callable[[], None], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        spin()


# ---- dex run -------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from dex_bringup.ros_monitor import MonitorNode

    nodes = graph_from_args(args, args.record)
    _apply_env_defaults()
    group = ProcessGroup(start_order(nodes))
    print(f"[dex] starting {', '.join(n.name for n in group.specs)} (Ctrl-C stops)", flush=True)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    vision = any(n.package == "dex_perception" for n in nodes)
    monitor = MonitorNode(args.hand, vision, progress=lambda line: print(f"[dex] {line}", flush=True))
    _install_signals()
    code = 0
    try:
        def spin() -> None:
            rclpy.spin_once(monitor, timeout_sec=0.05)

        problems = start_staged(group, monitor, spin)
        if problems:
            print("[dex] " + "\n".join(problems), file=sys.stderr, flush=True)
            code = 1
        while not problems:
            spin()
            if monitor.core.finished and not args.keep_running:
                print("[dex] all trials done; stopping the graph", flush=True)
                _settle(spin, SETTLE_S)
                break
            dead = group.dead()
            if dead:
                c = dead[0]
                if c.returncode() == 0:
                    print(f"[dex] {c.name} exited normally; stopping the graph", flush=True)
                else:
                    print("[dex] " + group.describe_exit(c), file=sys.stderr, flush=True)
                    code = 1
                break
    except _Stop:
        print("[dex] stopping", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        codes = group.stop()
        monitor.destroy_node()
        rclpy.shutdown()
        print(f"[dex] stopped: {codes}", flush=True)
        if monitor.core.rows:
            print(monitor.core.table())
    return code


# ---- dex demo ------------------------------------------------------------------------------------
def _node_line_filter(quiet: bool):
    if not quiet:
        return None
    return lambda _name, line: any(w in line for w in ("WARN", "ERROR", "Traceback", "Error", "FATAL"))


def run_graph_with_monitor(
    nodes: list[NodeSpec],
    hand: str,
    vision: bool,
    timeout: float,
    quiet: bool = False,
    settle_s: float = SETTLE_S,
) -> tuple[object, dict[str, int | None], list[str]]:
    """Start ``nodes``, watch them with a monitor node until the policy reports ``finished``.

    Returns (monitor node, exit codes, problems). Problems are empty on success.
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from dex_bringup.ros_monitor import MonitorNode

    _apply_env_defaults()
    problems: list[str] = []

    def progress(line: str) -> None:
        print(f"[dex] {line}", flush=True)

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    monitor = MonitorNode(hand=hand, vision=vision, progress=progress)
    group = ProcessGroup(start_order(nodes), line_filter=_node_line_filter(quiet))
    _install_signals()
    t0 = time.monotonic()
    last_note = t0
    try:
        problems += start_staged(group, monitor, lambda: rclpy.spin_once(monitor, timeout_sec=0.05))
        while not problems:
            rclpy.spin_once(monitor, timeout_sec=0.05)
            if monitor.core.finished:
                _settle(lambda: rclpy.spin_once(monitor, timeout_sec=0.05), settle_s)
                break
            dead = group.dead()
            if dead:
                for c in dead:
                    problems.append(group.describe_exit(c))
                break
            now = time.monotonic()
            if now - t0 > timeout:
                problems.append(f"timeout: the policy did not report 'finished' within {timeout:.0f} s")
                break
            if now - last_note > 15.0:
                last_note = now
                seen = ", ".join(f"{k} {v}" for k, v in sorted(monitor.counts.items())) or "nothing yet"
                progress(f"{now - t0:.0f} s: received {seen}")
    except _Stop:
        problems.append("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        codes = group.stop()
        for c in group.children:  # the recorder must close its bags cleanly
            if c.name == "dex_recorder" and codes.get(c.name) != 0 and not problems:
                problems.append(group.describe_exit(c))
        monitor.destroy_node()
        rclpy.shutdown()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not monitor.core.rows:
        problems.append("no trial was reported on /trial/status")
    return monitor, codes, problems


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
    monitor, _codes, problems = run_graph_with_monitor(
        nodes, args.hand, vision, args.timeout, quiet=args.quiet_nodes
    )
    wall = time.monotonic() - t0
    core = monitor.core
    print(f"\n=== dex demo: {len(core.rows)} trial(s), source {args.source}, {wall:.0f} s wall ===")
    print(core.table())
    print("\nper-node /diagnostics (last report):")
    print(core.diagnostics_table())
    print(f"\nbags in {bag_root}:")
    problems += print_bags(bag_root)
    if not core.trials_ok():
        problems.append("not every trial ended")
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
