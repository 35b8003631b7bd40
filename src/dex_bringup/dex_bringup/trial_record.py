"""A recorded trial as arrays: one rosbag2 (as ``dex_recorder`` writes it) read back (no rclpy).

``load_trial(bag)`` returns a :class:`TrialRecord`: measured joint positions, the true and the
estimated cube pose, the goal, the per-step trial status (successes, rotation error), the
commands and the last /diagnostics of every node, each with its stamps (s). Camera images are
not decoded (the report and the video do not need them). ``find_trials(run_dir)`` lists a
run's trial bags in order. Used by ``dex report`` and the trial video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from dex_common.rotations import rotation_distance
from dex_description.registry import HANDS, HandSpec

STATUS_TOPIC = "/trial/status"
GT_POSE_TOPIC = "/object/pose_gt"
EST_POSE_TOPIC = "/object/pose"
GOAL_TOPIC = "/goal/pose"
JOINTS_TOPIC = "/joint_states"
DIAG_TOPIC = "/diagnostics"
_SKIP_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo")


@dataclass
class PoseSeries:
    """Stamped poses: t [N] s, pos [N, 3] m, quat [N, 4] (w, x, y, z), unit."""

    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    quat: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))

    def __len__(self) -> int:
        return len(self.t)

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The latest pose stamped at or before ``t`` (None before the first)."""
        i = int(np.searchsorted(self.t, t + 1e-9, side="right")) - 1
        return None if i < 0 else (self.pos[i], self.quat[i])


@dataclass
class TrialRecord:
    path: Path
    outcome: dict[str, str]  # the bag's custom_data (trial, seed, successes, end_reason, ...)
    hand: HandSpec | None  # the registry hand whose joint names /joint_states carries
    joint_names: list[str]
    t_joints: np.ndarray  # [N] s
    joints: np.ndarray  # [N, J] rad (measured, /joint_states order)
    cube: PoseSeries  # ground truth (/object/pose_gt); empty on a real hand
    estimate: PoseSeries  # the pose estimate (/object/pose); empty in state mode
    goal: PoseSeries
    t_status: np.ndarray  # [K] s: per control step
    successes: np.ndarray  # [K] consecutive successes so far
    rotation_error: np.ndarray  # [K] rad to the current goal (as the trial judged it)
    goal_index: np.ndarray  # [K]
    t_commands: np.ndarray  # [C] s (the /clock at the command: commands have no header)
    commands: np.ndarray  # [C, A] actuator targets, registry actuator order
    diagnostics: dict[str, dict[str, str]]  # node name -> values of its last /diagnostics
    counts: dict[str, int]  # topic -> messages in the bag

    @property
    def trial(self) -> int:
        return int(self.outcome.get("trial") or -1)

    @property
    def end_reason(self) -> str:
        return self.outcome.get("end_reason") or self.outcome.get("final_state") or "?"

    @property
    def final_successes(self) -> int:
        s = self.outcome.get("successes")
        if s not in (None, ""):
            return int(s)
        return int(self.successes[-1]) if len(self.successes) else 0

    def success_times(self) -> np.ndarray:
        """Stamps (s) of the steps at which the success count went up."""
        if len(self.successes) < 2:
            return np.zeros(0)
        return self.t_status[1:][np.diff(self.successes) > 0]

    @cached_property
    def vision_errors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, rotation error rad, position error m) of each estimate against the true pose at
        its stamp (empty without both)."""
        if not len(self.estimate) or not len(self.cube):
            return np.zeros(0), np.zeros(0), np.zeros(0)
        t, rot, pos = [], [], []
        for i, ts in enumerate(self.estimate.t):
            truth = self.cube.at(ts)
            if truth is None:
                continue
            t.append(ts)
            rot.append(rotation_distance(self.estimate.quat[i], truth[1]))
            pos.append(float(np.linalg.norm(self.estimate.pos[i] - truth[0])))
        return np.array(t), np.array(rot), np.array(pos)


def hand_of_joints(names: list[str]) -> HandSpec | None:
    """The registry hand whose joint names are exactly ``names`` (in order), if any."""
    for spec in HANDS.values():
        if list(spec.joint_names) == list(names):
            return spec
    return None


def find_trials(run_dir: str | Path) -> list[Path]:
    """The trial bags of a run directory (``trial_000``, ``trial_001``, …) in trial order; a
    directory that is itself a bag gives itself. A parent of runs (``runs/demo``, holding one
    directory per run) gives the newest run's bags. Raises FileNotFoundError when none."""
    root = Path(run_dir)
    if (root / "metadata.yaml").is_file() or any(root.glob("*.mcap")):
        return [root]
    bags = sorted(p for p in root.glob("trial_*") if p.is_dir())
    if not bags:
        runs = sorted((p for p in root.iterdir() if p.is_dir() and any(p.glob("trial_*"))),
                      key=lambda p: p.name) if root.is_dir() else []
        if runs:
            bags = sorted(p for p in runs[-1].glob("trial_*") if p.is_dir())
    if not bags:
        raise FileNotFoundError(f"no trial bags (trial_000, ...) in {root}: record a run with "
                                f"`dex run --record DIR` or `dex demo`")
    return bags


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _poses(rows: list[tuple[float, list[float]]]) -> PoseSeries:
    if not rows:
        return PoseSeries()
    rows.sort(key=lambda r: r[0])
    a = np.array([r[1] for r in rows])
    q = a[:, 3:]
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return PoseSeries(np.array([r[0] for r in rows]), a[:, :3], q)


