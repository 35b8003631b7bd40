"""The sim node (``python -m dex_sim.node``): a thin ROS adapter over :class:`HandCubeSim`.

It is the clock source (publishes /clock; never uses sim time itself) and publishes one state
set per control step, every message of a set with the same stamp = sim time: /clock first,
then /joint_states, the camera images + infos, /object/pose_gt. Modes (docs/interfaces.md):

- ``lockstep``: wait until the state topics have subscribers and the command topic a
  publisher, publish the first set, then one command = one control period = one new set.
  No command for ``lockstep_resend_s`` (wall) -> the same set again. /sim/reset(seed) resets
  the physics (the clock keeps going) and publishes a fresh set.
- ``realtime``: a wall timer steps every control period holding the last command; overruns are
  counted and reported.

A malformed command (wrong length, NaN/Inf) is an ERROR on /diagnostics and in the log; the
hand holds the last safe command, and in lockstep the step still advances (with the held
command) so the loop never stalls.
"""

from __future__ import annotations

import array
import math
import sys
import time
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, UInt32

from dex_common.ros_util import (
    COMMAND_TOPIC,
    IMAGE_QOS,
    STATE_QOS,
    STATE_WRITER_QOS,
    DiagnosticsPublisher,
    ns_to_stamp,
    run_node,
)
from dex_common.stats import RollingStats
from dex_description.registry import get_hand
from dex_sim.physics import HandCubeSim

try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - older/newer rclpy layouts
    RCLError = RuntimeError

MODES = ("lockstep", "realtime")
STATUS = "dex_sim"  # periodic status: mode, counters, timing stats
CMD_STATUS = "dex_sim/commands"  # ERROR at once on a rejected command, OK again a period later


# Longest wait (wall s) for peers the graph knows about to match before the first lockstep set.
UNMATCHED_PEER_WAIT_S = 5.0
# Lockstep: this many re-sends unanswered and the controller is reported missing (STALE).
CONTROLLER_STALE_RESENDS = 3
# Least wall time between start and the first lockstep set: participants that already run (a
# recorder, a monitor) need a moment to be discovered at all; once they are in the graph, the
# known-peer rule above waits for them to match.
DISCOVERY_SETTLE_S = 1.0
# Longest wait (wall s) for the ``wait_nodes`` to be discovered; then lockstep starts anyway and
# reports an error on /diagnostics.
WAIT_NODES_MAX_S = 30.0


class ParameterError(ValueError):
    """A parameter the node cannot run with."""


