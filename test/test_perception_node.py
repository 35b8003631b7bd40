"""The perception node as a real process over DDS: real rendered images in, /object/pose out with
exactly the input stamp; bad input → ERROR on /diagnostics and the node keeps working."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from dex_common.ros_util import IMAGE_QOS, STATE_QOS  # noqa: E402
from dex_description.registry import get_hand  # noqa: E402
from dex_perception.node import image_to_array  # noqa: E402
from dex_perception.runtime import ImageError  # noqa: E402

SPEC = get_hand("shadow")
DOMAIN = 100 + random.randrange(100)


def _image(img: np.ndarray, stamp: Time, frame: str, encoding: str = "rgb8") -> Image:
    h, w, _ = img.shape
    m = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * 3)
    m.header.stamp = stamp
    m.header.frame_id = frame
    m.data = img.tobytes()
    return m


def test_image_to_array_respects_step_and_rejects_bad_input() -> None:
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    padded = np.zeros((4, 5 * 3 + 7), np.uint8)
    padded[:, :15] = img.reshape(4, 15)
    m = Image(height=4, width=5, encoding="rgb8", step=22)
    m.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_array(m, (4, 5)), img)
    with pytest.raises(ImageError, match="size 4x5"):
        image_to_array(m, (8, 8))
    m.encoding = "bgr8"
    with pytest.raises(ImageError, match="rgb8"):
        image_to_array(m, (4, 5))
    m.encoding, m.data = "rgb8", padded.tobytes()[:50]
    with pytest.raises(ImageError, match="bytes"):
        image_to_array(m, (4, 5))


def _render_views(seed: int) -> list[np.ndarray]:
    """The three camera views of the scene reset with ``seed`` (face up and yaw from it)."""
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim("shadow", render=True)
    try:
        sim.reset(seed)
        sim.step_control()
        return [sim.render(name) for name in SPEC.camera_names]
    finally:
        sim.close()


@pytest.fixture(scope="module")
def rendered() -> list[np.ndarray]:
    return _render_views(3)


@pytest.fixture(scope="module")
def rendered_other() -> list[np.ndarray]:
    """Another seed: another face up and yaw."""
    return _render_views(8)


def _start_node(*params: str) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "dex_perception.node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read() if proc.stdout else ""


class Probe:
    """Test-side node: publishes camera images, collects poses and diagnostics."""

    def __init__(self) -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN)
        self.node = rclpy.create_node("perception_probe", context=self.ctx)
        self.exec = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.exec.add_node(self.node)
        self.pubs = [self.node.create_publisher(Image, f"/cameras/{n}/image_raw", IMAGE_QOS)
                     for n in SPEC.camera_names]
        self.poses: list[PoseStamped] = []
        self.diags: list[DiagnosticStatus] = []
        self.speeds: list[TwistStamped] = []
        self.node.create_subscription(PoseStamped, "/object/pose", self.poses.append, STATE_QOS)
        self.node.create_subscription(TwistStamped, "/object/pose_speed", self.speeds.append,
                                      STATE_QOS)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: self.diags.extend(s for s in m.status if s.name == "dex_perception"),
            STATE_QOS,
        )

    def spin_until(self, cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.exec.spin_once(timeout_sec=0.05)
            if cond():
                return True
        return False

    def publish_set(self, images: list[np.ndarray], stamp: Time, encoding: str = "rgb8") -> None:
        for pub, img, cam in zip(self.pubs, images, SPEC.cameras, strict=True):
            pub.publish(_image(img, stamp, cam.frame_id, encoding))

    def close(self) -> None:
        self.exec.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def probe():
    p = Probe()
    yield p
    p.close()


def test_node_publishes_pose_with_input_stamp_and_survives_bad_input(probe, rendered) -> None:
    proc = _start_node("hand:=shadow", "use_sim_time:=true")
    try:
        ready = probe.spin_until(
            lambda: all(p.get_subscription_count() >= 1 for p in probe.pubs)
            and probe.node.count_publishers("/object/pose") >= 1,
            30.0,
        )
        assert ready, "perception node did not come up: " + _stop(proc)

        stamp = Time(sec=12, nanosec=340_000_001)
        probe.publish_set(rendered, stamp)
        assert probe.spin_until(lambda: len(probe.poses) >= 1, 20.0), "no /object/pose"
        pose = probe.poses[0]
        assert (pose.header.stamp.sec, pose.header.stamp.nanosec) == (12, 340_000_001)
        assert pose.header.frame_id == "world"
        q = pose.pose.orientation
        assert abs(np.linalg.norm([q.w, q.x, q.y, q.z]) - 1.0) < 1e-6
        p = pose.pose.position
        assert np.linalg.norm(np.array([p.x, p.y, p.z]) - SPEC.cube.rest_pos) < 0.1

        # Wrong size: ERROR on /diagnostics naming the problem, no pose.
        small = [img[::2, ::2].copy() for img in rendered]
        probe.publish_set(small, Time(sec=13))
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.ERROR and "size" in d.message
                        for d in probe.diags), 20.0), [d.message for d in probe.diags]
        # Wrong encoding: ERROR too.
        probe.publish_set(rendered, Time(sec=14), encoding="bgr8")
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.ERROR and "rgb8" in d.message
                        for d in probe.diags), 20.0)
        assert len(probe.poses) == 1
        assert proc.poll() is None, "node died on bad input"

        # A following good set is handled normally.
        probe.publish_set(rendered, Time(sec=14, nanosec=80_000_000))
        assert probe.spin_until(lambda: len(probe.poses) >= 2, 20.0), "no pose after bad input"
        st = probe.poses[1].header.stamp
        assert (st.sec, st.nanosec) == (14, 80_000_000)

        # One camera's image stamped 0: rejected (a WARN naming the camera); it flushes
        # nothing, and the next set gives a pose at once.
        bad = _image(rendered[1], Time(sec=0), SPEC.cameras[1].frame_id, "rgb8")
        probe.pubs[1].publish(bad)
        probe.publish_set(rendered, Time(sec=14, nanosec=160_000_000))
        assert probe.spin_until(lambda: len(probe.poses) >= 3, 20.0), "no pose after a bad stamp"
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.WARN and SPEC.camera_names[1] in d.message
                        and "timeline" in d.message for d in probe.diags), 20.0)

        # Diagnostics carry the model identity and timing.
        assert probe.spin_until(
            lambda: any(any(kv.key == "inference_p50_ms" for kv in d.values)
                        for d in probe.diags), 5.0)
        values = {kv.key: kv.value for kv in probe.diags[-1].values}
        assert len(values["model_sha256"]) == 64
        assert int(values["image_errors"]) == 2
        assert int(values["stamp_errors"]) == 1 and int(values["sync_clock_jumps"]) == 0
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out


def test_node_publishes_each_estimates_implied_speed_and_flags_a_jump(
        probe, rendered, rendered_other) -> None:
    """/object/pose_speed: ~0 for the same view 80 ms later; a different cube pose 1 µs later
    implies a speed no cube has: WARN and ``implausible_estimates`` (the pose still goes out)."""
    proc = _start_node("hand:=shadow", "use_sim_time:=true")
    try:
        assert probe.spin_until(
            lambda: all(p.get_subscription_count() >= 1 for p in probe.pubs)
            and probe.node.count_publishers("/object/pose_speed") >= 1, 30.0), _stop(proc)
        probe.publish_set(rendered, Time(sec=20))
        assert probe.spin_until(lambda: len(probe.poses) >= 1, 20.0), "no /object/pose"
        probe.publish_set(rendered, Time(sec=20, nanosec=80_000_000))
        assert probe.spin_until(lambda: len(probe.speeds) >= 1, 20.0), "no /object/pose_speed"
        first = probe.speeds[0]
        assert (first.header.stamp.sec, first.header.stamp.nanosec) == (20, 80_000_000)
        assert first.header.frame_id == "world"
        w, v = first.twist.angular, first.twist.linear
        assert np.linalg.norm([w.x, w.y, w.z]) < 1e-3 and np.linalg.norm([v.x, v.y, v.z]) < 1e-4

        probe.publish_set(rendered_other, Time(sec=20, nanosec=80_001_000))
        assert probe.spin_until(lambda: len(probe.speeds) >= 2, 20.0)
        w, v = probe.speeds[1].twist.angular, probe.speeds[1].twist.linear
        assert np.linalg.norm([w.x, w.y, w.z]) > 25.0 or np.linalg.norm([v.x, v.y, v.z]) > 3.0
        assert len(probe.poses) == 3  # published all the same
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.WARN and "implausible" in d.message
                        for d in probe.diags), 20.0), [d.message for d in probe.diags]
        values = {kv.key: kv.value for kv in probe.diags[-1].values}
        assert int(values["implausible_estimates"]) == 1
        # A trial starts (/sim/reset: the cube was put back): the next estimate, however far
        # from the last, is a new reference: no implied speed, no jump counted.
        from std_msgs.msg import UInt32

        reset_pub = probe.node.create_publisher(UInt32, "/sim/reset", STATE_QOS)
        assert probe.spin_until(lambda: reset_pub.get_subscription_count() >= 1, 20.0)
        reset_pub.publish(UInt32(data=1))
        assert probe.spin_until(lambda: any(
            kv.key == "trial_resets" and kv.value == "1" for d in probe.diags
            for kv in d.values), 20.0)
        probe.publish_set(rendered_other, Time(sec=20, nanosec=80_002_000))
        assert probe.spin_until(lambda: len(probe.poses) >= 4, 20.0)
        assert not probe.spin_until(lambda: len(probe.speeds) > 2, 1.0)
        n = len(probe.diags)
        assert probe.spin_until(lambda: len(probe.diags) > n, 5.0)
        values = {kv.key: kv.value for kv in probe.diags[-1].values}
        assert int(values["implausible_estimates"]) == 1
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out


def test_node_without_model_reports_error_and_stays_up(probe, tmp_path) -> None:
    proc = _start_node("hand:=shadow", f"model_path:={tmp_path / 'missing.onnx'}")
    try:
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.ERROR and "not found" in d.message
                        for d in probe.diags), 30.0), "no ERROR diagnostics: " + _stop(proc)
        n = len(probe.diags)
        assert probe.spin_until(lambda: len(probe.diags) > n, 5.0)  # keeps reporting
        assert proc.poll() is None
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out


def test_node_with_bad_speed_limits_reports_error_and_still_estimates(probe, rendered) -> None:
    proc = _start_node("hand:=shadow", "use_sim_time:=true", "max_cube_angular_speed:=-1.0")
    try:
        assert probe.spin_until(
            lambda: any(d.level == DiagnosticStatus.ERROR and "max_cube_angular_speed" in d.message
                        for d in probe.diags), 30.0), "no ERROR diagnostics: " + _stop(proc)
        assert probe.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in probe.pubs),
                                30.0)
        probe.publish_set(rendered, Time(sec=30))
        assert probe.spin_until(lambda: len(probe.poses) >= 1, 20.0), "no pose with bad limits"
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out