def load_trial(path: str | Path) -> TrialRecord:
    """Read one trial bag into a :class:`TrialRecord` (images skipped)."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from dex_bringup.bagging import read_bag

    path = Path(path)
    counts, outcome = read_bag(path)  # clear errors for a missing or unfinished bag
    store = get_typestore(Stores.ROS2_KILTED)
    joints: list[tuple[float, np.ndarray]] = []
    names: list[str] = []
    poses: dict[str, list[tuple[float, list[float]]]] = {
        GT_POSE_TOPIC: [], EST_POSE_TOPIC: [], GOAL_TOPIC: []}
    status: list[tuple[float, int, float, int]] = []
    commands: list[tuple[float, np.ndarray]] = []
    diagnostics: dict[str, dict[str, str]] = {}
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.msgtype not in _SKIP_TYPES]
        for conn, t_ns, raw in reader.messages(connections=conns):
            topic = conn.topic
            if topic not in (JOINTS_TOPIC, STATUS_TOPIC, DIAG_TOPIC, *poses) and \
                    not topic.endswith("/commands"):
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if topic == JOINTS_TOPIC:
                names = names or list(msg.name)
                if list(msg.name) == names:
                    joints.append((_stamp(msg.header), np.asarray(msg.position, float)))
            elif topic in poses:
                p, q = msg.pose.position, msg.pose.orientation
                poses[topic].append((_stamp(msg.header), [p.x, p.y, p.z, q.w, q.x, q.y, q.z]))
            elif topic == STATUS_TOPIC:
                for st in msg.status:
                    if st.name == "trial":
                        v = {kv.key: kv.value for kv in st.values}
                        status.append((_stamp(msg.header), int(v.get("successes") or 0),
                                       float(v.get("rotation_error") or "nan"),
                                       int(v.get("goal_index") or 0)))
            elif topic == DIAG_TOPIC:
                for st in msg.status:
                    diagnostics[st.name] = {kv.key: kv.value for kv in st.values}
            else:  # the controller's commands (Float64MultiArray)
                commands.append((t_ns * 1e-9, np.asarray(msg.data, float)))
    joints.sort(key=lambda r: r[0])
    status.sort(key=lambda r: r[0])
    commands.sort(key=lambda r: r[0])
    st = np.array(status, float).reshape(-1, 4)
    return TrialRecord(
        path=path, outcome=outcome, hand=hand_of_joints(names), joint_names=names,
        t_joints=np.array([r[0] for r in joints]),
        joints=np.array([r[1] for r in joints]).reshape(len(joints), len(names)),
        cube=_poses(poses[GT_POSE_TOPIC]), estimate=_poses(poses[EST_POSE_TOPIC]),
        goal=_poses(poses[GOAL_TOPIC]),
        t_status=st[:, 0], successes=st[:, 1].astype(int), rotation_error=st[:, 2],
        goal_index=st[:, 3].astype(int),
        t_commands=np.array([r[0] for r in commands]),
        commands=np.array([r[1] for r in commands]) if commands else np.zeros((0, 0)),
        diagnostics=diagnostics, counts=counts)
