"""What ``dex replay`` republishes, in what steps, and how it compares a consumer's outputs
with the recording (no rclpy: the node is :mod:`dex_bringup.replay`).

A bag's messages are grouped into *steps* by their header stamp (a control step of the sim:
its /clock, joint states, camera images and poses share one stamp); messages without a header
are steps of their own, at their log time. A consumer (a perception or policy node running a
new model) reads the republished inputs and publishes an output stamped like them; each output
is matched by stamp with the recorded output of the same topic and, for poses, with the truth.
Reads any rosbag2 bag (MCAP or sqlite3) through the rosbags library.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dex_bringup.bagging import STAMPED_TYPES, cdr_stamp_ns
from dex_common.rotations import rotation_distance

CLOCK = "/clock"
JOINT_STATES = "/joint_states"
POSE_GT = "/object/pose_gt"
POSE_EST = "/object/pose"
ACTION = "/policy/action"
GOAL = "/goal/pose"
TRIAL_STATUS = "/trial/status"
# Recorded outputs of the stack's nodes and what the recorder derives: never republished as
# inputs of ``--consumer none`` (/tf comes from the inputs). The policy consumer reads the trial
# node's two as its inputs.
DERIVED = frozenset({"/tf", "/tf_static", "/robot_description", "/diagnostics", TRIAL_STATUS,
                     GOAL, "/goal/marker", ACTION, "/hand_position_controller/commands"})


@dataclass(frozen=True)
class Recorded:
    topic: str
    msgtype: str
    log_ns: int  # when the recorder got it
    stamp_ns: int | None  # its header stamp (None: a message without one)
    data: bytes  # CDR, as published


@dataclass
class Step:
    stamp_ns: int | None
    log_ns: int  # the earliest log time of its messages
    messages: list[Recorded] = field(default_factory=list)


@dataclass(frozen=True)
class Consumer:
    """A node ``dex replay`` can re-run on a bag: which recorded topics it reads, and which
    topic it answers on (stamped like its input; the recording's messages on that same topic
    are what the answers are compared with)."""

    name: str
    inputs: tuple[str, ...]
    output: str


def consumer_for(name: str, topics: Iterable[str], pose_source: str = "vision") -> Consumer:
    """``perception``: the cameras' images in, the cube pose out. ``policy``: the joint states,
    the observed cube pose and the recorded goal and trial status in (and /clock), the
    controller's action out. ``none``: every recorded
    sensor topic in, nothing awaited."""
    topics = set(topics)
    if name == "perception":
        images = tuple(sorted(t for t in topics if t.endswith("/image_raw")))
        if not images:
            raise ValueError("the bag has no camera images (/cameras/*/image_raw) to replay: "
                             "it was recorded in state mode")
        return Consumer(name, (CLOCK, *images), POSE_EST)
    if name == "policy":
        # The controller's inputs: the state, the pose it observes, and the trial node's goal
        # and status as recorded (the same judge poses give the same goals and trial ends).
        pose = POSE_EST if pose_source == "vision" else POSE_GT
        wanted = (JOINT_STATES, pose, GOAL, TRIAL_STATUS)
        missing = [t for t in wanted if t not in topics]
        if missing:
            raise ValueError(f"the bag lacks the policy's inputs {missing}")
        return Consumer(name, (CLOCK, *wanted), ACTION)
    if name == "none":
        return Consumer(name, tuple(sorted(topics - DERIVED)), "")
    raise ValueError(f"unknown consumer {name!r}; use perception, policy or none")


def read_recorded(bag: str | Path, topics: Iterable[str] | None = None
                  ) -> tuple[list[Recorded], dict[str, str]]:
    """The bag's messages on ``topics`` (default: all) in log order, and every topic's type."""
    from rosbags.rosbag2 import Reader

    want = None if topics is None else set(topics)
    out: list[Recorded] = []
    with Reader(Path(bag)) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        conns = [c for c in reader.connections if want is None or c.topic in want]
        for conn, t_ns, raw in reader.messages(connections=conns):
            data = bytes(raw)
            stamp = cdr_stamp_ns(data) if conn.msgtype in STAMPED_TYPES else None
            out.append(Recorded(conn.topic, conn.msgtype, int(t_ns), stamp, data))
    out.sort(key=lambda m: m.log_ns)
    return out, types


def plan_steps(messages: Iterable[Recorded]) -> list[Step]:
    """Group messages into steps by header stamp, in stamp order (the log order of their first
    message for header-less ones); inside a step /clock goes first, then log order."""
    by_stamp: dict[int, Step] = {}
    steps: list[Step] = []
    for m in messages:
        if m.stamp_ns is None:
            steps.append(Step(None, m.log_ns, [m]))
            continue
        st = by_stamp.get(m.stamp_ns)
        if st is None:
            st = by_stamp[m.stamp_ns] = Step(m.stamp_ns, m.log_ns)
            steps.append(st)
        st.messages.append(m)
        st.log_ns = min(st.log_ns, m.log_ns)
    for st in steps:
        st.messages.sort(key=lambda m: (m.topic != CLOCK, m.log_ns))
    stamped = sorted((s for s in steps if s.stamp_ns is not None), key=lambda s: s.stamp_ns)
    loose = [s for s in steps if s.stamp_ns is None]  # already in log order
    # Header-less steps slot in by log time between the stamped ones (kept in stamp order).
    out: list[Step] = []
    i = 0
    for st in stamped:
        while i < len(loose) and loose[i].log_ns < st.log_ns:
            out.append(loose[i])
            i += 1
        out.append(st)
    return out + loose[i:]


def schedule(steps: list[Step], rate: float) -> list[float]:
    """Seconds after the start at which each step is published: the recorded spacing of their
    log times divided by ``rate`` (``rate`` <= 0: as fast as possible, all zero). Never earlier
    than the step before."""
    if rate <= 0 or not steps:
        return [0.0] * len(steps)
    t0 = steps[0].log_ns
    out, last = [], 0.0
    for st in steps:
        last = max(last, (st.log_ns - t0) * 1e-9 / rate)
        out.append(last)
    return out


# ---- comparing outputs ---------------------------------------------------------------------------
def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _decode(msgs: Iterable[Recorded | tuple[int, bytes]], msgtype: str,
            values: Callable[[object], list[float]]) -> dict[int, np.ndarray]:
    """CDR messages (recorded, or (stamp, bytes) as received) → {stamp ns: values(msg)}."""
    store = _store()
    out = {}
    for m in msgs:
        data = m.data if isinstance(m, Recorded) else m[1]
        out[cdr_stamp_ns(data)] = np.asarray(values(store.deserialize_cdr(data, msgtype)), float)
    return out


def decode_poses(msgs: Iterable[Recorded | tuple[int, bytes]]) -> dict[int, np.ndarray]:
    """PoseStamped → {stamp ns: [x, y, z, qw, qx, qy, qz]}."""
    def row(msg: object) -> list[float]:
        p, q = msg.pose.position, msg.pose.orientation
        return [p.x, p.y, p.z, q.w, q.x, q.y, q.z]

    return _decode(msgs, "geometry_msgs/msg/PoseStamped", row)


def joint_names(msg: Recorded) -> list[str]:
    """The joint names of a recorded JointState."""
    return list(_store().deserialize_cdr(msg.data, "sensor_msgs/msg/JointState").name)


def decode_positions(msgs: Iterable[Recorded | tuple[int, bytes]]) -> dict[int, np.ndarray]:
    """JointState → {stamp ns: positions}."""
    return _decode(msgs, "sensor_msgs/msg/JointState", lambda msg: msg.position)


def _pose_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(rotation distance in degrees, position distance in mm) between two pose rows."""
    qa, qb = a[3:] / np.linalg.norm(a[3:]), b[3:] / np.linalg.norm(b[3:])
    return (math.degrees(float(rotation_distance(qa, qb))),
            1e3 * float(np.linalg.norm(a[:3] - b[:3])))


