"""``dex replay BAG_OR_RUN_DIR``: republish a recorded trial's inputs with their original stamps,
optionally to a node running another model, and compare what it answers with the recording.

    dex replay runs/demo                               # every sensor topic, at recorded speed
    dex replay runs/demo --rate 4                      # four times faster (0: as fast as possible)
    dex replay runs/demo --consumer perception --model new_pose.onnx   # open-loop, lockstep
    dex replay runs/demo --consumer policy --model new_policy.onnx

With ``--consumer``, that node is started from the graph description with ``--model`` (default:
the packaged model) and the replay goes in lockstep by default: each step whose recording holds
an output waits for the consumer's answer with the same stamp (or ``--timeout``). Per trial it
writes ``replay/<consumer>_trial_NNN.csv`` (one row per recorded output) and ``.json`` (the
summary), and prints one line: outputs matched, differences to the recorded outputs and, for
poses, both estimates' errors against the truth. The policy consumer (the controller node) gets
the recorded goals and trial status with the states (the trial's seed with them), so with the
recorded model its commands are the recorded ones, step for step.
Works on bags of this stack and, for standard message types, on any rosbag2 MCAP/sqlite3 bag
(``--consumer none``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dex_bringup.replay_plan import (
    JOINT_STATES,
    POSE_GT,
    Consumer,
    Recorded,
    Step,
    compare,
    consumer_for,
    decode_poses,
    decode_positions,
    joint_names,
    plan_steps,
    read_recorded,
    schedule,
    summary_line,
    write_report,
)

STARTUP_TIMEOUT_S = 60.0  # a consumer node loading its model on a busy machine


class Replayer:
    """Publishes steps on raw (CDR) publishers and collects a consumer's raw answers."""

    def __init__(self, node: object, types: dict[str, str], consumer: Consumer) -> None:
        from dex_bringup.graph import message_class, topic_types
        from dex_common.ros_util import IMAGE_QOS, STATE_QOS, STATE_WRITER_QOS

        self.node = node
        self.pubs = {}
        for topic in consumer.inputs:
            cls = message_class(types[topic])
            qos = IMAGE_QOS if types[topic] == "sensor_msgs/msg/Image" else STATE_WRITER_QOS
            self.pubs[topic] = node.create_publisher(cls, topic, qos)
        self.outputs: dict[int, bytes] = {}
        self.sub = None
        if consumer.output:
            from dex_bringup.bagging import cdr_stamp_ns

            out_type = types.get(consumer.output) or topic_types()[consumer.output]

            def on_output(data: bytes) -> None:
                self.outputs[cdr_stamp_ns(data)] = data

            self.sub = node.create_subscription(message_class(out_type), consumer.output,
                                                on_output, STATE_QOS, raw=True)

    def close(self) -> None:
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)

    def wait_for_readers(self, topics: list[str], spin: Callable[[float], None],
                         timeout: float) -> list[str]:
        """Topics still without a subscriber after ``timeout`` s (empty: all matched)."""
        end = time.monotonic() + timeout
        while True:
            missing = [t for t in topics if self.pubs[t].get_subscription_count() == 0]
            if not missing or time.monotonic() > end:
                return missing
            spin(0.05)

    def play(self, steps: list[Step], spin: Callable[[float], None], rate: float,
             lockstep: bool, expected: set[int], timeout: float,
             progress: Callable[[], None] | None = None) -> int:
        """Publish every step (paced at ``rate``, or in lockstep: a step with an expected output
        waits for it up to ``timeout`` s); returns how many waits timed out."""
        times = schedule(steps, 0.0 if lockstep else rate)
        start = time.monotonic()
        timeouts = 0
        for st, at in zip(steps, times, strict=True):
            while (wait := start + at - time.monotonic()) > 0:
                spin(min(wait, 0.05))
            for m in st.messages:
                self.pubs[m.topic].publish(m.data)
            if lockstep and st.stamp_ns in expected:
                end = time.monotonic() + timeout
                while st.stamp_ns not in self.outputs and time.monotonic() < end:
                    spin(0.01)
                timeouts += st.stamp_ns not in self.outputs
            else:
                spin(0.0)
            if progress:
                progress()
        # Answers still in flight (paced mode, or the last step).
        end = time.monotonic() + timeout
        while not expected <= set(self.outputs) and time.monotonic() < end:
            spin(0.05)
        return timeouts


def _hand_of(msgs: list[Recorded]) -> str | None:
    """The registry hand whose joint names the bag's first /joint_states carries, if any."""
    from dex_bringup.trial_record import hand_of_joints

    js = next((m for m in msgs if m.topic == JOINT_STATES), None)
    spec = hand_of_joints(joint_names(js)) if js else None
    return spec.name if spec else None


def consumer_node(consumer: str, hand: str, custom: dict[str, str], model: str | None) -> object:
    """The consumer's NodeSpec, taken from the simulated graph's description (same parameters
    as ``dex run``), for one trial with the bag's seed."""
    from dex_bringup.graph import sim_graph

    vision = custom.get("mode", "vision") != "state"
    seed = int(custom.get("seed") or 0)
    nodes = sim_graph(hand=hand, pose_source="vision" if vision or consumer == "perception"
                      else "state", num_trials=1, seed=seed,
                      policy_model=model if consumer == "policy" else None,
                      pose_model=model if consumer == "perception" else None,
                      controller=custom.get("controller") or "onnx")
    name = {"perception": "dex_perception", "policy": "dex_policy"}[consumer]
    return next(n for n in nodes if n.name == name)