def _f64(a: np.ndarray) -> array.array:
    # array.array is what rclpy stores; building it from bytes skips per-element checks.
    return array.array("d", np.ascontiguousarray(a, dtype=np.float64).tobytes())


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_sim")
        self.hand = self.declare_parameter("hand", "shadow").value
        self.mode = self.declare_parameter("mode", "lockstep").value
        self.seed = self.declare_parameter("seed", 0).value
        self.publish_images = self.declare_parameter("publish_images", True).value
        # dynamic typing: accept `lockstep_resend_s:=1` (an int) as well as 1.0
        self.resend_s = self.declare_parameter(
            "lockstep_resend_s", 1.0, ParameterDescriptor(dynamic_typing=True)).value
        # Which peers lockstep waits for before its first set (see _wait_topics): "auto",
        # "all", "" / "none", or a comma-separated topic list.
        self.wait_topics_param = self.declare_parameter("wait_topics", "auto").value
        # Nodes (comma-separated names) lockstep waits to have discovered, with their
        # subscriptions, before its first set: a peer the graph does not list yet cannot be
        # waited for by the matching rule, and DDS discovery of a busy peer can take seconds.
        self.wait_nodes = [n.strip() for n in str(
            self.declare_parameter("wait_nodes", "").value).split(",") if n.strip()]
        self.diag = DiagnosticsPublisher(self, hardware_id=f"dex_sim/{self.hand}")
        self._validate_params()
        self.resend_s = float(self.resend_s)
        if self.get_parameter("use_sim_time").value:
            # The sim *is* the clock; subscribing to its own /clock would deadlock it.
            self.get_logger().warning("use_sim_time:=true ignored: the sim is the clock source")
            self.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])

        self.sim = HandCubeSim(self.hand, render=self.publish_images)
        self.sim.reset(self.seed)
        self.spec = self.sim.spec
        if self.publish_images:  # create the GL context now, not inside the first timed step
            self.sim.render(self.spec.cameras[0].name)
        self.period = self.spec.control_period

        # ---- publishers (order of creation = nothing; order of publishing = /clock first) ----
        self.clock_pub = self.create_publisher(Clock, "/clock", STATE_QOS)
        self.js_pub = self.create_publisher(JointState, "/joint_states", STATE_WRITER_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, "/object/pose_gt", STATE_WRITER_QOS)
        self.img_pubs = []
        self.info_pubs = []
        if self.publish_images:
            for cam in self.spec.cameras:
                self.img_pubs.append(self.create_publisher(
                    Image, f"/cameras/{cam.name}/image_raw", IMAGE_QOS))
                self.info_pubs.append(self.create_publisher(
                    CameraInfo, f"/cameras/{cam.name}/camera_info", STATE_QOS))
        self._build_messages()

        self.cmd_sub = self.create_subscription(
            Float64MultiArray, COMMAND_TOPIC, self._on_command, STATE_QOS)
        self.create_subscription(UInt32, "/sim/reset", self._on_reset, STATE_QOS)
        self.create_subscription(PoseStamped, "/goal/pose", self._on_goal, STATE_QOS)
        # The controller's "finished": its trials are done, nobody will answer a set again.
        self.create_subscription(DiagnosticArray, "/trial/status", self._on_trial_status,
                                 STATE_QOS)

        # ---- measurements ----
        self.t_physics = RollingStats()
        self.t_render = RollingStats()
        self.t_publish = RollingStats()
        self.loop_latency = RollingStats()
        self.tick_interval = RollingStats()
        self.steps = 0
        self.resets = 0
        self.resends = 0
        self.overruns = 0
        self.publish_errors = 0
        self._rejected_since = 0
        self._clamped_since = 0
        self._overruns_since = 0
        self._last_error = ""
        self._start_wall = time.perf_counter()
        self._last_pub_wall = 0.0
        self._published_once = False
        self._awaiting = False  # lockstep: a set is out and we wait for its command
        self._set_out_wall = time.perf_counter()  # when the set we wait on first went out
        self._controller_missing = ""  # lockstep: why we think no controller answers
        self._controller_finished = False  # lockstep: idle, no re-sends, until a reset
        self._waiting_since = time.monotonic()
        self._nodes_found_at: float | None = None  # when every wait_nodes entry was discovered
        self._missing: list[str] = []
        self._last_tick: float | None = None

        self.create_timer(1.0, self._publish_status)
        if self.mode == "lockstep":
            self._wait_timer = self.create_timer(0.02, self._check_ready)
            self.create_timer(min(0.1, self.resend_s / 4), self._check_resend)
        else:
            self.create_timer(self.period, self._tick)
        self.get_logger().info(
            f"dex_sim: hand={self.hand} mode={self.mode} seed={self.seed} "
            f"images={self.publish_images} control_period={self.period}s "
            f"substeps={self.sim.substeps}")

    # ---- parameters -----------------------------------------------------------------------
    def _validate_params(self) -> None:
        errors = []
        if self.mode not in MODES:
            errors.append(f"mode={self.mode!r} is not one of {MODES}")
        if isinstance(self.resend_s, bool) or not isinstance(self.resend_s, (int, float)) or not (
            math.isfinite(self.resend_s) and self.resend_s > 0
        ):
            errors.append(f"lockstep_resend_s={self.resend_s!r} must be a positive number")
        if not isinstance(self.seed, int) or self.seed < 0 or self.seed >= 2**32:
            errors.append(f"seed={self.seed!r} must be an integer in [0, 2^32)")
        if not isinstance(self.publish_images, bool):
            errors.append(f"publish_images={self.publish_images!r} must be a bool")
        try:
            get_hand(self.hand)
        except KeyError as e:
            errors.append(str(e.args[0]))
        if errors:
            msg = "invalid parameters: " + "; ".join(errors)
            self._diag_error(msg)
            raise ParameterError(msg)

    # ---- messages -------------------------------------------------------------------------
    def _build_messages(self) -> None:
        """Messages are built once and refilled each step (publish serialises synchronously)."""
        self.clock_msg = Clock()
        self.js_msg = JointState()
        self.js_msg.name = list(self.spec.joint_names)
        self.pose_msg = PoseStamped()
        self.pose_msg.header.frame_id = self.spec.base_frame
        self.img_msgs = []
        self.info_msgs = []
        for cam in self.spec.cameras if self.publish_images else ():
            im = Image()
            im.header.frame_id = cam.frame_id
            im.height, im.width = cam.height, cam.width
            im.encoding = "rgb8"
            im.is_bigendian = 0
            im.step = cam.width * 3
            self.img_msgs.append(im)
            info = CameraInfo()
            info.header.frame_id = cam.frame_id
            info.height, info.width = cam.height, cam.width
            info.distortion_model = "plumb_bob"
            info.d = [0.0] * 5
            k = cam.intrinsics()
            info.k = k.reshape(-1).tolist()
            info.r = np.eye(3).reshape(-1).tolist()
            info.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
            self.info_msgs.append(info)

    def _publish_set(self) -> None:
        """Render, fill and publish one state set, all stamped with the current sim time."""
        # Integer ns: float seconds would drift off the control-period grid.
        stamp = ns_to_stamp(self.sim.time_ns)
        t0 = time.perf_counter()
        self._set_out_wall = t0
        images = [self.sim.render(c.name) for c in self.spec.cameras] if self.publish_images \
            else []
        t1 = time.perf_counter()
        self.clock_msg.clock = stamp
        js = self.js_msg
        js.header.stamp = stamp
        js.position = _f64(self.sim.joint_positions())
        js.velocity = _f64(self.sim.joint_velocities())
        for im, info, rgb in zip(self.img_msgs, self.info_msgs, images, strict=True):
            im.header.stamp = stamp
            info.header.stamp = stamp
            im.data = array.array("B", rgb.tobytes())
        pos, quat = self.sim.cube_pose()
        p = self.pose_msg
        p.header.stamp = stamp
        p.pose.position.x, p.pose.position.y, p.pose.position.z = (float(v) for v in pos)
        o = p.pose.orientation
        o.w, o.x, o.y, o.z = (float(v) for v in quat)
        self._send_set()
        t2 = time.perf_counter()
        if images:
            self.t_render.add(t1 - t0)
        self.t_publish.add(t2 - t1)
        self._last_pub_wall = t2
        self._published_once = True

    def _send_set(self) -> None:
        self._publish(self.clock_pub, self.clock_msg)  # first: listeners' clocks move first
        self._publish(self.js_pub, self.js_msg)
        for ip, im, fp, info in zip(self.img_pubs, self.img_msgs, self.info_pubs,
                                    self.info_msgs, strict=True):
            self._publish(ip, im)
            self._publish(fp, info)
        self._publish(self.pose_pub, self.pose_msg)

    def _publish(self, pub: object, msg: object) -> None:
        try:
            pub.publish(msg)
        except RCLError as e:  # e.g. transient DDS failure or context shutting down
            self.publish_errors += 1
            self.get_logger().warning(f"publish on {pub.topic_name} failed: {e}",
                                      throttle_duration_sec=1.0)

    # ---- lockstep ---------------------------------------------------------------------------
    def _wait_topics(self) -> list[tuple[str, Callable[[], int]]]:
        """(topic, count fn) pairs that must have a peer before the first set goes out.

        "auto" (default): a commands publisher, a /joint_states subscriber and, when images are
        published, an image_raw subscriber per camera: what any controller and the vision
        pipeline cannot work without. /clock, /object/pose_gt and camera_info may validly have
        no subscriber (a node not on sim time, judging on /object/pose), and waiting for them
        would deadlock such a graph; a set they miss is covered by the lockstep resend.
        "all": every state topic incl. camera_info and the commands publisher.
        """
        pubs = [self.clock_pub, self.js_pub, self.pose_pub, *self.img_pubs, *self.info_pubs]
        by_name = {p.topic_name: p.get_subscription_count for p in pubs}
        cmd = (self.cmd_sub.topic_name, self.cmd_sub.get_publisher_count)
        spec = self.wait_topics_param.strip()
        key = spec.lower()
        if key in ("", "none"):
            return []
        if key == "auto":
            names = [p.topic_name for p in (self.js_pub, *self.img_pubs)]
        elif key == "all":
            names = list(by_name)
        else:
            names = [t.strip() for t in spec.split(",") if t.strip()]
        out = [cmd] if key in ("auto", "all") or cmd[0] in names else []
        for n in names:
            if n == cmd[0]:
                continue
            if n not in by_name:
                raise ParameterError(f"wait_topics: {n!r} is not a topic this sim publishes "
                                     f"({sorted(by_name)} or {cmd[0]})")
            out.append((n, by_name[n]))
        return out

    def _unmatched_known_peers(self) -> list[str]:
        """Topics where the graph lists more subscribers (or command publishers) than matched."""
        out = []
        for p in (self.clock_pub, self.js_pub, self.pose_pub, *self.img_pubs, *self.info_pubs):
            if p.get_subscription_count() < self.count_subscribers(p.topic_name):
                out.append(p.topic_name)
        cmd = self.cmd_sub
        if cmd.get_publisher_count() < self.count_publishers(cmd.topic_name):
            out.append(cmd.topic_name)
        return out

    def _undiscovered_nodes(self) -> list[str]:
        """``wait_nodes`` not yet on this node's graph, or listed without any subscription."""
        known = {name: ns for name, ns in self.get_node_names_and_namespaces()}
        out = []
        for n in self.wait_nodes:
            if n not in known or not self.get_subscriber_names_and_types_by_node(n, known[n]):
                out.append(n)
        return out

    def _check_ready(self) -> None:
        if self._published_once:
            self._wait_timer.cancel()
            return
        try:
            missing = [n for n, count in self._wait_topics() if count() == 0]
        except ParameterError as e:
            self._diag_error(str(e))
            missing = []  # a bad wait list must not hang the sim: start anyway
        now = time.monotonic()
        waited = now - self._waiting_since
        if self.wait_nodes and self._nodes_found_at is None:
            absent = self._undiscovered_nodes()
            if not absent:
                self._nodes_found_at = now
            elif waited < WAIT_NODES_MAX_S:
                missing += [f"(node {n})" for n in absent]
            else:
                self._nodes_found_at = now
                self._diag_error(f"lockstep: starting without {absent}: not discovered in "
                                 f"{WAIT_NODES_MAX_S:g} s (wait_nodes)")
        # Every peer the ROS graph already knows about (a recorder, a monitor) must be matched
        # too, or it misses the first sets of trial 0. Capped (from when the awaited nodes were
        # found): an endpoint that never matches (e.g. incompatible QoS) must not hang the sim.
        found = self._nodes_found_at if self._nodes_found_at is not None else self._waiting_since
        if now - found < UNMATCHED_PEER_WAIT_S:
            missing += [n for n in self._unmatched_known_peers() if n not in missing]
        if waited < DISCOVERY_SETTLE_S:
            missing.append("(discovery settling)")
        self._missing = missing
        if missing:
            if waited > 5.0:
                self.get_logger().info(f"lockstep: waiting for peers on {missing}",
                                       throttle_duration_sec=5.0)
            return
        self._wait_timer.cancel()
        self.get_logger().info(f"lockstep: peers matched; first state at t={self.sim.time:.3f}")
        self._publish_set()
        self._awaiting = True

    def _check_resend(self) -> None:
        if self._controller_finished:
            return  # re-sending would only grow the last trial's bag
        waited = time.perf_counter() - self._set_out_wall
        if self._awaiting and waited >= CONTROLLER_STALE_RESENDS * self.resend_s \
                and not self._controller_missing:
            self._controller_missing = (
                f"lockstep: no command for {waited:.1f} s since the set at "
                f"t={self.sim.time:.3f} (is the controller running?); re-sending it")
            self.get_logger().error(self._controller_missing)
            self.diag.report(STATUS, DiagnosticStatus.STALE, self._controller_missing,
                             self.stats_values())
        if self._awaiting and time.perf_counter() - self._last_pub_wall >= self.resend_s:
            self.resends += 1
            self.get_logger().info(
                f"lockstep: no command for {self.resend_s:g}s; re-sending t={self.sim.time:.3f}",
                throttle_duration_sec=10.0)
            t = time.perf_counter()
            self._send_set()
            self._last_pub_wall = time.perf_counter()
            self.t_publish.add(self._last_pub_wall - t)

    # ---- callbacks ----------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        t_recv = time.perf_counter()
        ok, _, reason = self.sim.set_targets(msg.data)
        if not ok:
            self._rejected_since += 1
            self._diag_error(f"bad command on {self.cmd_sub.topic_name}: {reason}")
        elif reason:
            self._clamped_since += 1
            self.get_logger().warning(f"command {reason}", throttle_duration_sec=1.0)
        if self.mode != "lockstep":
            return  # realtime: the timer applies the (held) targets
        if not self._awaiting:
            # Before the first set (or a duplicate): targets are held for the next step.
            self.get_logger().warning("lockstep: command with no state outstanding; held",
                                      throttle_duration_sec=5.0)
            return
        self.loop_latency.add(t_recv - self._last_pub_wall)
        if self._controller_missing:
            self.get_logger().info("lockstep: commands are back")
            self._controller_missing = ""
        self._step()
        self._publish_set()

    def _step(self) -> None:
        t0 = time.perf_counter()
        self.sim.step_control()
        self.t_physics.add(time.perf_counter() - t0)
        self.steps += 1

    def _on_trial_status(self, msg: DiagnosticArray) -> None:
        if any(st.name == "trial" and st.message == "finished" for st in msg.status) \
                and not self._controller_finished:
            self._controller_finished = True
            self._controller_missing = ""
            self.get_logger().info("the trial node finished its trials; idle until a reset")

    def _on_reset(self, msg: UInt32) -> None:
        self._controller_finished = False
        self.sim.reset(int(msg.data))
        self.resets += 1
        self.get_logger().info(f"reset seed={msg.data} t={self.sim.time:.3f}")
        if self.mode == "lockstep" and self._published_once:
            self._publish_set()
            self._awaiting = True
        # (not yet matched: _check_ready publishes the reset state once peers are there)

    def _on_goal(self, msg: PoseStamped) -> None:
        o = msg.pose.orientation
        try:
            self.sim.set_goal_marker([o.w, o.x, o.y, o.z])
        except ValueError as e:
            self.get_logger().warning(f"/goal/pose ignored: {e}", throttle_duration_sec=5.0)

    def _tick(self) -> None:
        """Realtime: one control period per wall period, holding the last command."""
        t0 = time.perf_counter()
        if self._last_tick is not None:
            self.tick_interval.add(t0 - self._last_tick)
        self._last_tick = t0
        self._step()
        self._publish_set()
        if time.perf_counter() - t0 > self.period:
            self.overruns += 1
            self._overruns_since += 1
            self.get_logger().warning(
                f"realtime overrun: step took {(time.perf_counter() - t0) * 1e3:.1f} ms > "
                f"{self.period * 1e3:.0f} ms", throttle_duration_sec=1.0)

    # ---- diagnostics --------------------------------------------------------------------------
    def _diag_error(self, message: str) -> None:
        """An error now: log it and publish it on /diagnostics immediately."""
        self._last_error = message
        self.get_logger().error(message, throttle_duration_sec=1.0)
        sim_time = f"{self.sim.time:.3f}" if hasattr(self, "sim") else ""
        self.diag.report(CMD_STATUS, DiagnosticStatus.ERROR, message, {"sim_time": sim_time})

    def stats_values(self) -> dict[str, str]:
        wall = time.perf_counter() - self._start_wall
        v = {
            "mode": self.mode,
            "sim_time": f"{self.sim.time:.3f}",
            "steps": str(self.steps),
            "step_rate_hz": f"{self.steps / wall:.2f}" if wall > 0 else "0",
            "resets": str(self.resets),
            "resends": str(self.resends),
            "rejected_commands": str(self.sim.guard.n_rejected),
            "clamped_commands": str(self.sim.guard.n_clamped),
            "rate_limited_commands": str(self.sim.guard.n_rate_limited),
            "publish_errors": str(self.publish_errors),
            "last_error": self._last_error,
        }
        v.update(self.t_physics.as_strings("physics_"))
        v.update(self.t_render.as_strings("render_"))
        v.update(self.t_publish.as_strings("publish_"))
        if self.mode == "lockstep":
            v.update(self.loop_latency.as_strings("loop_latency_"))
            v["waiting_for"] = ",".join(self._missing) if not self._published_once else ""
        else:
            v.update(self.tick_interval.as_strings("tick_interval_"))
            v["overruns"] = str(self.overruns)
        return v

    def _publish_status(self) -> None:
        """1 Hz: refresh the statuses (DiagnosticsPublisher's steady timer publishes them)."""
        level, msg = DiagnosticStatus.OK, f"{self.mode}: {self.steps} steps"
        if self._controller_missing:
            level, msg = DiagnosticStatus.STALE, self._controller_missing
        elif self._controller_finished and self.mode == "lockstep":
            msg = f"lockstep: idle, the trials are finished ({self.steps} steps)"
        elif self._overruns_since:
            level, msg = DiagnosticStatus.WARN, f"{self._overruns_since} realtime overrun(s)"
        elif self._clamped_since:
            level, msg = DiagnosticStatus.WARN, f"{self._clamped_since} command(s) clamped"
        elif not self._published_once and self.mode == "lockstep":
            msg = f"lockstep: waiting for peers on {self._missing}"
        self.diag.report(STATUS, level, msg, self.stats_values(), immediate=False)
        if self._rejected_since:
            self.diag.report(CMD_STATUS, DiagnosticStatus.WARN,
                             f"{self._rejected_since} command(s) rejected in the last period; "
                             f"last: {self._last_error}", immediate=False)
        else:
            self.diag.report(CMD_STATUS, DiagnosticStatus.OK, "commands valid", immediate=False)
        self._rejected_since = self._overruns_since = self._clamped_since = 0

    def log_summary(self) -> None:
        v = self.stats_values()
        keys = ["steps", "step_rate_hz", "resets", "resends", "rejected_commands"]
        for pre in ("physics_", "render_", "publish_", "loop_latency_"):
            keys += [pre + "p50_ms", pre + "p99_ms"]
        self.get_logger().info("dex_sim summary: " + ", ".join(
            f"{k}={v[k]}" for k in keys if k in v))


def _on_exit(node: SimNode) -> None:
    node.log_summary()
    node.sim.close()


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, "dex_sim",
                    (ParameterError, ParameterException, KeyError, FileNotFoundError),
                    _on_exit, args)


if __name__ == "__main__":
    sys.exit(main())