def compare(consumer: str, replayed: dict[int, np.ndarray], recorded: dict[int, np.ndarray],
            truth: dict[int, np.ndarray] | None = None) -> tuple[list[dict], dict]:
    """Per-step rows and a summary of the consumer's outputs against the recorded ones (every
    recorded output stamp is a row; a missing replayed output is counted, not skipped).
    Perception: rotation/position difference to the recorded estimate, and both estimates'
    errors against the truth. Policy: the largest per-actuator difference (rad)."""
    rows: list[dict] = []
    for stamp in sorted(recorded):
        row: dict = {"stamp": f"{stamp * 1e-9:.9f}"}
        new, old = replayed.get(stamp), recorded[stamp]
        row["replayed"] = new is not None
        if consumer == "perception":
            t = truth.get(stamp) if truth else None
            if new is not None:
                row["rot_diff_deg"], row["pos_diff_mm"] = _pose_errors(new, old)
                if t is not None:
                    row["new_rot_err_deg"], row["new_pos_err_mm"] = _pose_errors(new, t)
            if t is not None:
                row["old_rot_err_deg"], row["old_pos_err_mm"] = _pose_errors(old, t)
        elif new is not None:
            if new.shape != old.shape:
                raise ValueError(f"replayed commands have {new.shape[0]} actuators, the "
                                 f"recording {old.shape[0]}")
            row["max_abs_diff"] = float(np.max(np.abs(new - old)))
        rows.append(row)
    got = [r for r in rows if r["replayed"]]
    summary: dict = {"consumer": consumer, "recorded_outputs": len(rows),
                     "replayed_outputs": len(got), "missing": len(rows) - len(got),
                     "extra": len(set(replayed) - set(recorded))}

    def stats(key: str) -> dict | None:
        v = np.array([r[key] for r in rows if key in r], float)
        if not len(v):
            return None
        return {"mean": round(float(v.mean()), 6), "median": round(float(np.median(v)), 6),
                "max": round(float(v.max()), 6)}

    keys = (("rot_diff_deg", "pos_diff_mm", "new_rot_err_deg", "new_pos_err_mm",
             "old_rot_err_deg", "old_pos_err_mm") if consumer == "perception"
            else ("max_abs_diff",))
    for k in keys:
        s = stats(k)
        if s is not None:
            summary[k] = s
    if consumer == "policy" and got:
        summary["identical_steps"] = sum(r["max_abs_diff"] == 0.0 for r in got)
    return rows, summary