def replay_bag(bag: Path, args: argparse.Namespace, node: object,
               spin: Callable[[float], None], out_dir: Path) -> dict | None:
    from tqdm import tqdm

    from dex_bringup.bagging import read_bag
    from dex_bringup.procs import ProcessGroup

    _, custom = read_bag(bag)  # the trial's outcome ({} for another tool's bag)
    msgs_all, types = read_recorded(bag)
    hand = args.hand or _hand_of(msgs_all)
    mode = custom.get("mode", "vision")
    consumer = consumer_for(args.consumer, types, pose_source=mode)
    inputs = [m for m in msgs_all if m.topic in consumer.inputs]
    steps = plan_steps(inputs)
    recorded_out = [m for m in msgs_all if m.topic == consumer.output]
    expected = {m.stamp_ns for m in recorded_out}
    replayer = Replayer(node, types, consumer)
    group = None
    if args.consumer != "none":
        if hand is None:
            raise ValueError(f"{bag}: cannot tell the hand from its /joint_states; pass --hand")
        spec = consumer_node(args.consumer, hand, custom, args.model)
        group = ProcessGroup([spec], echo=args.verbose)
        group.start()
    try:
        if group is not None:
            missing = replayer.wait_for_readers(
                [t for t in consumer.inputs if t != "/clock"], spin, STARTUP_TIMEOUT_S)
            if missing:
                raise RuntimeError(f"{args.consumer} node never subscribed to {missing}"
                                   + _exit_note(group))
        else:  # whoever listens (a viewer, a node of one's own) gets a moment to match
            replayer.wait_for_readers(list(consumer.inputs), spin, args.wait)
        lockstep = args.consumer != "none" and not args.rate_given
        with tqdm(total=len(steps), desc=f"replay {bag.name}", unit="step",
                  disable=args.quiet) as bar:
            timeouts = replayer.play(steps, spin, args.rate, lockstep, expected, args.timeout,
                                     progress=bar.update)
        if group is not None and group.dead():
            raise RuntimeError(f"{args.consumer} node died during the replay"
                               + _exit_note(group))
    finally:
        replayer.close()
        if group is not None:
            group.stop()
    if args.consumer == "none":
        print(f"{bag.name}: published {len(inputs)} messages in {len(steps)} steps")
        return None
    if args.consumer == "perception":
        replayed = decode_poses(replayer.outputs.items())
        rows, summary = compare("perception", replayed, decode_poses(recorded_out),
                                decode_poses(m for m in msgs_all if m.topic == POSE_GT))
    else:
        replayed = decode_positions(replayer.outputs.items())
        rows, summary = compare("policy", replayed, decode_positions(recorded_out))
    summary.update({"bag": str(bag), "model": args.model or "(packaged default)",
                    "lockstep": lockstep, "timeouts": timeouts,
                    "recorded_with": {k: custom.get(k, "") for k in
                                      ("policy_model_sha256", "pose_model_sha256", "seed")}})
    csv_path, _ = write_report(out_dir, f"{args.consumer}_{bag.name}", rows, summary)
    print(f"{bag.name}: {summary_line(summary)} → {csv_path}")
    return summary


def _exit_note(group: object) -> str:
    dead = group.dead()
    return ("; " + group.describe_exit(dead[0])) if dead else ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dex replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="BAG_OR_RUN_DIR",
                   help="a trial bag, a run directory (its trial bags in turn), or a parent of "
                        "runs (the newest)")
    p.add_argument("--consumer", default="none", choices=("none", "perception", "policy"),
                   help="start this node (with --model) and compare its outputs with the "
                        "recording (default: none, only publish)")
    p.add_argument("--model", default=None, help="the consumer's ONNX model (default: packaged)")
    p.add_argument("--rate", type=float, default=None,
                   help="pace at this multiple of recorded speed, 0 = as fast as possible "
                        "(default: 1 without a consumer; lockstep with one). A consumer slower "
                        "than the pace loses inputs, counted as missing outputs; lockstep "
                        "loses none")
    p.add_argument("--trial", type=int, default=None, help="only this trial of a run directory")
    p.add_argument("--hand", default=None, help="the hand, when the bag's joint names do not say")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for each awaited answer (default 5)")
    p.add_argument("--wait", type=float, default=2.0,
                   help="without a consumer: seconds to wait for a reader on every topic before "
                        "publishing (default 2)")
    p.add_argument("--out", default=None,
                   help="where the comparison goes (default: RUN_DIR/replay)")
    p.add_argument("--verbose", action="store_true", help="show the consumer node's output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.rate_given = args.rate is not None
    args.rate = 1.0 if args.rate is None else args.rate
    try:
        from dex_bringup.trial_record import find_trials

        bags = find_trials(args.path)
        if args.trial is not None:
            bags = [b for b in bags if b.name == f"trial_{args.trial:03d}"]
            if not bags:
                raise FileNotFoundError(f"no trial_{args.trial:03d} in {args.path}")
        # Next to the trial bags, never inside one.
        out_dir = Path(args.out) if args.out else bags[0].parent / "replay"
        if args.model and not Path(args.model).is_file():
            raise FileNotFoundError(f"no model file {args.model}")
    except (FileNotFoundError, ValueError) as e:
        print(f"dex replay: {e}", file=sys.stderr)
        return 2
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("dex_replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin(timeout: float) -> None:
        executor.spin_once(timeout_sec=timeout)

    code = 0
    try:
        for bag in bags:
            replay_bag(bag, args, node, spin, out_dir)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"dex replay: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
