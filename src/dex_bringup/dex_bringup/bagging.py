"""Pure core of the recorder: route messages into one rosbag2 per trial (no rclpy).

Messages come in as raw CDR bytes with their topic. Each is given a stamp (its header stamp, or
for header-less types the latest /clock stamp seen) and held in a small reorder buffer until
/trial/status has told which trial window ``[start_stamp, end stamp]`` it falls in. Trial k's
messages go to ``<out_dir>/trial_%03d``; anything outside every trial window (pre-roll, resets
between trials, after ``finished``) goes to ``<out_dir>/untrialed`` — nothing is dropped
silently, every such message is counted in :attr:`TrialRouter.counts`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

UNTRIALED = "untrialed"
# Message types whose first field is std_msgs/Header (stamp at CDR offset 4) or a Time (Clock).
STAMPED_TYPES = frozenset(
    {
        "rosgraph_msgs/msg/Clock",
        "sensor_msgs/msg/JointState",
        "sensor_msgs/msg/Image",
        "sensor_msgs/msg/CameraInfo",
        "geometry_msgs/msg/PoseStamped",
        "geometry_msgs/msg/TwistStamped",
        "diagnostic_msgs/msg/DiagnosticArray",
        "visualization_msgs/msg/Marker",
    }
)
# Stamped, but by each node's own clock (wall or sim): routed by the /clock at arrival instead.
CLOCK_ROUTED_TOPICS = frozenset({"/diagnostics"})
OUTCOME_KEYS = (
    "trial",
    "seed",
    "successes",
    "end_reason",
    "steps",
    "goal_index",
    "start_stamp",
    "controller",
    "policy_model_sha256",
    "pose_model_sha256",
    "mode",
    "goal_rule",
)


def bag_name(trial: int) -> str:
    """Directory name of trial ``trial``'s bag inside the output directory."""
    if trial < 0:
        raise ValueError(f"trial index must be >= 0, got {trial}")
    return f"trial_{trial:03d}"


def cdr_stamp(data: bytes | memoryview) -> float:
    """Seconds of the leading builtin_interfaces/Time of a CDR message (header.stamp/clock)."""
    return cdr_stamp_ns(data) * 1e-9


def to_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))


def cdr_stamp_ns(data: bytes | memoryview) -> int:
    """Nanoseconds of the leading builtin_interfaces/Time of a CDR message."""
    if len(data) < 12:
        raise ValueError(f"CDR message too short for a stamp ({len(data)} bytes)")
    kind = bytes(data[0:2])
    if kind in (b"\x00\x01", b"\x00\x03"):
        sec, nsec = struct.unpack_from("<iI", data, 4)
    elif kind in (b"\x00\x00", b"\x00\x02"):
        sec, nsec = struct.unpack_from(">iI", data, 4)
    else:
        raise ValueError(f"unknown CDR encapsulation {kind.hex()}")
    return sec * 1_000_000_000 + nsec


