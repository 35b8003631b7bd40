"""The perception node: 3 camera images → cube pose (thin adapter over ``PoseEstimator``).

    python -m dex_perception.node --ros-args -p hand:=shadow -p model_path:="" -p slop:=0.005

Subscribes ``/cameras/<cam>/image_raw`` for every registry camera, joins them with the shared
``ApproxTimeSynchronizer``, runs the estimator, and publishes ``/object/pose`` (PoseStamped, frame
``world``) whose header stamp is exactly the cameras' stamp.

Every estimate after the first also gets ``/object/pose_speed`` (TwistStamped, same stamp and
frame): the angular (rad/s) and linear (m/s) velocity it implies against the last plausible
estimate (``dex_common.pose_gate``). It is the node's per-estimate plausibility measure: an
estimate that implies more than ``max_cube_angular_speed`` / ``max_cube_linear_speed`` (a face
taken for another: a 90° flip in one period) is one no cube can make; it is still published
(consumers judge it: the controller holds), counted as ``implausible_estimates`` and WARNed.
Each /sim/reset (the trial node starting a trial: the cube was put back) makes the next
estimate a new reference, so a reset is not counted as a jump.

Bad input (encoding other than rgb8, wrong size, short buffer), bad speed limits (the defaults
are used), a missing model or a model whose contract does not match the registry → ERROR on
/diagnostics and in the log; the node stays up (with no model it publishes nothing but keeps
reporting why).
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import UInt32

from dex_common.pose_gate import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, gate_from_parameters
from dex_common.ros_util import (
    ERROR,
    IMAGE_QOS,
    OK,
    STATE_QOS,
    WARN,
    DiagnosticsPublisher,
    clock_now,
    run_node,
    stamp_to_float,
)
from dex_common.sync import ApproxTimeSynchronizer
from dex_description.registry import get_hand
from dex_perception.runtime import ImageError, PoseEstimator, default_model_path

NODE_NAME = "dex_perception"
DIAG_NAME = "dex_perception"
RECENT_ERROR_S = 5.0  # diagnostics stay WARN this long (wall s) after a rejected input


def image_to_array(msg: Image, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image (rgb8) → uint8 (H, W, 3) view of the message buffer (no copy; rows
    padded by ``step`` are sliced, not copied). Raises ImageError for a wrong encoding, size or
    buffer length."""
    if msg.encoding != "rgb8":
        raise ImageError(f"encoding {msg.encoding!r}: only 'rgb8' is supported")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if expect_hw is not None and (h, w) != tuple(expect_hw):
        raise ImageError(f"size {h}x{w} (HxW): the model expects {expect_hw[0]}x{expect_hw[1]}")
    if step < 3 * w:
        raise ImageError(f"step {step} < 3 * width {w}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)  # array.array / bytes: shares memory
    if buf.size < h * step:
        raise ImageError(f"data has {buf.size} bytes; {h} rows of step {step} need {h * step}")
    rows = buf[: h * step].reshape(h, step)
    return rows[:, : 3 * w].reshape(h, w, 3)


class PerceptionNode(Node):
    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        self.declare_parameter("hand", "shadow")
        self.declare_parameter("model_path", "")
        self.declare_parameter("slop", 0.005)
        self.declare_parameter("max_cube_angular_speed", MAX_ANGULAR_SPEED)
        self.declare_parameter("max_cube_linear_speed", MAX_LINEAR_SPEED)
        hand = str(self.get_parameter("hand").value)
        self.spec = get_hand(hand)
        self.cameras = self.spec.camera_names
        self.expect_hw = [(c.height, c.width) for c in self.spec.cameras]
        self.diag = DiagnosticsPublisher(self)
        self._lock = threading.Lock()
        self.published = 0
        self.image_errors = 0
        self.inference_errors = 0
        self.stamp_errors = 0
        self.implausible = 0
        self.trial_resets = 0
        self.last_error = ""
        self.model_error = ""
        self.config_error = ""
        self._last_error_wall = -1e9

        mp = str(self.get_parameter("model_path").value)
        self.model_path = mp or str(default_model_path(hand))
        self.estimator: PoseEstimator | None = None
        self.model_sha256 = ""
        try:
            self.estimator = PoseEstimator(self.model_path, hand)
            self.model_sha256 = self.estimator.sha256
            self.get_logger().info(f"pose model {self.model_path} sha256 {self.model_sha256[:12]}")
        except Exception as e:  # missing file, bad contract, unreadable ONNX: report, stay up
            self.model_error = f"pose model unusable: {type(e).__name__}: {e}"
            self.get_logger().error(self.model_error)

        self.gate, problem = gate_from_parameters(
            self.get_parameter("max_cube_angular_speed").value,
            self.get_parameter("max_cube_linear_speed").value)
        if problem:  # bad limits: ERROR on /diagnostics, judge with the defaults
            self.config_error = (f"{problem}; using {MAX_ANGULAR_SPEED} rad/s / "
                                 f"{MAX_LINEAR_SPEED} m/s")
            self.get_logger().error(self.config_error)
        self.sync = ApproxTimeSynchronizer(
            len(self.cameras), slop=float(self.get_parameter("slop").value), queue_size=8
        )
        self.pub = self.create_publisher(PoseStamped, "/object/pose", STATE_QOS)
        self.speed_pub = self.create_publisher(TwistStamped, "/object/pose_speed", STATE_QOS)
        self.subs = [
            self.create_subscription(
                Image, f"/cameras/{name}/image_raw",
                lambda msg, i=i: self._on_image(i, msg), IMAGE_QOS,
            )
            for i, name in enumerate(self.cameras)
        ]
        # A trial starts with the cube put back (the sim resets it; on a real hand, a person):
        # the next estimate starts a new reference instead of counting as a jump.
        self.create_subscription(UInt32, "/sim/reset", self._on_trial_reset, STATE_QOS)
        # Steady clock: keeps reporting while sim time (/clock) is paused.
        self.create_timer(1.0, self._periodic, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._report()

    # ---- callbacks ---------------------------------------------------------------------------
    def _on_trial_reset(self, _msg: UInt32) -> None:
        with self._lock:
            self.gate.reset()
            self.trial_resets += 1
        self._report()

    def _on_image(self, stream: int, msg: Image) -> None:
        with self._lock:
            t = stamp_to_float(msg.header.stamp)
            rejected = self._stamp_rejects()
            sets = self.sync.add(stream, t, msg, now=clock_now(self))
            if self._stamp_rejects() > rejected:
                # Non-finite, or off the other cameras' time (0, far ahead): held aside until
                # the camera was back on time, then dropped; nothing was flushed.
                self.stamp_errors += self._stamp_rejects() - rejected
                self.last_error = (f"{self.cameras[stream]}: image stamp(s) off the cameras' "
                                   f"timeline rejected")
                self._last_error_wall = time.monotonic()
                self.get_logger().warning(self.last_error, throttle_duration_sec=1.0)
                self._report(level=WARN, message=self.last_error)
            for s in sets:
                self._process(s)

    def _stamp_rejects(self) -> int:
        return self.sync.total("dropped_implausible") + self.sync.total("dropped_invalid")

    def _process(self, msgs: list[Image]) -> None:
        if self.estimator is None:
            return  # the model error is reported every second
        images = []
        for name, m, hw in zip(self.cameras, msgs, self.expect_hw, strict=True):
            try:
                images.append(image_to_array(m, hw))
            except ImageError as e:
                self._error("image", f"{name}: {e}", msgs)
                return
        try:
            pos, quat = self.estimator.predict(images)
        except ImageError as e:
            self._error("image", str(e), msgs)
            return
        except Exception as e:  # inference failure (non-finite output, ORT error)
            self._error("inference", f"{type(e).__name__}: {e}", msgs)
            return
        out = PoseStamped()
        out.header.stamp = msgs[0].header.stamp  # the cameras' stamp, never now()
        out.header.frame_id = self.spec.base_frame
        p, q = out.pose.position, out.pose.orientation
        p.x, p.y, p.z = (float(v) for v in pos)
        q.w, q.x, q.y, q.z = (float(v) for v in quat)
        stamp = stamp_to_float(out.header.stamp)
        verdict = self.gate.check(stamp, pos, quat)
        try:
            self.pub.publish(out)
            self.published += 1
            if np.all(np.isfinite(verdict.angular_velocity)):  # none for the first estimate
                speed = TwistStamped()
                speed.header = out.header
                a, v = speed.twist.angular, speed.twist.linear
                a.x, a.y, a.z = (float(x) for x in verdict.angular_velocity)
                v.x, v.y, v.z = (float(x) for x in verdict.linear_velocity)
                self.speed_pub.publish(speed)
        except Exception as e:  # publishing during shutdown can raise RCLError
            self.get_logger().warning(f"publish failed: {e}")
        if not verdict.plausible:
            self.implausible += 1
            self.last_error = (f"implausible estimate at stamp {stamp:.6f}:"
                               f" the cube would have turned at {verdict.angular_speed:.0f} rad/s /"
                               f" moved at {verdict.linear_speed:.2f} m/s")
            self._last_error_wall = time.monotonic()
            self.get_logger().warning(self.last_error, throttle_duration_sec=1.0)
            self._report(level=WARN, message=self.last_error)

    def _error(self, kind: str, text: str, msgs: list[Image]) -> None:
        if kind == "image":
            self.image_errors += 1
        else:
            self.inference_errors += 1
        stamp = stamp_to_float(msgs[0].header.stamp)
        self.last_error = f"{kind} error at stamp {stamp:.6f}: {text}"
        self._last_error_wall = time.monotonic()
        self.get_logger().error(self.last_error)
        self._report(level=ERROR, message=self.last_error)

    # ---- diagnostics -------------------------------------------------------------------------
    def _values(self) -> dict[str, object]:
        v: dict[str, object] = {
            "model_path": self.model_path,
            "model_sha256": self.model_sha256,
            "poses_published": self.published,
            "image_errors": self.image_errors,
            "inference_errors": self.inference_errors,
            "stamp_errors": self.stamp_errors,
            "implausible_estimates": self.implausible,
            "trial_resets": self.trial_resets,
            "last_error": self.last_error or self.model_error or self.config_error,
        }
        if self.estimator is not None:
            t = self.estimator.timing.summary()
            v.update(inference_p50_ms=t["p50_ms"], inference_p99_ms=t["p99_ms"],
                     inferences=t["count"])
            ev = self.estimator.eval
            for k in ("position_error_mm", "rotation_error_deg"):
                if k in ev:
                    v["model_val_" + k] = ev[k]
        for k, n in self.sync.stats.items():
            if "." not in k:  # totals only (per-stream counts would flood the status)
                v["sync_" + k] = n
        return v

    def _periodic(self) -> None:
        with self._lock:
            self._report(immediate=False)  # DiagnosticsPublisher republishes at 1 Hz

    def _report(self, level: int | None = None, message: str | None = None,
                immediate: bool = True) -> None:
        if self.model_error or self.config_error:
            level, message = ERROR, self.model_error or self.config_error
        elif level is None:
            # WARN for a while after a rejected input, then back to OK.
            recent = time.monotonic() - self._last_error_wall < RECENT_ERROR_S
            level = WARN if recent else OK
            message = f"{self.published} poses published" + (
                f"; last error: {self.last_error}" if self.last_error else "")
        self.diag.report(DIAG_NAME, level, message or "", self._values(), immediate=immediate)


def main(args: list[str] | None = None) -> int:
    # Never a start error: a missing or mismatched model is reported on /diagnostics.
    return run_node(PerceptionNode, "dex_perception", (), None, args)


if __name__ == "__main__":
    sys.exit(main())
