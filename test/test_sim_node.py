"""The sim node as a real separate process over real DDS, driven by a test rclpy node (lockstep).

Checks the lockstep contract in docs/interfaces.md: every topic publishes, a set shares one
stamp, one command = one control period, /clock leads and matches, reset keeps time monotonic,
bad commands are ERRORs on /diagnostics while the sim keeps stepping, SIGINT exits cleanly.
"""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, UInt32

from dex_description.registry import get_hand

SPEC = get_hand("shadow")
PERIOD_NS = round(SPEC.control_period * 1e9)
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Listener:
    """Subscribes to every sim topic; records (topic, stamp_ns) and the latest messages."""

    def __init__(self, node, executor):
        self.node = node
        self.executor = executor
        executor.add_node(node)
        self.events: list[tuple[str, int]] = []
        self.last: dict[str, object] = {}
        self.diag: list[DiagnosticStatus] = []
        topics = [("/clock", Clock), ("/joint_states", JointState),
                  ("/object/pose_gt", PoseStamped)]
        for cam in SPEC.cameras:
            topics += [(f"/cameras/{cam.name}/image_raw", Image),
                       (f"/cameras/{cam.name}/camera_info", CameraInfo)]
        self.topics = [t for t, _ in topics]
        for topic, typ in topics:
            node.create_subscription(typ, topic, self._cb(topic), QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diag.extend(m.status), QOS)
        self.cmd_pub = node.create_publisher(Float64MultiArray,
                                             "/hand_position_controller/commands", QOS)
        self.reset_pub = node.create_publisher(UInt32, "/sim/reset", QOS)
        self.status_pub = node.create_publisher(DiagnosticArray, "/trial/status", QOS)

    def _cb(self, topic):
        def cb(msg):
            stamp = msg.clock if topic == "/clock" else msg.header.stamp
            self.events.append((topic, _ns(stamp)))
            self.last[topic] = msg
        return cb

    def stamps(self, topic: str) -> list[int]:
        return [s for t, s in self.events if t == topic]

    def spin_until(self, cond, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
            if cond():
                return True
        return False

    def complete_set(self, stamp: int) -> bool:
        return all(stamp in self.stamps(t) for t in self.topics)

    def latest_stamp(self) -> int:
        s = self.stamps("/object/pose_gt")  # published last in a set
        return s[-1] if s else -1

    def command(self, values) -> None:
        self.cmd_pub.publish(Float64MultiArray(data=[float(v) for v in values]))


@pytest.fixture(scope="module")
def env():
    domain = str(100 + random.randrange(60))
    child_env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                     MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dex_sim.node", "--ros-args", "-p", "mode:=lockstep",
         "-p", "seed:=3", "-p", "lockstep_resend_s:=1", "-p", "wait_topics:=all"],
        env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx, executor = _ros(int(domain))
    node = rclpy.create_node("dex_sim_test", context=ctx)
    lis = Listener(node, executor)
    yield proc, lis
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _ros(domain: int):
    """Own context on ``domain``, discovery on localhost (no global os.environ change: other
    test files in the same session keep their own settings)."""
    ctx = rclpy.Context()
    old = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # read by rcl at init
    try:
        rclpy.init(context=ctx, domain_id=domain)
    finally:
        if old is None:
            del os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        else:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = old
    return ctx, rclpy.executors.SingleThreadedExecutor(context=ctx)


