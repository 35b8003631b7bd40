"""The policy node (``python -m dex_policy.node``, node ``dex_policy``): trial logic + controller.

The controller (parameter ``controller``) is the ONNX LSTM policy (``onnx``, default:
``PolicyRuntime``) or the sampling-MPC teacher planning from the same inputs (``mpc``:
``MPCRuntime`` — joint positions/velocities and the cube pose, velocities estimated from stamps,
on the nominal model). Both turn one synced input set into absolute actuator targets through the
same ``ActionDecoder``; trials are judged the same whichever runs.

A thin ROS adapter. Per synced input set {/joint_states, object pose(s)} newer than the last one
handled: validate → fingertips (``HandKinematics``) → ``policy_observation`` →
``TrialTracker.step`` → /trial/status, /goal/pose, /goal/marker → (trial not ended)
controller → /hand_position_controller/commands + /policy/action (stamp = input
stamp). Each trial starts with /sim/reset(seed + trial_index); sets not newer than the newest
stamp seen when the reset was requested are ignored. The first reset is requested when the first
/joint_states arrives (a lockstep sim publishes its first set and then waits, so nothing it
sent before the reset can pass as post-reset). The trial protocol is in docs/interfaces.md.

Faults never crash the node: bad parameters or a missing/mismatched model put it in a fault
state (ERROR on /diagnostics, holds); a bad input set (NaN/Inf, unknown or missing joint names,
bad pose) is an ERROR and the last command is re-published (hold) so a lockstep sim advances.
If joint_states for a step arrived but no complete set follows within ``input_timeout_s``
(wall), the hold command is published too (WARN).

Stamps are checked by the synchronizer against this node's clock (sim time from /clock, or the
wall clock on a robot; before /clock arrives, against the other inputs' time): a message whose
stamp is off it (stamped 0, or 1000 s ahead) is rejected and counted
(``sync_dropped_implausible``) and moves nothing here. A jump the clock makes with the inputs (a
sim restarted under us, a bag loop) continues the trial on the new time (WARN, ``time_jumps``). Liveness: during a trial, an input that has not
delivered within ``input_timeout_s`` of the later of its last message and the last command
(in lockstep everything waits for the command, however long the controller plans) is STALE on
/diagnostics, naming the topic, and the hand holds.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, UInt32
from visualization_msgs.msg import Marker

from dex_common.contract import ModelContractError, file_sha256
from dex_common.observations import policy_observation
from dex_common.pose_gate import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, PoseJumpGate
from dex_common.ros_util import (
    COMMAND_TOPIC,
    ERROR,
    OK,
    STALE,
    WARN,
    DiagnosticsPublisher,
    clock_now,
    float_to_stamp,
    run_node,
    stamp_to_float,
)
from dex_common.stats import RollingStats
from dex_common.sync import ApproxTimeSynchronizer
from dex_common.trial import TrialConfig, TrialEvent, TrialTracker
from dex_description.kinematics import HandKinematics
from dex_description.registry import get_hand
from dex_policy import NODE_CONTROLLERS
from dex_policy.mpc import MPCConfig
from dex_policy.mpc_runtime import Measurement, MPCRuntime
from dex_policy.runtime import PolicyRuntime, default_model_path

try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - other rclpy layouts
    RCLError = RuntimeError

POSE_TOPICS = {"gt": "/object/pose_gt", "vision": "/object/pose"}
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                 history=HistoryPolicy.KEEP_LAST)
# A pre-reset stamp arriving this long (wall) after the reset request means the request was
# lost (a lockstep sim re-sends its last set every lockstep_resend_s): request it again.
RESET_STALE_S = 0.5
# No /joint_states this long after start: WARN "waiting for /joint_states" (a hand not running).
JOINT_STATES_WAIT_S = 3.0
# exit_when_finished: time for the last status to reach the recorder and the monitor, s.
EXIT_AFTER_FINISHED_S = 1.0


class InputError(ValueError):
    """An input set the policy cannot act on (the hand holds)."""


def joint_positions_in_order(names: list[str], positions: list[float],
                             expected: list[str]) -> np.ndarray:
    """Positions in registry order (reordered by name if needed); InputError on unknown or
    missing names, a length mismatch, or NaN/Inf."""
    if len(positions) != len(names):
        raise InputError(f"joint_states has {len(names)} names but {len(positions)} positions")
    if list(names) == expected:
        q = np.asarray(positions, float)
    else:
        unknown = [n for n in names if n not in expected]
        if unknown:
            raise InputError(f"unknown joint names {unknown}; expected the registry joints "
                             f"{expected}")
        missing = [n for n in expected if n not in names]
        if missing:
            raise InputError(f"joint_states lacks joints {missing}")
        if len(set(names)) != len(names):
            raise InputError("joint_states repeats a joint name")
        index = {n: i for i, n in enumerate(names)}
        q = np.asarray([positions[index[n]] for n in expected], float)
    if not np.all(np.isfinite(q)):
        bad = [expected[i] for i in np.flatnonzero(~np.isfinite(q))]
        raise InputError(f"joint_states has NaN/Inf positions for {bad}")
    return q


def joint_velocities_or_none(js: JointState, expected: list[str]) -> np.ndarray | None:
    """Velocities in registry order when the message carries a finite one for every joint
    (sources may leave ``velocity`` empty); None otherwise."""
    if len(js.velocity) != len(js.name):
        return None
    try:
        return joint_positions_in_order(list(js.name), list(js.velocity), expected)
    except InputError:
        return None


def pose_arrays(msg: PoseStamped, what: str) -> tuple[np.ndarray, np.ndarray]:
    p, o = msg.pose.position, msg.pose.orientation
    pos = np.array([p.x, p.y, p.z], float)
    quat = np.array([o.w, o.x, o.y, o.z], float)
    n = float(np.linalg.norm(quat))
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))) or n < 1e-6:
        raise InputError(f"{what} pose is not finite or has a zero quaternion")
    return pos, quat / n


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_policy")
        self.start_wall = time.monotonic()
        self.fault = ""  # non-empty: cannot run the policy (bad params / model); hold only
        self.error = ""  # last input error (cleared by a good set)
        self.warning = ""
        self._declare("hand", "shadow")
        self._declare("controller", "onnx")
        # Real time: a step slower than the control period is an overrun (WARN on /diagnostics).
        # Lockstep (the sim waits for each command): slow steps are only counted.
        self._declare("realtime", False)
        self._declare("model_path", "")
        self._declare("mpc_samples", MPCConfig.n_samples)
        self._declare("mpc_horizon", MPCConfig.horizon)
        self._declare("pose_source", "gt")
        self._declare("judge_source", "gt")
        self._declare("num_trials", 0)
        self._declare("seed", 0)
        # Where a restarted controller resumes (dex run --respawn): trials before it ended.
        self._declare("first_trial", 0)
        # Exit (code 0) EXIT_AFTER_FINISHED_S after 'finished': how a launch file ends the graph.
        self._declare("exit_when_finished", False)
        # False: the first set starts trial 0 as it is, with no /sim/reset request (the state
        # source is already at the trial's start: dex replay of a recorded trial).
        self._declare("reset_first_trial", True)
        self._declare("slop", 0.005)
        self._declare("input_timeout_s", 0.5)
        # Dactyl: 8 s sim, 80 s on the robot
        self._declare("goal_timeout_s", TrialConfig.goal_timeout_s)
        # The perception model in the loop (vision mode): its hash goes into every trial record.
        self._declare("pose_model_path", "")
        # Vision estimates implying a faster cube than these are not acted on (dex_common.pose_gate)
        self._declare("max_cube_angular_speed", MAX_ANGULAR_SPEED)
        self._declare("max_cube_linear_speed", MAX_LINEAR_SPEED)

        # Publishers first: even in a fault state the node answers steps with hold commands.
        self.cmd_pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, QOS)
        self.action_pub = self.create_publisher(JointState, "/policy/action", QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, "/trial/status", QOS)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal/pose", QOS)
        self.marker_pub = self.create_publisher(Marker, "/goal/marker", QOS)
        self.reset_pub = self.create_publisher(UInt32, "/sim/reset", QOS)
        self.diag = DiagnosticsPublisher(
            self, refresh=lambda: self._publish_diagnostics(immediate=False))

        # Statistics and trial state.
        self.step_stats = RollingStats()
        self.counts = {"sets": 0, "ignored_old": 0, "ignored_pre_reset": 0, "holds": 0,
                       "input_errors": 0, "input_timeouts": 0, "deadline_misses": 0,
                       "resets": 0, "time_jumps": 0, "stale_reports": 0,
                       "implausible_poses": 0}
        self.trial_index = 0
        self.finished = False
        self.awaiting_reset = True
        self.reset_mark = -math.inf  # sets with stamps <= this predate our reset request
        self.reset_wall: float | None = None
        self.newest_stamp = -math.inf
        self.last_handled = -math.inf
        self.last_cmd: np.ndarray | None = None
        self.last_measured: np.ndarray | None = None
        # The oldest joint_states not yet part of a handled set: (stamp, wall time).
        self.pending: tuple[float, float] | None = None
        self.last_input_wall: list[float] = []  # per sync stream: last accepted message (wall)
        self.last_cmd_wall = -math.inf
        self.stale = ""  # inputs that stopped (STALE on /diagnostics)
        self.last_event: TrialEvent | None = None
        self.runtime: PolicyRuntime | MPCRuntime | None = None
        self.sync: ApproxTimeSynchronizer | None = None
        self.model_sha = ""

        self._configure()
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.05, self._watchdog, clock=wall)

    # ---- setup ---------------------------------------------------------------------------------
    def _declare(self, name: str, default: object) -> None:
        # Dynamic typing: a wrongly typed override (slop:=abc) is reported by our validation
        # instead of crashing the node inside declare_parameter.
        self.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))

    def _configure(self) -> None:
        """Read and validate parameters, load the model; any problem → fault state."""
        gp = self.get_parameter
        try:
            self.hand = str(gp("hand").value)
            self.spec = get_hand(self.hand)
        except KeyError as e:
            self.spec = get_hand("shadow")  # names for hold commands only
            self._set_fault(f"bad parameter hand: {e}")
        self.diag.hardware_id = self.spec.name
        self.joint_names = self.spec.joint_names
        self.act_names = self.spec.actuator_names
        self.act_matrix = self.spec.actuation_matrix()
        self.pose_source = str(gp("pose_source").value)
        self.judge_source = str(gp("judge_source").value)
        self.num_trials = gp("num_trials").value
        self.seed = gp("seed").value
        first = gp("first_trial").value
        self.exit_when_finished = gp("exit_when_finished").value
        self.exit_at = math.inf  # monotonic time to exit at (exit_when_finished)
        self.slop = gp("slop").value
        self.input_timeout = gp("input_timeout_s").value
        self.controller = str(gp("controller").value)
        self.realtime = gp("realtime").value
        problems = []
        if not isinstance(self.exit_when_finished, bool):
            problems.append(f"exit_when_finished must be true or false; got "
                            f"{self.exit_when_finished!r}")
            self.exit_when_finished = False
        if not isinstance(self.realtime, bool):
            problems.append(f"realtime must be true or false; got {self.realtime!r}")
            self.realtime = False
        reset_first = gp("reset_first_trial").value
        if not isinstance(reset_first, bool):
            problems.append(f"reset_first_trial must be true or false; got {reset_first!r}")
        elif not reset_first:
            self.reset_wall = time.monotonic()  # as if requested: no set predates the trial
        if self.controller not in NODE_CONTROLLERS:
            problems.append(f"controller must be one of {list(NODE_CONTROLLERS)}; got "
                            f"{self.controller!r}")
        if self.pose_source not in POSE_TOPICS:
            problems.append(f"pose_source must be one of {sorted(POSE_TOPICS)}; got "
                            f"{self.pose_source!r}")
        if self.judge_source not in POSE_TOPICS:
            problems.append(f"judge_source must be one of {sorted(POSE_TOPICS)}; got "
                            f"{self.judge_source!r}")
        if (isinstance(self.num_trials, bool) or not isinstance(self.num_trials, int)
                or self.num_trials < 0):
            problems.append(f"num_trials must be an integer >= 0; got {self.num_trials!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0; got {self.seed!r}")
        if (isinstance(first, bool) or not isinstance(first, int) or first < 0
                or (isinstance(self.num_trials, int) and 0 < self.num_trials <= first)):
            problems.append(f"first_trial must be an integer in [0, num_trials); got {first!r}")
        else:
            self.trial_index = first
        if (isinstance(self.slop, bool) or not isinstance(self.slop, (int, float))
                or not 0 <= self.slop < 1.0):
            problems.append(f"slop must be a number in [0, 1) s; got {self.slop!r}")
        if (not isinstance(self.input_timeout, (int, float))
                or not 0 < self.input_timeout < 60):
            problems.append(f"input_timeout_s must be in (0, 60) s; got {self.input_timeout!r}")
        try:
            self.pose_gate = PoseJumpGate(float(gp("max_cube_angular_speed").value),
                                          float(gp("max_cube_linear_speed").value))
        except (ValueError, TypeError) as e:
            self.pose_gate = PoseJumpGate()
            problems.append(f"max_cube_angular_speed / max_cube_linear_speed: {e}")
        goal_timeout = gp("goal_timeout_s").value
        try:
            self.trial_config = TrialConfig.for_hand(self.spec, goal_timeout_s=goal_timeout)
        except (ValueError, TypeError) as e:
            self.trial_config = TrialConfig.for_hand(self.spec)
            problems.append(str(e))
        if problems:
            self.pose_source = self.pose_source if self.pose_source in POSE_TOPICS else "gt"
            self.judge_source = self.pose_source
            self.slop, self.input_timeout = 0.005, 0.5
            self._set_fault("bad parameters: " + "; ".join(problems))

        # Streams: 0 joint_states, 1 observed pose, [2 judged pose when a different topic].
        topics = [POSE_TOPICS[self.pose_source]]
        if POSE_TOPICS[self.judge_source] != topics[0]:
            topics.append(POSE_TOPICS[self.judge_source])
        self.pose_topics = topics
        self.input_topics = ["/joint_states", *topics]
        self.last_input_wall = [-math.inf] * len(self.input_topics)
        self.sync = ApproxTimeSynchronizer(1 + len(topics), float(self.slop))
        self.create_subscription(JointState, "/joint_states", self._on_joint_states, QOS)
        for i, topic in enumerate(topics):
            self.create_subscription(PoseStamped, topic,
                                     lambda m, s=i + 1: self._offer(s, m), QOS)

        self.pose_model_sha = ""
        pose_model = str(gp("pose_model_path").value)
        if pose_model:
            try:
                self.pose_model_sha = file_sha256(pose_model)
            except OSError as e:
                self.get_logger().warning(f"pose model {pose_model!r} unreadable for hashing: {e}")
        if self.fault:
            return
        self.tracker = TrialTracker(self.trial_config)
        self.kin = HandKinematics(self.hand)
        if self.controller == "mpc":
            samples, horizon = gp("mpc_samples").value, gp("mpc_horizon").value
            try:
                if not all(isinstance(v, int) and not isinstance(v, bool)
                           for v in (samples, horizon)):
                    raise ValueError(f"mpc_samples and mpc_horizon must be integers; got "
                                     f"{samples!r}, {horizon!r}")
                knots = min(MPCConfig.knots, horizon) if horizon >= 1 else MPCConfig.knots
                self.runtime = MPCRuntime(self.hand, MPCConfig(n_samples=samples,
                                                               horizon=horizon, knots=knots))
                self.model_sha = self.runtime.sha256
                self.get_logger().info(
                    f"controller: sampling MPC ({samples} samples, horizon {horizon} control "
                    f"steps) on the nominal {self.spec.name} model")
            except (OSError, ValueError, KeyError) as e:
                self._set_fault(f"bad parameters: MPC controller unusable: {e}")
            return
        path = str(gp("model_path").value) or str(default_model_path(self.hand))
        try:
            self.runtime = PolicyRuntime(path, self.hand, self.spec.control_period)
            self.model_sha = self.runtime.sha256
            self.get_logger().info(f"policy model {path} sha256 {self.model_sha[:12]}")
        except (OSError, ValueError, ModelContractError, RuntimeError) as e:
            self._set_fault(f"policy model {path!r} unusable: {e}")

    def _set_fault(self, msg: str) -> None:
        self.fault = msg
        self.get_logger().error(msg + " — holding the last command")
        self._publish_diagnostics()

    # ---- inputs --------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        t = stamp_to_float(msg.header.stamp)
        if not self._offer(0, msg):
            return  # rejected stamp: it moves nothing (counted by the synchronizer)
        if self.awaiting_reset and not self.fault and not self.finished:
            if self.reset_wall is None:
                # First trial: request the reset only once the state source is publishing, so
                # every set it published before it got the request is <= reset_mark.
                self._request_reset()
            elif t <= self.reset_mark and time.monotonic() - self.reset_wall > RESET_STALE_S:
                # A lockstep sim re-sent its old set well after our request: it missed it.
                self.get_logger().warning("state source re-sent a pre-reset set: requesting "
                                          "the reset again")
                self._request_reset()
        if t > self.last_handled and self.pending is None:
            self.pending = (t, time.monotonic())

    def _offer(self, stream: int, msg: object) -> bool:
        """Give one message to the synchronizer and handle the sets it completes; False when
        its stamp was rejected."""
        t = stamp_to_float(msg.header.stamp)
        jumps = self.sync.total("clock_jumps")
        sets = self.sync.add(stream, t, msg, now=clock_now(self))
        if not self.sync.accepted:
            return False
        self.last_input_wall[stream] = time.monotonic()
        if self.sync.total("clock_jumps") != jumps:
            self._on_time_jump(*self.sync.last_jump)
        self.newest_stamp = max(self.newest_stamp, self.sync.newest_stamp())
        for s in sets:
            self._handle_set(s)
        return True

    def _on_time_jump(self, old: float, new: float) -> None:
        """Every input moved to a new time: continue on it (a running trial keeps its goal time,
        the jump counting as one control period); a pending reset is requested again."""
        self.counts["time_jumps"] += 1
        self.warning = (f"input time jumped by {new - old:+.3f} s (every input agrees): "
                        f"continuing on the new time")
        self.get_logger().warning(self.warning)
        if math.isfinite(self.last_handled) and self.tracker_running():
            self.tracker.shift_time(new - self.last_handled - self.spec.control_period)
        self.last_handled = -math.inf
        self.newest_stamp = new
        self.pending = None
        if self.awaiting_reset and self.reset_wall is not None:
            self._request_reset()
        self._publish_diagnostics()

    def tracker_running(self) -> bool:
        tracker = getattr(self, "tracker", None)
        return tracker is not None and tracker.started and not tracker.ended

    def _handle_set(self, msgs: list) -> None:
        t0 = time.perf_counter()
        js = msgs[0]
        stamp = stamp_to_float(js.header.stamp)
        if stamp <= self.last_handled:
            self.counts["ignored_old"] += 1
            return
        if self.finished or self.fault:  # idle: a faulted node starts no trial (hand holds)
            self.last_handled = stamp
            return
        if self.awaiting_reset and (self.reset_wall is None or stamp <= self.reset_mark):
            self.counts["ignored_pre_reset"] += 1
            return
        self.last_handled = stamp
        self.pending = None
        self.counts["sets"] += 1
        try:
            q = joint_positions_in_order(list(js.name), list(js.position), self.joint_names)
            self.last_measured = self.act_matrix @ q
            obs_pos, obs_quat = pose_arrays(msgs[1], self.pose_topics[0])
            judge_pos, judge_quat = (pose_arrays(msgs[2], self.pose_topics[1])
                                     if len(msgs) > 2 else (obs_pos, obs_quat))
        except InputError as e:
            self.counts["input_errors"] += 1
            self._input_error(str(e), js.header.stamp)
            return
        self.error = ""
        if self.awaiting_reset:  # first set of the trial
            self.awaiting_reset = False
            self.pose_gate.reset()
            self.tracker.start(self.seed + self.trial_index, stamp=stamp)
            self.runtime.reset(self.act_matrix @ q, seed=self.seed + self.trial_index)
        if self.pose_source == "vision":
            verdict = self.pose_gate.check(stamp, obs_pos, obs_quat)
            if not verdict.plausible:  # neither acted on nor judged: a flip can look like a goal
                self.counts["implausible_poses"] += 1
                self.warning = (f"implausible cube pose estimate: it jumped as if the cube "
                                f"turned at {verdict.angular_speed:.0f} rad/s / moved at "
                                f"{verdict.linear_speed:.2f} m/s — holding "
                                f"({self.counts['implausible_poses']} so far)")
                self.get_logger().warning(self.warning, throttle_duration_sec=1.0)
                self._hold(js.header.stamp)
                return
        try:
            ev = self.tracker.step(stamp, judge_pos, judge_quat)
            obs = policy_observation(self.kin.fingertips(q), obs_pos, obs_quat, self.tracker.goal,
                                     self.spec)
        except ValueError as e:
            self.counts["input_errors"] += 1
            self._input_error(f"cannot judge/observe: {e}", js.header.stamp)
            return
        self.last_event = ev
        if not ev.ended:
            # The command is the latency-critical output: infer and publish it first, then the
            # trial status / goal / marker for this same stamp.
            try:
                if isinstance(self.runtime, MPCRuntime):
                    m = Measurement(stamp, q, obs_pos, obs_quat,
                                    joint_velocities_or_none(js, self.joint_names))
                    targets = self.runtime.act_measured(m, self.tracker.goal)
                else:
                    targets = self.runtime.act(obs)
            except (ValueError, RuntimeError) as e:
                self._input_error(f"policy inference failed: {e}", js.header.stamp)
                return
            self._publish_command(targets, js.header.stamp)
            self.last_cmd_wall = time.monotonic()
            dt = time.perf_counter() - t0
            self.step_stats.add(dt)
            if dt > self.spec.control_period:
                self.counts["deadline_misses"] += 1
                if self.realtime:
                    self.warning = (f"overrun: a step took {dt * 1e3:.1f} ms, the control "
                                    f"period is {self.spec.control_period * 1e3:.0f} ms "
                                    f"({self.counts['deadline_misses']} overruns)")
                    self.get_logger().warning(self.warning, throttle_duration_sec=1.0)
        self._publish_trial(ev, js.header.stamp)
        if ev.ended:
            self.get_logger().info(
                f"trial {self.trial_index} (seed {self.seed + self.trial_index}) ended: "
                f"{ev.end_reason}, {ev.successes} successes, {ev.steps} steps")
            if self.num_trials and self.trial_index + 1 >= self.num_trials:
                # "finished" carries the last trial's index, seed and result.
                self.finished = True
                self._publish_status("finished", OK, ev, js.header.stamp, ended=True)
                if self.exit_when_finished:
                    self.exit_at = time.monotonic() + EXIT_AFTER_FINISHED_S
                    self.get_logger().info(f"all {self.num_trials} trials done; exiting")
                else:
                    self.get_logger().info(f"all {self.num_trials} trials done; idling")
            else:
                self.trial_index += 1
                self._request_reset()

    # ---- outputs -------------------------------------------------------------------------------
    def _publish(self, pub: object, msg: object) -> None:
        try:
            pub.publish(msg)
        except RCLError as e:  # e.g. context shutting down
            self.get_logger().warning(f"publish on {pub.topic_name} failed: {e}",
                                      throttle_duration_sec=1.0)

    def _publish_command(self, targets: np.ndarray, stamp: object) -> None:
        self.last_cmd = np.asarray(targets, float).copy()
        self._publish(self.cmd_pub, Float64MultiArray(data=[float(v) for v in targets]))
        a = JointState()
        a.header.stamp = stamp
        a.name = list(self.act_names)
        a.position = [float(v) for v in targets]
        self._publish(self.action_pub, a)

    def _hold(self, stamp: object) -> None:
        """Re-publish the last command (or the last measured actuator positions)."""
        held = self.last_cmd if self.last_cmd is not None else self.last_measured
        if held is None:
            self.get_logger().warning("no command or valid state yet: nothing to hold",
                                      throttle_duration_sec=1.0)
            return
        self.counts["holds"] += 1
        self._publish_command(held, stamp)

    def _input_error(self, msg: str, stamp: object) -> None:
        self.error = msg
        self.get_logger().error(msg + " — holding", throttle_duration_sec=1.0)
        self._publish_diagnostics()
        self._hold(stamp)

    def _request_reset(self) -> None:
        seed = self.seed + self.trial_index
        self.awaiting_reset = True
        self.reset_mark = self.newest_stamp
        self.reset_wall = time.monotonic()
        # The synchronizer keeps its timeline (sim time runs on through a reset): queued
        # pre-reset messages still form sets, which are ignored as pre-reset.
        self.counts["resets"] += 1
        self._publish(self.reset_pub, UInt32(data=int(seed)))
        self.get_logger().info(f"trial {self.trial_index}: /sim/reset seed {seed}")

    def _status_values(self, ev: TrialEvent | None, ended: bool) -> list[KeyValue]:
        vals = {
            "trial": str(self.trial_index),
            "seed": str(self.seed + self.trial_index),
            "goal_index": str(ev.goal_index if ev else 0),
            "successes": str(ev.successes if ev else 0),
            "rotation_error": f"{ev.rotation_error:.6f}" if ev else "nan",
            "ended": "true" if ended else "false",
            "end_reason": ev.end_reason if ev else "",
            "start_stamp": repr(float(self.tracker.start_stamp or 0.0)) if ev else "0.0",
            "steps": str(ev.steps if ev else 0),
            "controller": self.controller,
            "policy_model_sha256": self.model_sha,
            "pose_model_sha256": self.pose_model_sha,
            "mode": "state" if self.pose_source == "gt" else "vision",
        }
        return [KeyValue(key=k, value=v) for k, v in vals.items()]

    def _publish_status(self, message: str, level: bytes, ev: TrialEvent | None,
                        stamp: object, ended: bool) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = stamp
        arr.status = [DiagnosticStatus(level=level, name="trial", message=message,
                                       hardware_id=self.spec.name,
                                       values=self._status_values(ev, ended))]
        self._publish(self.status_pub, arr)

    def _publish_trial(self, ev: TrialEvent, stamp: object) -> None:
        level = WARN if ev.end_reason in ("dropped", "timeout") else OK
        self._publish_status(ev.state, level, ev, stamp, ev.ended)
        goal = PoseStamped()
        goal.header.stamp = stamp
        goal.header.frame_id = self.spec.base_frame
        p = self.spec.cube.rest_pos
        goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = map(float, p)
        w, x, y, z = (float(v) for v in ev.goal)
        o = goal.pose.orientation
        o.w, o.x, o.y, o.z = w, x, y, z
        self._publish(self.goal_pub, goal)
        m = Marker()
        m.header = goal.header
        m.ns, m.id, m.type, m.action = "goal", 0, Marker.CUBE, Marker.ADD
        m.pose = goal.pose
        m.scale.x = m.scale.y = m.scale.z = float(self.spec.cube.size)
        m.color.r, m.color.g, m.color.b, m.color.a = 0.1, 0.9, 0.2, 0.5
        self._publish(self.marker_pub, m)

    # ---- timers (wall clock) -------------------------------------------------------------------
    def _stale_inputs(self, now: float) -> str:
        """Inputs that stopped during a trial, e.g. "/object/pose (1.2 s)"; "" when all flow.
        Every input counts from the later of its last message and our last command: in
        lockstep the sim, and so the cameras and perception, wait for us, and a controller
        that plans for longer than input_timeout_s is not a stopped input. (A command needs a
        complete set, so a stopped input stops the commands too and is still reported.)"""
        if self.finished or self.awaiting_reset or self.fault:
            return ""
        stale = []
        for i, topic in enumerate(self.input_topics):
            since = max(self.last_input_wall[i], self.last_cmd_wall)
            if now - since > self.input_timeout and math.isfinite(since):
                stale.append(f"{topic} ({now - since:.1f} s)")
            elif not math.isfinite(since) and math.isfinite(self.last_input_wall[0]):
                stale.append(f"{topic} (nothing yet)")
        return ", ".join(stale)

    def _watchdog(self) -> None:
        now = time.monotonic()
        stale = self._stale_inputs(now)
        if stale != self.stale:
            self.stale = stale
            if stale:
                self.counts["stale_reports"] += 1
                self.get_logger().error(f"inputs stopped: {stale} — holding")
            self._publish_diagnostics()
        if self.finished:
            return
        if self.awaiting_reset:
            return
        if self.pending is not None and now - self.pending[1] > self.input_timeout:
            t, _ = self.pending
            self.pending = None
            if t > self.last_handled:
                self.last_handled = t
                self.counts["input_timeouts"] += 1
                self.warning = (f"no complete input set within {self.input_timeout} s of "
                                f"joint_states at {t:.3f}: holding")
                self.get_logger().warning(self.warning, throttle_duration_sec=1.0)
                self._hold(float_to_stamp(t))

    def _waiting_for_joint_states(self) -> str:
        """A hand that never spoke: "" once /joint_states arrived (or in the first seconds)."""
        waited = time.monotonic() - self.start_wall
        if self.last_input_wall and math.isinf(self.last_input_wall[0]) \
                and waited > JOINT_STATES_WAIT_S:
            return (f"waiting for /joint_states: nothing for {waited:.0f} s (is the hand's "
                    f"driver or the sim running?)")
        return ""

    def _publish_diagnostics(self, immediate: bool = True) -> None:
        if self.fault or self.error:
            level, msg = ERROR, self.fault or self.error
        elif self.stale:
            level, msg = STALE, f"inputs stopped: {self.stale} — holding" + (
                f"; {self.warning}" if self.warning else "")
        elif self.warning:
            level, msg = WARN, self.warning
        elif waiting := self._waiting_for_joint_states():
            level, msg = WARN, waiting
            self.get_logger().warning(msg, throttle_duration_sec=10.0)
        else:
            level, msg = OK, "finished" if self.finished else "running"
        vals = {"trial": str(self.trial_index), "finished": str(self.finished).lower(),
                "controller": self.controller, "model_sha256": self.model_sha,
                "pose_source": self.pose_source, "judge_source": self.judge_source,
                **{k: str(v) for k, v in self.counts.items()},
                **self.step_stats.as_strings("step_")}
        if self.runtime is not None:
            vals.update(self.runtime.infer_stats.as_strings("inference_"))
            vals.update({k: str(v) for k, v in getattr(self.runtime, "stats", {}).items()})
        if self.sync is not None:
            vals.update({"sync_" + k: str(v) for k, v in self.sync.stats.items()})
        self.diag.report("dex_policy", level, msg, vals, immediate=immediate)
        self.warning = ""


def main(args: list[str] | None = None) -> int:
    # Never a start error: bad parameters or models put the node in its fault state (it stays
    # up and answers with hold commands). It exits by itself after its last trial.
    return run_node(PolicyNode, "dex_policy", (), None, args,
                    keep_running=lambda node: time.monotonic() < node.exit_at)


if __name__ == "__main__":
    sys.exit(main())
