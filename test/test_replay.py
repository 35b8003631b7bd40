"""dex replay: step grouping and pacing, the output comparison, and a foreign (sqlite3) bag
republished byte for byte to a real subscriber over DDS. The end-to-end replays of a recorded
trial through the policy and perception nodes are in test_integration."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dex_bringup.replay_plan import (
    Recorded,
    compare,
    consumer_for,
    plan_steps,
    read_recorded,
    schedule,
)


def _rec(topic: str, log: float, stamp: float | None) -> Recorded:
    return Recorded(topic, "x/msg/Y", round(log * 1e9), None if stamp is None else
                    round(stamp * 1e9), b"")


def test_steps_group_by_stamp_with_the_clock_first() -> None:
    msgs = [_rec("/joint_states", 1.00, 0.08), _rec("/clock", 1.01, 0.08),
            _rec("/chatter", 1.02, None),  # no header: a step of its own, by log time
            _rec("/object/pose", 1.09, 0.08),  # late, but its stamp's step
            _rec("/clock", 1.10, 0.16), _rec("/joint_states", 1.11, 0.16)]
    steps = plan_steps(msgs)
    assert [s.stamp_ns for s in steps] == [80_000_000, None, 160_000_000]
    assert [m.topic for m in steps[0].messages] == ["/clock", "/joint_states", "/object/pose"]
    assert steps[1].messages[0].topic == "/chatter"
    # recorded spacing of the steps' first log times, divided by the rate; 0 = no pacing
    assert schedule(steps, 2.0) == pytest.approx([0.0, 0.01, 0.05])
    assert schedule(steps, 0.0) == [0.0, 0.0, 0.0]


def _pose(rot_deg: float, x_mm: float = 0.0) -> np.ndarray:
    h = math.radians(rot_deg) / 2
    return np.array([x_mm / 1e3, 0.0, 0.1, math.cos(h), 0.0, 0.0, math.sin(h)])


def test_comparison_counts_missing_outputs_and_measures_errors() -> None:
    truth = {1: _pose(0), 2: _pose(0), 3: _pose(0)}
    recorded = {1: _pose(20), 2: _pose(20), 3: _pose(20)}
    replayed = {1: _pose(5, 3.0), 3: _pose(-5), 9: _pose(0)}  # 2 missing, 9 not recorded
    rows, s = compare("perception", replayed, recorded, truth)
    assert [r["replayed"] for r in rows] == [True, False, True]
    assert (s["recorded_outputs"], s["replayed_outputs"], s["missing"], s["extra"]) == (3, 2, 1, 1)
    assert s["new_rot_err_deg"]["mean"] == pytest.approx(5.0)
    assert s["old_rot_err_deg"]["mean"] == pytest.approx(20.0)  # over all 3 recorded
    assert s["rot_diff_deg"]["max"] == pytest.approx(25.0)
    assert s["new_pos_err_mm"]["max"] == pytest.approx(3.0)
    rows, s = compare("policy", {1: np.array([0.1, 0.2]), 2: np.array([0.1, 0.5])},
                      {1: np.array([0.1, 0.2]), 2: np.array([0.1, 0.2])})
    assert s["identical_steps"] == 1 and s["max_abs_diff"]["max"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="actuators"):
        compare("policy", {1: np.zeros(3)}, {1: np.zeros(2)})


def test_a_consumer_needs_its_inputs_in_the_bag() -> None:
    with pytest.raises(ValueError, match="state mode"):
        consumer_for("perception", ["/clock", "/joint_states", "/object/pose_gt"])
    with pytest.raises(ValueError, match="object/pose"):
        consumer_for("policy", ["/clock", "/joint_states", "/object/pose_gt"], "vision")
    c = consumer_for("none", ["/clock", "/joint_states", "/tf", "/diagnostics", "/chatter"])
    assert c.inputs == ("/chatter", "/clock", "/joint_states") and c.output == ""


def _sqlite_bag(path: Path, n: int) -> list[tuple[str, bytes]]:
    """A bag another tool could have written: sqlite3 storage, a stamped JointState stream and
    a header-less String stream."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    st = get_typestore(Stores.ROS2_KILTED)
    T = st.types
    sent = []
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=st)
        ch = w.add_connection("/chatter", "std_msgs/msg/String", typestore=st)
        for i in range(n):
            t = 5.0 + 0.05 * i
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
                sec=int(t), nanosec=round((t - int(t)) * 1e9)), frame_id="")
            data = bytes(st.serialize_cdr(T["sensor_msgs/msg/JointState"](
                header=hdr, name=["a", "b"], position=np.array([i, -i], float),
                velocity=np.zeros(0), effort=np.zeros(0)), "sensor_msgs/msg/JointState"))
            w.write(js, round(t * 1e9), data)
            sent.append(("/joint_states", data))
            if i % 5 == 0:
                s = bytes(st.serialize_cdr(T["std_msgs/msg/String"](data=f"tick {i}"),
                                           "std_msgs/msg/String"))
                w.write(ch, round(t * 1e9) + 1, s)
                sent.append(("/chatter", s))
    return sent


def test_a_foreign_sqlite3_bag_is_republished_byte_for_byte(
        tmp_path: Path, dds_env: dict[str, str]) -> None:
    import rclpy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from dex_common.ros_util import STATE_QOS

    bag = tmp_path / "foreign"
    sent = _sqlite_bag(bag, 40)
    msgs, types = read_recorded(bag)
    assert [(m.topic, m.data) for m in msgs] == sent  # log order, bytes as written

    rclpy.init()
    node = rclpy.create_node("replay_listener")
    got: list[tuple[str, bytes]] = []
    for topic, cls in (("/joint_states", JointState), ("/chatter", String)):
        node.create_subscription(cls, topic, lambda d, t=topic: got.append((t, d)), STATE_QOS,
                                 raw=True)
    # Without a consumer the replayer waits (--wait) for a reader on every topic, then paces
    # at recorded speed (2 s of bag).
    proc = subprocess.Popen([sys.executable, "-m", "dex_bringup.replay", str(bag), "--quiet",
                             "--wait", "20"], env=dds_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(20):
            rclpy.spin_once(node, timeout_sec=0.05)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, out
    assert "published 48 messages in 48 steps" in out, out
    # Every message, the recorded bytes (stamps included), in the recorded order per topic;
    # DDS may pad a payload to a multiple of 4 bytes (CDR alignment), nothing else.
    for topic in ("/joint_states", "/chatter"):
        a, b = [d for t, d in got if t == topic], [d for t, d in sent if t == topic]
        assert len(a) == len(b), (topic, len(a), len(b))
        for x, y in zip(a, b, strict=True):
            assert x[:len(y)] == y and x[len(y):] == b"\0" * (len(x) - len(y)) and len(x) % 4 == 0