def test_lockstep_node(env):
    proc, lis = env
    # 1. the first set arrives once we are subscribed (the sim waited for us), same stamp on all
    assert lis.spin_until(lambda: lis.latest_stamp() >= 0 and lis.complete_set(lis.latest_stamp()),
                          timeout=30), f"no first state set; sim output:\n{_drain(proc)}"
    t0 = lis.latest_stamp()
    first = [(t, s) for t, s in lis.events if s == t0]
    assert first[0][0] == "/clock", "clock must lead the set"
    assert {t for t, _ in first} == set(lis.topics)

    # message contents follow the registry
    js = lis.last["/joint_states"]
    assert list(js.name) == SPEC.joint_names
    assert len(js.position) == SPEC.n_joints and len(js.velocity) == SPEC.n_joints
    for cam in SPEC.cameras:
        im = lis.last[f"/cameras/{cam.name}/image_raw"]
        assert (im.height, im.width, im.encoding) == (cam.height, cam.width, "rgb8")
        assert im.header.frame_id == cam.frame_id
        assert len(im.data) == cam.height * cam.width * 3
        info = lis.last[f"/cameras/{cam.name}/camera_info"]
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), cam.intrinsics())
    pose = lis.last["/object/pose_gt"]
    assert pose.header.frame_id == "world"
    q = pose.pose.orientation
    assert abs(np.linalg.norm([q.w, q.x, q.y, q.z]) - 1) < 1e-6

    # 2. one command = one control period, exactly
    lo, hi = SPEC.actuator_limits()
    stamps = [t0]
    for k in range(5):
        lis.command(lo + (0.2 + 0.1 * k) * (hi - lo))
        want = stamps[-1] + PERIOD_NS
        assert lis.spin_until(lambda w=want: lis.complete_set(w), 10), f"no set at {want}"
        stamps.append(want)
    assert np.all(np.diff(stamps) == PERIOD_NS)
    assert lis.stamps("/clock")[-1] == stamps[-1]
    # no extra sets were stepped: one command produced exactly one new stamp
    assert sorted(set(lis.stamps("/joint_states"))) == stamps

    # 3. a NaN command and a wrong-length command: ERROR on /diagnostics, the sim still steps
    for bad in ([float("nan")] * SPEC.n_actuators, [0.0] * (SPEC.n_actuators - 3)):
        n_diag = len(lis.diag)
        lis.command(bad)
        want = stamps[-1] + PERIOD_NS
        assert lis.spin_until(lambda w=want: lis.complete_set(w), 10), "sim stalled on bad cmd"
        stamps.append(want)
        assert lis.spin_until(lambda n=n_diag: any(
            s.level == DiagnosticStatus.ERROR for s in lis.diag[n:]), 5)
        err = [s for s in lis.diag[n_diag:] if s.level == DiagnosticStatus.ERROR][0]
        assert err.name.startswith("dex_sim") and "command" in err.message
    assert np.all(np.isfinite(lis.last["/joint_states"].position))

    # 4. reset: a fresh set with a strictly newer stamp (clock never rewinds)
    before = lis.latest_stamp()
    lis.reset_pub.publish(UInt32(data=11))
    assert lis.spin_until(lambda: lis.latest_stamp() > before, 10)
    after = lis.latest_stamp()
    assert lis.spin_until(lambda: lis.complete_set(after), 5)
    assert after > before
    assert all(np.diff(lis.stamps("/clock")) >= 0), "clock went backwards"

    # 5. no command: the same set is re-sent after lockstep_resend_s (same stamp)
    n_js = len(lis.stamps("/joint_states"))
    assert lis.spin_until(lambda: len(lis.stamps("/joint_states")) > n_js, 5)
    assert lis.stamps("/joint_states")[-1] == after

    # 6. periodic status carries the measurements
    assert lis.spin_until(lambda: any("loop_latency_p50_ms" in {kv.key for kv in s.values}
                                      for s in lis.diag), 5)
    keys = {kv.key for s in lis.diag for kv in s.values}
    for k in ("physics_p50_ms", "render_p99_ms", "publish_p50_ms", "loop_latency_p99_ms"):
        assert k in keys

    # 7. nobody commands for 3 re-sends: the controller is reported missing (STALE), and a
    # command clears it
    assert lis.spin_until(lambda: any(
        s.name == "dex_sim" and s.level == DiagnosticStatus.STALE
        and "is the controller running" in s.message for s in lis.diag), 8)
    lis.command(lo + 0.5 * (hi - lo))
    want = after + PERIOD_NS
    assert lis.spin_until(lambda: lis.complete_set(want), 10)
    n_diag = len(lis.diag)
    assert lis.spin_until(lambda: any(s.name == "dex_sim" and s.level == DiagnosticStatus.OK
                                      for s in lis.diag[n_diag:]), 5)

    # 7b. the controller reports 'finished': no more re-sends (the last trial's bag stops
    # growing), OK "idle" instead of STALE; a reset brings the sets back
    fin = DiagnosticArray()
    fin.status = [DiagnosticStatus(name="trial", message="finished")]
    lis.status_pub.publish(fin)
    n_diag = len(lis.diag)
    assert lis.spin_until(lambda: any(s.name == "dex_sim" and "idle" in s.message
                                      and s.level == DiagnosticStatus.OK
                                      for s in lis.diag[n_diag:]), 5)
    n_js = len(lis.stamps("/joint_states"))
    lis.spin_until(lambda: False, 3.5)  # > 3 re-send periods
    assert len(lis.stamps("/joint_states")) == n_js, "re-sent after 'finished'"
    assert not any(s.name == "dex_sim" and s.level == DiagnosticStatus.STALE
                   for s in lis.diag[n_diag:])
    lis.reset_pub.publish(UInt32(data=12))
    assert lis.spin_until(lambda: len(lis.stamps("/joint_states")) > n_js, 5)

    # 8. SIGINT: clean exit, no traceback
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert "summary" in out


