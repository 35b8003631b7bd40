"""dex_bringup recorder: the pure per-trial routing core, real rosbag2 files, and the node."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from rclpy.serialization import serialize_message

from dex_bringup.bagging import (
    UNTRIALED,
    RosbagsSink,
    TrialRouter,
    bag_name,
    cdr_stamp,
    read_bag,
)
from dex_bringup.graph import topic_types


class ListSink:
    def __init__(self) -> None:
        self.written: list[tuple[str, str, int]] = []
        self.closed: dict[str, dict[str, str]] = {}

    def write(self, bag: str, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        assert bag not in self.closed, f"write into closed bag {bag}"
        self.written.append((bag, topic, stamp_ns))

    def close(self, bag: str, custom_data: dict[str, str]) -> None:
        self.closed[bag] = custom_data

    def stamps(self, bag: str, topic: str) -> list[float]:
        return [s / 1e9 for b, t, s in self.written if b == bag and t == topic]


def js(stamp: float) -> bytes:
    from sensor_msgs.msg import JointState

    m = JointState()
    m.header.stamp.sec = int(stamp)
    m.header.stamp.nanosec = round((stamp - int(stamp)) * 1e9)
    m.name = ["a"]
    m.position = [stamp]
    return serialize_message(m)


def cmd() -> bytes:
    from std_msgs.msg import Float64MultiArray

    return serialize_message(Float64MultiArray(data=[0.0] * 20))


def clock(stamp: float) -> bytes:
    from rosgraph_msgs.msg import Clock

    m = Clock()
    m.clock.sec = int(stamp)
    m.clock.nanosec = round((stamp - int(stamp)) * 1e9)
    return serialize_message(m)


def status(trial: int, start: float, ended: bool = False, reason: str = "", successes: int = 0) -> dict:
    return {
        "trial": str(trial), "seed": str(10 + trial), "start_stamp": str(start), "successes": str(successes),
        "ended": "true" if ended else "false", "end_reason": reason, "steps": "3", "mode": "vision",
        "policy_model_sha256": "abc", "pose_model_sha256": "def",
    }


def test_bag_names_and_cdr_stamps() -> None:
    assert bag_name(0) == "trial_000" and bag_name(12) == "trial_012"
    with pytest.raises(ValueError):
        bag_name(-1)
    assert cdr_stamp(js(12.5)) == pytest.approx(12.5)
    assert cdr_stamp(clock(3.25)) == pytest.approx(3.25)
    with pytest.raises(ValueError, match="too short"):
        cdr_stamp(b"\x00\x01\x00")
    with pytest.raises(ValueError, match="encapsulation"):
        cdr_stamp(b"\x07\x07" + b"\x00" * 12)


def test_routing_by_stamp_with_reorder_and_gaps() -> None:
    sink = ListSink()
    r = TrialRouter(sink, topic_types(), grace_s=0.5)
    now = 100.0
    # pre-roll set at 0.0 (before trial 0 starts at 0.08): undecidable until trial 0 is known
    r.on_message("/clock", clock(0.0), now)
    r.on_message("/joint_states", js(0.0), now)
    # trial 0's first set arrives BEFORE its first status (reorder buffer)
    r.on_message("/clock", clock(0.08), now)
    r.on_message("/joint_states", js(0.08), now)
    assert sink.written == [] and r.counts["pending"] == 4
    r.on_status(0.08, "running", status(0, 0.08), now)
    r.on_message("/hand_position_controller/commands", cmd(), now)  # header-less: /clock stamp
    for t in (0.16, 0.24):
        r.on_message("/clock", clock(t), now)
        r.on_message("/joint_states", js(t), now)
    # the status ending the trial comes after the data of its stamp
    r.on_status(0.24, "dropped", status(0, 0.08, ended=True, reason="dropped", successes=2), now)
    # a late message within the trial window still lands (grace period not over)
    r.on_message("/object/pose", _pose(0.16), now + 0.1)
    # between trials (0.32, reset), then trial 1 starts at 0.40
    r.on_message("/joint_states", js(0.32), now + 0.2)
    r.on_message("/joint_states", js(0.40), now + 0.2)
    r.tick(now + 0.3)
    assert "trial_000" not in sink.closed  # grace not over
    r.on_status(0.40, "running", status(1, 0.40), now + 0.8)
    assert sink.closed["trial_000"]["end_reason"] == "dropped"
    assert sink.stamps("trial_000", "/joint_states") == pytest.approx([0.08, 0.16, 0.24])
    assert sink.stamps("trial_000", "/hand_position_controller/commands") == pytest.approx([0.08])
    assert sink.stamps("trial_000", "/object/pose") == pytest.approx([0.16])
    assert sink.stamps(UNTRIALED, "/joint_states") == pytest.approx([0.0, 0.32])
    assert sink.stamps("trial_001", "/joint_states") == pytest.approx([0.40])
    meta = sink.closed["trial_000"]
    assert meta["successes"] == "2" and meta["seed"] == "10" and meta["trial"] == "0"
    assert meta["end_stamp"] == "0.240000000" and meta["pose_model_sha256"] == "def"
    # late after close -> untrialed, counted; unknown topic counted as bad
    r.on_message("/joint_states", js(0.2), now + 1.0)
    r.on_message("/nope", js(0.2), now + 1.0)
    assert r.counts["late"] == 1 and r.counts["bad"] == 1 and r.errors
    r.on_status(0.48, "finished", {}, now + 1.1)
    r.on_message("/joint_states", js(0.56), now + 1.2)  # after finished: untrialed
    r.close_all(now + 2)
    assert "incomplete" in sink.closed["trial_001"]["recorder_note"]
    assert UNTRIALED in sink.closed
    assert r.counts["received"] == r.counts["written"] + r.counts["bad"]


def test_backlog_after_the_end_keeps_the_bag_open() -> None:
    """Under load the recorder receives a trial's messages well after its end status; as long as
    they keep coming the bag stays open, and it closes grace_s after the last one."""
    sink = ListSink()
    r = TrialRouter(sink, topic_types(), grace_s=0.5)
    now = 50.0
    r.on_status(0.08, "running", status(0, 0.08), now)
    r.on_status(0.40, "dropped", status(0, 0.08, ended=True, reason="dropped"), now)
    for k in range(1, 6):  # the backlog: one set of the trial every 0.4 s (< grace apart)
        t = 0.08 * k
        r.on_message("/joint_states", js(t), now + 0.4 * k)
        r.tick(now + 0.4 * k + 0.3)
        assert "trial_000" not in sink.closed
    r.tick(now + 0.4 * 5 + 0.5)
    assert "trial_000" in sink.closed
    assert sink.stamps("trial_000", "/joint_states") == pytest.approx([0.08, 0.16, 0.24, 0.32, 0.40])
    assert r.counts["late"] == 0


def test_a_stream_in_flight_keeps_the_bag_open_until_it_passes_the_end() -> None:
    """A reliable stream DDS is repairing delivers a whole trial's worth seconds late; the bag
    waits for it (its stamps have not reached the end) instead of spilling it to untrialed. A
    stream that stopped holds the bag at most max_close_s."""
    sink = ListSink()
    r = TrialRouter(sink, topic_types(), grace_s=0.5, max_close_s=5.0)
    r.wait_topics = frozenset({"/joint_states", "/object/pose"})
    now = 10.0
    r.on_status(0.08, "running", status(0, 0.08), now)
    for t in (0.08, 0.16, 0.24):
        r.on_message("/joint_states", js(t), now)
    r.on_status(0.24, "timeout", status(0, 0.08, ended=True, reason="timeout"), now)
    r.on_message("/joint_states", js(0.32), now)  # joint states are past the end
    r.tick(now + 2.0)
    assert "trial_000" not in sink.closed and r.streams_behind(240_000_000) == ["/object/pose"]
    for t in (0.08, 0.16, 0.24, 0.32):  # the repaired stream arrives 3 s late, in order
        r.on_message("/object/pose", _pose(t), now + 3.0)
    r.tick(now + 3.6)
    assert sink.stamps("trial_000", "/object/pose") == pytest.approx([0.08, 0.16, 0.24])
    assert r.counts["late"] == 0 and not r.streams_behind(240_000_000)
    # Trial 1: the pose stream stops for good; the bag closes max_close_s after the end.
    r.on_status(0.40, "running", status(1, 0.40), now + 4.0)
    r.on_message("/joint_states", js(0.48), now + 4.0)
    r.on_status(0.48, "dropped", status(1, 0.40, ended=True, reason="dropped"), now + 4.0)
    r.on_message("/joint_states", js(0.56), now + 4.0)
    r.tick(now + 8.9)
    assert "trial_001" not in sink.closed
    r.tick(now + 9.0)
    assert sink.closed["trial_001"]["end_reason"] == "dropped"


def _pose(stamp: float) -> bytes:
    from geometry_msgs.msg import PoseStamped

    m = PoseStamped()
    m.header.stamp.sec = int(stamp)
    m.header.stamp.nanosec = round((stamp - int(stamp)) * 1e9)
    return serialize_message(m)


def test_buffer_is_bounded_and_write_errors_are_counted() -> None:
    class FailingSink(ListSink):
        def write(self, bag, topic, msgtype, stamp_ns, data):  # noqa: ANN001
            raise OSError("disk full")

    r = TrialRouter(ListSink(), topic_types(), max_pending=3)
    for i in range(5):
        r.on_message("/joint_states", js(i * 0.08), 0.0)  # no status yet: waits
    assert r.counts["pending"] == 3 and r.counts["overflow"] == 2
    f = TrialRouter(FailingSink(), topic_types())
    f.on_status(0.0, "running", status(0, 0.0), 0.0)
    f.on_message("/joint_states", js(0.0), 0.0)
    assert f.counts["write_errors"] == 1 and "disk full" in f.errors[-1]


def test_real_bags_read_back_with_rosbags(tmp_path: Path) -> None:
    sink = RosbagsSink(tmp_path)
    r = TrialRouter(sink, topic_types(), grace_s=0.0)
    for k, start in enumerate((0.0, 1.0)):
        r.on_status(start, "running", status(k, start), 0.0)
        for i in range(5):
            t = start + 0.08 * i
            r.on_message("/clock", clock(t), 0.0)
            r.on_message("/joint_states", js(t), 0.0)
            r.on_message("/hand_position_controller/commands", cmd(), 0.0)
        r.on_status(start + 0.32, "timeout", status(k, start, True, "timeout", successes=k), 0.0)
    r.on_status(1.5, "finished", {}, 0.0)
    r.close_all(1.0)
    for k in (0, 1):
        counts, custom = read_bag(tmp_path / bag_name(k))
        assert counts == {"/clock": 5, "/joint_states": 5, "/hand_position_controller/commands": 5}
        assert custom["end_reason"] == "timeout" and custom["successes"] == str(k)
        assert custom["trial"] == str(k) and custom["mode"] == "vision"
    assert (tmp_path / "trial_000" / "metadata.yaml").read_text().count("version: 8") == 1
    assert not (tmp_path / UNTRIALED).exists()
    # reading the bag's messages back gives the stamps we routed
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "trial_001") as reader:
        stamps = [ts for c, ts, _ in reader.messages() if c.topic == "/joint_states"]
    assert stamps == [round((1.0 + 0.08 * i) * 1e9) for i in range(5)]


def test_recorder_node_writes_bags_from_dds(node_procs, tmp_path: Path) -> None:
    """The real node: raw subscriptions over DDS, a trial from /trial/status, a bag on SIGINT."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import JointState

    out = tmp_path / "bags"
    proc = node_procs.start(
        "recorder",
        [sys.executable, "-m", "dex_bringup.recorder", "--ros-args", "-p", f"out_dir:={out}",
         "-p", "topics:=[/joint_states, /trial/status]", "-p", "grace_s:=0.2"],
    )
    rclpy.init()
    try:
        node = rclpy.create_node("test_pub")
        qos = QoSProfile(depth=50)
        pub_js = node.create_publisher(JointState, "/joint_states", qos)
        pub_st = node.create_publisher(DiagnosticArray, "/trial/status", qos)
        deadline = time.monotonic() + 20
        while (pub_js.get_subscription_count() < 1 or pub_st.get_subscription_count() < 1):
            assert time.monotonic() < deadline, "recorder never subscribed:\n" + node_procs.log("recorder")
            assert proc.poll() is None, node_procs.log("recorder")
            rclpy.spin_once(node, timeout_sec=0.1)

        def send_status(t: float, ended: bool) -> None:
            st = DiagnosticStatus(name="trial", message="timeout" if ended else "running")
            st.values = [KeyValue(key=k, value=v) for k, v in status(0, 1.0, ended, "timeout" if ended else "").items()]
            m = DiagnosticArray(status=[st])
            m.header.stamp.sec = int(t)
            m.header.stamp.nanosec = round((t - int(t)) * 1e9)
            pub_st.publish(m)

        for i in range(10):
            t = 1.0 + 0.08 * i
            m = JointState(name=["a"], position=[t])
            m.header.stamp.sec = int(t)
            m.header.stamp.nanosec = round((t - int(t)) * 1e9)
            pub_js.publish(m)
            send_status(t, ended=i == 9)
        # Stop only once the recorder says it wrote all 20 and closed the trial (its
        # /diagnostics), not after a guessed sleep: under load a sleep can be too short.
        seen: dict[str, str] = {}

        def on_diag(m: DiagnosticArray) -> None:
            for st in m.status:
                if st.name == "dex_recorder":
                    seen.update({kv.key: kv.value for kv in st.values})

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos)
        deadline = time.monotonic() + 30
        while not (seen.get("written") == "20" and seen.get("closed_trials") == "1"):
            assert time.monotonic() < deadline, f"recorder reports {seen}:\n" + node_procs.log(
                "recorder")
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown()
    node_procs.stop_all()
    assert proc.returncode == 0, node_procs.log("recorder")
    counts, custom = read_bag(out / "trial_000")
    # + the hand's description and fixed frames (no /tf: "a" is no hand's joint state)
    assert counts == {"/joint_states": 10, "/trial/status": 10, "/robot_description": 1,
                      "/tf_static": 1}, node_procs.log("recorder")
    assert custom["end_reason"] == "timeout" and custom["end_stamp"].startswith("1.72")