class BagSink(Protocol):
    """Where routed messages go (a directory of rosbag2s, or a list in tests)."""

    def write(self, bag: str, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None: ...

    def close(self, bag: str, custom_data: dict[str, str]) -> None: ...


@dataclass
class Trial:
    """A trial window; stamps in integer ns (exact comparisons)."""

    index: int
    start: int
    last_seen: int  # latest status stamp of this trial (its end is >= this)
    end: int | None = None
    end_wall: float | None = None
    last_arrival: float = 0.0  # wall time the newest message written into this trial arrived
    outcome: dict[str, str] = field(default_factory=dict)
    closed: bool = False
    written: int = 0


@dataclass
class _Pending:
    topic: str
    stamp: int  # ns
    data: bytes
    wall: float
    by_clock: bool = False  # stamped with the recorder's clock (no header stamp of its own)


class TrialRouter:
    """Routes stamped messages into per-trial bags using /trial/status values.

    ``on_message`` / ``on_status`` / ``tick`` take the wall time ``now`` so tests can drive it.
    A trial's bag is closed once ``grace_s`` has passed both since its end status and since the
    last of its messages arrived (a recorder that falls behind under load keeps receiving the
    trial's backlog after the end status: each of those messages keeps the bag open), and every
    topic in ``wait_topics`` (the sensor streams with a live publisher, set by the recorder node)
    has delivered a stamp at or past the trial's end. Each stream comes in order from its one
    writer, so that stamp says nothing of the window is still in flight: a reliable stream that
    DDS is repairing (a lost fragment waits for the writer's next heartbeat, seconds) holds the bag
    open instead of spilling to ``untrialed``; a stream that stopped holds it at most
    ``max_close_s`` after the end. The reorder buffer is bounded by ``max_pending`` messages
    (oldest spill to ``untrialed``).
    """

    def __init__(
        self,
        sink: BagSink,
        topic_types: dict[str, str],
        grace_s: float = 1.0,
        max_pending: int = 4000,
        max_wait_s: float = 30.0,
        extra_metadata: dict[str, str] | None = None,
        max_close_s: float = 8.0,
    ) -> None:
        self.sink = sink
        self.types = dict(topic_types)
        self.grace_s = grace_s
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self.max_close_s = max_close_s
        self.wait_topics: frozenset[str] = frozenset()
        self.newest: dict[str, int] = {}  # topic -> the newest routing stamp it delivered (ns)
        self.extra_metadata = dict(extra_metadata or {})
        self.trials: dict[int, Trial] = {}
        self.finished = False
        self.finished_stamp: int | None = None
        # The stamp (ns) of header-less messages: the latest /clock, or in a wall-time graph the
        # arrival time, which the recorder node sets.
        self.clock = 0
        self._pending: list[_Pending] = []
        self._untrialed_open = False
        self.counts: dict[str, int] = {
            "received": 0,
            "written": 0,
            "untrialed": 0,
            "late": 0,
            "overflow": 0,
            "bad": 0,
            "write_errors": 0,
            "pending": 0,
        }
        self.errors: list[str] = []

    # ---- inputs --------------------------------------------------------------------------
    def stamp_of(self, topic: str, data: bytes) -> int:
        """Routing stamp (ns) of a raw message."""
        msgtype = self.types[topic]
        if msgtype in STAMPED_TYPES and topic not in CLOCK_ROUTED_TOPICS:
            stamp = cdr_stamp_ns(data)
            if stamp == 0:  # an unstamped diagnostics array etc.: use the clock
                return self.clock
            return stamp
        return self.clock

    def on_message(self, topic: str, data: bytes, now: float) -> None:
        """A raw CDR message on ``topic`` arrived at wall time ``now``."""
        self.counts["received"] += 1
        if topic not in self.types:
            self._error(f"message on unknown topic {topic}")
            self.counts["bad"] += 1
            return
        try:
            stamp = self.stamp_of(topic, data)
        except ValueError as exc:
            self.counts["bad"] += 1
            self._error(f"{topic}: {exc}")
            return
        if self.types[topic] == "rosgraph_msgs/msg/Clock":
            self.clock = max(self.clock, stamp)
        self.newest[topic] = max(self.newest.get(topic, stamp), stamp)
        self._pending.append(_Pending(topic, stamp, bytes(data), now, by_clock=stamp == self.clock))
        self._route(now)

    def on_status(self, stamp_s: float, state: str, values: dict[str, str], now: float) -> None:
        """A parsed /trial/status ``trial`` entry (state = its message), header stamp in s."""
        stamp = to_ns(stamp_s)
        if state == "finished":
            self.finished = True
            self.finished_stamp = stamp
            self._route(now)
            return
        try:
            index = int(values["trial"])
        except (KeyError, ValueError):
            self._error(f"/trial/status without a valid 'trial' value: {values}")
            return
        trial = self.trials.get(index)
        if trial is None:
            try:
                # 1 ms slack: start_stamp is a printed float; sets are a control period apart
                start = to_ns(float(values["start_stamp"])) - 1_000_000
            except (KeyError, ValueError):
                start = stamp
            trial = self.trials[index] = Trial(index, min(start, stamp), stamp)
        trial.last_seen = max(trial.last_seen, stamp)
        trial.outcome.update({k: str(v) for k, v in values.items()})
        trial.outcome["state"] = state
        if values.get("ended") == "true" and trial.end is None:
            trial.end = stamp
            trial.end_wall = now
        self._route(now)

    def tick(self, now: float) -> None:
        """Periodic: route what can be routed, close trials whose grace period passed."""
        self._route(now)

    def close_all(self, now: float) -> None:
        """Shutdown: flush the buffer (best effort) and close every open bag."""
        for p in self._pending:
            trial = self._open_trial_containing(p.stamp, allow_open_end=True)
            self._write(trial, p)
        self._pending.clear()
        for trial in self.trials.values():
            if not trial.closed:
                if trial.end is None:
                    trial.outcome.setdefault("end_reason", "")
                    trial.outcome["recorder_note"] = "incomplete: recorder stopped before the trial ended"
                self._close(trial)
        if self._untrialed_open:
            self.sink.close(UNTRIALED, {"note": "messages outside every trial window", **self.extra_metadata})
            self._untrialed_open = False
        self.counts["pending"] = 0

    # ---- routing -----------------------------------------------------------------------------
    def _open_trial_containing(self, stamp: int, allow_open_end: bool = False) -> Trial | None:
        for t in self.trials.values():
            if t.start <= stamp and (
                (t.end is not None and stamp <= t.end)
                or (t.end is None and (stamp <= t.last_seen or allow_open_end))
            ):
                return t
        return None

    def _decide(self, p: _Pending) -> Trial | None | bool:
        """The trial for a pending message, None for untrialed, False if not decidable yet."""
        trial = self._open_trial_containing(p.stamp)
        if trial is not None:
            return trial
        # Not inside any known window: decidable once every window it could join is known.
        for t in self.trials.values():
            if t.end is None and p.stamp >= t.start and not self.finished:
                return False  # trial t may still grow to cover it
        if self.finished:
            return None
        later = [t for t in self.trials.values() if t.start > p.stamp]
        if later:
            return None  # falls before a known trial start and after every earlier end
        return False  # a trial may still start at or before this stamp

    def _route(self, now: float) -> None:
        keep: list[_Pending] = []
        for p in self._pending:
            decision = self._decide(p)
            if decision is False and now - p.wall <= self.max_wait_s:
                keep.append(p)
                continue
            self._write(decision if isinstance(decision, Trial) else None, p)
        while len(keep) > self.max_pending:
            self.counts["overflow"] += 1
            self._write(None, keep.pop(0))
        self._pending = keep
        self.counts["pending"] = len(keep)
        for t in self.trials.values():
            if (not t.closed and t.end_wall is not None
                    and now - max(t.end_wall, t.last_arrival) >= self.grace_s
                    and not any(p.stamp <= t.end for p in self._pending)
                    and (not self.streams_behind(t.end) or now - t.end_wall >= self.max_close_s)):
                behind = self.streams_behind(t.end)
                if behind:
                    t.outcome["recorder_note"] = (f"closed {self.max_close_s:.0f} s after the end "
                                                  f"with {', '.join(behind)} short of it")
                    self._error(f"{bag_name(t.index)}: {t.outcome['recorder_note']}")
                self._close(t)

    def streams_behind(self, stamp: int) -> list[str]:
        """The ``wait_topics`` that have not yet delivered a message stamped at or after
        ``stamp`` (ns): part of a window ending there may still be on its way."""
        return sorted(t for t in self.wait_topics if self.newest.get(t, -1) < stamp)

    def _write(self, trial: Trial | None, p: _Pending) -> None:
        if trial is not None and trial.closed:
            if not p.by_clock:  # a clock-stamped message after the close is not the trial's
                self.counts["late"] += 1
            trial = None
        bag = bag_name(trial.index) if trial is not None else UNTRIALED
        if trial is None:
            self.counts["untrialed"] += 1
            self._untrialed_open = True
        try:
            self.sink.write(bag, p.topic, self.types[p.topic], p.stamp, p.data)
        except Exception as exc:  # a failing disk must be reported, not crash the node
            self.counts["write_errors"] += 1
            self._error(f"could not write {p.topic} to {bag}: {exc}")
            return
        self.counts["written"] += 1
        if trial is not None:
            trial.written += 1
            # A backlog of the trial's own stamps keeps its bag open; a clock-stamped message
            # does not: with a sim stopped after the last trial, every 1 Hz /diagnostics gets
            # the final /clock stamp, inside the window, and would keep it open for good.
            if not p.by_clock:
                trial.last_arrival = max(trial.last_arrival, p.wall)

    def _close(self, trial: Trial) -> None:
        trial.closed = True
        try:
            self.sink.close(bag_name(trial.index), outcome_metadata(trial, self.extra_metadata))
        except Exception as exc:
            self.counts["write_errors"] += 1
            self._error(f"could not close {bag_name(trial.index)}: {exc}")

    def _error(self, text: str) -> None:
        self.errors.append(text)
        del self.errors[:-20]


def outcome_metadata(trial: Trial, extra: dict[str, str] | None = None) -> dict[str, str]:
    """rosbag2 ``custom_data`` for a trial's bag (all strings)."""
    out = {k: trial.outcome.get(k, "") for k in OUTCOME_KEYS}
    out["trial"] = str(trial.index)
    out["start_stamp"] = trial.outcome.get("start_stamp") or f"{trial.start * 1e-9:.9f}"
    out["end_stamp"] = f"{trial.end * 1e-9:.9f}" if trial.end is not None else ""
    out["final_state"] = trial.outcome.get("state", "")
    out["messages"] = str(trial.written)
    if "recorder_note" in trial.outcome:
        out["recorder_note"] = trial.outcome["recorder_note"]
    out.update(extra or {})
    return {k: str(v) for k, v in out.items()}


# Topics whose publishers are transient-local (latched): recorded with that offered QoS, so
# `ros2 bag play` republishes them latched and a late subscriber (RViz) still gets them.
LATCHED_TOPICS = frozenset({"/tf_static", "/robot_description"})


def _latched_qos() -> list:
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    never = QosTime(0x7FFFFFFF, 0xFFFFFFFF)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                never, never, QosLiveliness.AUTOMATIC, never, False)]