def test_realtime_mode_steps_on_wall_clock_and_holds_bad_command():
    domain = str(160 + random.randrange(40))  # DDS domain ids must stay <= 232
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dex_sim.node", "--ros-args", "-p", "mode:=realtime",
         "-p", "publish_images:=false"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx, executor = _ros(int(domain))
    try:
        node = rclpy.create_node("dex_sim_rt_test", context=ctx)
        lis = Listener(node, executor)
        # no command needed: the sim steps by itself, every stamp on the control-period grid
        assert lis.spin_until(lambda: len(lis.stamps("/clock")) >= 5, 30), _drain(proc)
        clock = lis.stamps("/clock")
        assert all(np.diff(clock) > 0) and all(c % PERIOD_NS == 0 for c in clock)
        n_diag = len(lis.diag)
        lis.command([float("inf")] * SPEC.n_actuators)
        assert lis.spin_until(lambda: any(s.level == DiagnosticStatus.ERROR
                                          for s in lis.diag[n_diag:]), 10)
        n = len(lis.stamps("/clock"))
        assert lis.spin_until(lambda: len(lis.stamps("/clock")) >= n + 3, 10), "sim stopped"
        assert np.all(np.isfinite(lis.last["/joint_states"].position))
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_lockstep_waits_for_wait_nodes():
    """A node named in wait_nodes that is not on the graph yet holds the first set back (the
    matching rule cannot wait for a peer it does not know); it is sent once that node shows up
    with a subscription."""
    domain = str(120 + random.randrange(40))
    env = dict(os.environ, ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dex_sim.node", "--ros-args", "-p", "mode:=lockstep",
         "-p", "publish_images:=false", "-p", "wait_nodes:=late_observer"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx, executor = _ros(int(domain))
    try:
        node = rclpy.create_node("dex_sim_wait_test", context=ctx)
        lis = Listener(node, executor)
        # Everything the default rule waits for is here; the named node is not. The sim must
        # be up and say it waits for that node (not merely slow to start), and send nothing.
        assert lis.spin_until(lambda: any("(node late_observer)" in s.message for s in lis.diag),
                              30.0), _drain(proc)
        assert not lis.stamps("/clock"), "sent before late_observer"
        assert not lis.spin_until(lambda: lis.stamps("/clock"), 1.0), "sent before late_observer"
        late = rclpy.create_node("late_observer", context=ctx)
        late.create_subscription(JointState, "/joint_states", lambda m: None, QOS)
        executor.add_node(late)
        assert lis.spin_until(lambda: lis.stamps("/clock"), 20.0), _drain(proc)
        late.destroy_node()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=15)[0]
    assert "Traceback" not in out, out


def test_bad_mode_is_a_clear_error():
    env = dict(os.environ, ROS_DOMAIN_ID=str(200 + random.randrange(30)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    r = subprocess.run([sys.executable, "-m", "dex_sim.node", "--ros-args", "-p", "mode:=fast"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "mode='fast' is not one of" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def _drain(proc) -> str:
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=5)[0]