def write_report(out_dir: Path, name: str, rows: list[dict], summary: dict) -> tuple[Path, Path]:
    """``name``.csv (one row per recorded output) and ``name``.json (the summary)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["stamp"])
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps(summary, indent=1))
    return csv_path, json_path


def summary_line(summary: dict) -> str:
    """One human line of a :func:`compare` summary."""
    head = (f"{summary['replayed_outputs']}/{summary['recorded_outputs']} outputs "
            f"({summary['missing']} missing)")
    if summary["consumer"] == "policy":
        d = summary.get("max_abs_diff")
        if not d:
            return head
        return (head + f"; commands identical at {summary['identical_steps']} steps, "
                f"|difference| mean {d['mean']:.4g} max {d['max']:.4g} rad")
    parts = [head]
    if "rot_diff_deg" in summary:
        parts.append(f"vs recorded estimate {summary['rot_diff_deg']['mean']:.2f} deg / "
                     f"{summary['pos_diff_mm']['mean']:.2f} mm mean")
    for who in ("new", "old"):
        if f"{who}_rot_err_deg" in summary:
            parts.append(f"{'replayed' if who == 'new' else 'recorded'} vs truth "
                         f"{summary[f'{who}_rot_err_deg']['mean']:.2f} deg / "
                         f"{summary[f'{who}_pos_err_mm']['mean']:.2f} mm mean")
    return "; ".join(parts)