class RosbagsSink:
    """Writes each bag as a rosbag2 (MCAP storage, version 8) with the ``rosbags`` library."""

    def __init__(self, out_dir: str | Path, version: int = 8, log: Callable[[str], None] | None = None):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self._writer_cls = Writer
        self._plugin = StoragePlugin.MCAP
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.version = version
        self.log = log or (lambda _s: None)
        self._writers: dict[str, object] = {}
        self._conns: dict[tuple[str, str], object] = {}
        self.paths: dict[str, Path] = {}

    def _writer(self, bag: str):
        w = self._writers.get(bag)
        if w is None:
            path = self.out_dir / bag
            if path.exists():  # never overwrite: a second run into the same dir gets a suffix
                i = 1
                while (self.out_dir / f"{bag}.{i}").exists():
                    i += 1
                path = self.out_dir / f"{bag}.{i}"
            w = self._writer_cls(path, version=self.version, storage_plugin=self._plugin)
            w.open()
            self._writers[bag] = w
            self.paths[bag] = path
            self.log(f"opened bag {path}")
        return w

    def write(self, bag: str, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        w = self._writer(bag)
        conn = self._conns.get((bag, topic))
        if conn is None:
            conn = w.add_connection(topic, msgtype, typestore=self._typestore,
                                    offered_qos_profiles=_latched_qos() if topic in LATCHED_TOPICS
                                    else ())
            self._conns[(bag, topic)] = conn
        w.write(conn, stamp_ns, data)

    def close(self, bag: str, custom_data: dict[str, str]) -> None:
        w = self._writers.pop(bag, None)
        if w is None:  # a trial with no messages still gets an (empty) bag with its outcome
            w = self._writer(bag)
            self._writers.pop(bag)
        for k, v in custom_data.items():
            w.set_custom_data(k, str(v))
        w.close()
        for key in [k for k in self._conns if k[0] == bag]:
            del self._conns[key]
        self.log(f"closed bag {self.paths.get(bag)}")


def read_bag(path: str | Path) -> tuple[dict[str, int], dict[str, str]]:
    """(topic -> message count, custom_data) of a rosbag2 directory (for demo/tests)."""
    from rosbags.rosbag2 import Reader

    if not (Path(path) / "metadata.yaml").is_file() and any(Path(path).glob("*.mcap")):
        raise FileNotFoundError(f"{path} has no metadata.yaml: its recorder was stopped before "
                                f"closing it; `dex bag-recover {path}` rebuilds it")
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        meta = getattr(getattr(reader, "storage", None), "metadata", None)
        custom = {str(k): str(v) for k, v in (getattr(meta, "custom", None) or {}).items()}
    return counts, custom
