"""The controller node (``python -m dex_policy.node``, node ``dex_policy``): synced inputs →
actuator command, nothing else.

The controller (parameter ``controller``) is the ONNX LSTM policy (``onnx``, default:
``PolicyRuntime``) or the sampling-MPC teacher planning from the same inputs (``mpc``:
``MPCRuntime`` — joint positions/velocities and the cube pose, velocities estimated from stamps,
on the nominal model). Both turn one synced input set into absolute actuator targets through the
same ``ActionDecoder``. Trials are not judged here: the trial node (``dex_bringup.trial_node``)
sets the goals and judges every controller the same way.

A thin ROS adapter. Per synced input set {/joint_states, observed cube pose, /goal/pose,
/trial/status} newer than the last one handled (the last two come from the trial node, stamped
like the state they judged): a status whose trial ended → no command (the sim is being reset);
a status of a new trial → the controller's memory is reset; else validate → fingertips
(``HandKinematics``) → ``policy_observation`` → controller → /hand_position_controller/commands
+ /policy/action (stamp = input stamp). On /policy/info (latched) the node says what it runs —
controller, model hash, pose source, hand, or its fault — so the trial node records it and starts
no trial without a healthy controller.

Faults never crash the node: bad parameters or a missing/mismatched model put it in a fault
state (ERROR on /diagnostics and /policy/info, holds); a bad input set (NaN/Inf, unknown or
missing joint names, bad pose or goal) is an ERROR and the last command is re-published (hold)
so a lockstep sim advances. In vision mode an estimate implying a cube faster than any real one
(``dex_common.pose_gate``: a face taken for its opposite) is not acted on: the hand holds (WARN,
``implausible_poses``). If joint_states for a step arrived during a trial but no complete set
follows within ``input_timeout_s`` (wall), the hold command is published too (WARN).

Stamps are checked by the synchronizer against this node's clock (sim time from /clock, or the
wall clock on a robot; before /clock arrives, against the other inputs' time): a message whose
stamp is off it (stamped 0, or 1000 s ahead) is rejected and counted
(``sync_dropped_implausible``) and moves nothing here. A jump the clock makes with the inputs (a
sim restarted under us, a bag loop) is followed (WARN, ``time_jumps``). Liveness: during a
trial, an input that has not delivered within ``input_timeout_s`` of the later of its last
message and the last command (in lockstep everything waits for the command, however long the
controller plans) is STALE on /diagnostics, naming the topic, and the hand holds.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from dex_common.contract import ModelContractError
from dex_common.node_inputs import (
    POSE_TOPICS,
    CheckedParams,
    InputError,
    joint_positions_in_order,
    joint_velocities_or_none,
    not_bool,
    not_in,
    not_seconds,
    pose_arrays,
)
from dex_common.observations import policy_observation
from dex_common.pose_gate import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, gate_from_parameters
from dex_common.ros_util import (
    COMMAND_TOPIC,
    ERROR,
    LATCHED_QOS,
    OK,
    POLICY_INFO_TOPIC,
    STALE,
    STATE_QOS,
    WARN,
    DiagnosticsPublisher,
    declare_dynamic,
    float_to_stamp,
    key_values,
    offer_to_sync,
    publish_or_warn,
    run_node,
    stamp_to_float,
)
from dex_common.stats import RollingStats
from dex_common.sync import ApproxTimeSynchronizer
from dex_common.trial import TrialConfig
from dex_description.kinematics import HandKinematics
from dex_description.registry import get_hand
from dex_policy import NODE_CONTROLLERS
from dex_policy.mpc import MPCConfig
from dex_policy.mpc_runtime import Measurement, MPCRuntime
from dex_policy.runtime import PolicyRuntime, default_model_path

# /joint_states flowing this long with no /trial/status: WARN (is the trial node running?).
WAIT_S = 3.0
# The trial node's streams, synced after /joint_states and the observed pose.
TRIAL_TOPICS = ("/goal/pose", "/trial/status")


class PolicyNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_policy")
        self.start_wall = time.monotonic()
        self.fault = ""  # non-empty: cannot run the controller (bad params / model); hold only
        self.error = ""  # last input error (cleared by a good set)
        self.warning = ""
        # Publishers first: even in a fault state the node answers steps with hold commands.
        self.cmd_pub = self.create_publisher(Float64MultiArray, COMMAND_TOPIC, STATE_QOS)
        self.action_pub = self.create_publisher(JointState, "/policy/action", STATE_QOS)
        self.info_pub = self.create_publisher(DiagnosticStatus, POLICY_INFO_TOPIC, LATCHED_QOS)
        self.diag = DiagnosticsPublisher(
            self, refresh=lambda: self._publish_diagnostics(immediate=False))
        self.step_stats = RollingStats()
        self.counts = {"sets": 0, "ignored_old": 0, "ended_steps": 0, "holds": 0,
                       "input_errors": 0, "input_timeouts": 0, "deadline_misses": 0,
                       "trials": 0, "time_jumps": 0, "stale_reports": 0,
                       "implausible_poses": 0}
        self.trial_key: tuple[str, str, str] | None = None  # (trial, seed, start_stamp) acted in
        self.trial_label = ""
        self.in_trial = False  # the last status handled was of a running trial
        self.last_handled = -math.inf
        self.last_cmd: np.ndarray | None = None
        self.last_measured: np.ndarray | None = None
        # The oldest joint_states not yet part of a handled set: (stamp, wall time).
        self.pending: tuple[float, float] | None = None
        self.last_input_wall: list[float] = []  # per sync stream: last accepted message (wall)
        self.last_cmd_wall = -math.inf
        self.stale = ""  # inputs that stopped (STALE on /diagnostics)
        self.runtime: PolicyRuntime | MPCRuntime | None = None
        self.sync: ApproxTimeSynchronizer | None = None
        self.model_sha = ""
        self._configure()
        self._publish_info()
        self.create_timer(0.05, self._watchdog, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ---- setup ---------------------------------------------------------------------------------
    def _configure(self) -> None:
        """Read and validate parameters, load the model; any problem → fault state."""
        p = CheckedParams({name: declare_dynamic(self, name, default) for name, default in (
            ("hand", "shadow"), ("controller", "onnx"),
            # Real time: a step slower than the control period is an overrun (WARN on
            # /diagnostics). Lockstep (the sim waits for each command): slow steps are counted.
            ("realtime", False),
            ("model_path", ""),
            ("mpc_samples", MPCConfig.n_samples), ("mpc_horizon", MPCConfig.horizon),
            ("pose_source", "gt"),
            ("slop", 0.005), ("input_timeout_s", 0.5),
            # Estimates implying a faster cube than these are not acted on (dex_common.pose_gate)
            ("max_cube_angular_speed", MAX_ANGULAR_SPEED),
            ("max_cube_linear_speed", MAX_LINEAR_SPEED),
        )})
        problems = p.problems
        try:
            self.hand = str(p["hand"])
            self.spec = get_hand(self.hand)
        except KeyError as e:
            self.spec = get_hand("shadow")  # names for hold commands only
            problems.append(f"bad parameter hand: {e}")
        self.diag.hardware_id = self.spec.name
        self.joint_names = self.spec.joint_names
        self.act_names = self.spec.actuator_names
        self.act_matrix = self.spec.actuation_matrix()
        self.controller = str(p["controller"])
        p.take("controller", not_in, "", NODE_CONTROLLERS)  # a problem: the node faults
        self.realtime = p.take("realtime", not_bool, False)
        self.pose_source = p.take("pose_source", not_in, "gt", POSE_TOPICS)
        slop = p.take("slop", not_seconds, 0.005, 0.0, 1.0, closed_low=True)
        self.input_timeout = p.take("input_timeout_s", not_seconds, 0.5, 0.0, 60.0)
        self.pose_gate, problem = gate_from_parameters(p["max_cube_angular_speed"],
                                                       p["max_cube_linear_speed"])
        problems += [problem] if problem else []
        if problems:
            self._set_fault("bad parameters: " + "; ".join(problems))

        # Streams: 0 joint_states, 1 observed pose, 2 goal, 3 trial status.
        self.pose_topic = POSE_TOPICS[self.pose_source]
        self.input_topics = ["/joint_states", self.pose_topic, *TRIAL_TOPICS]
        self.last_input_wall = [-math.inf] * len(self.input_topics)
        self.sync = ApproxTimeSynchronizer(len(self.input_topics), float(slop))
        self.create_subscription(JointState, "/joint_states", self._on_joint_states, STATE_QOS)
        for i, (topic, kind) in enumerate(((self.pose_topic, PoseStamped),
                                           (TRIAL_TOPICS[0], PoseStamped),
                                           (TRIAL_TOPICS[1], DiagnosticArray))):
            self.create_subscription(kind, topic, lambda m, s=i + 1: self._offer(s, m), STATE_QOS)
        if self.fault:
            return
        self.kin = HandKinematics(self.hand)
        if self.controller == "mpc":
            samples, horizon = p["mpc_samples"], p["mpc_horizon"]
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
                    f"steps, actions ±{self.runtime.decoder.max_delta:g} rad per step) on the "
                    f"nominal {self.spec.name} model")
            except (OSError, ValueError, KeyError) as e:
                self._set_fault(f"bad parameters: MPC controller unusable: {e}")
            return
        path = str(p["model_path"]) or str(default_model_path(self.hand))
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

    def _publish_info(self) -> None:
        """What runs here, latched for the trial node (which records it in every trial)."""
        st = DiagnosticStatus(
            level=ERROR if self.fault else OK, name="dex_policy",
            message=self.fault or "ready", hardware_id=self.spec.name,
            values=key_values({"controller": self.controller, "model_sha256": self.model_sha,
                               "pose_source": self.pose_source, "hand": self.spec.name}))
        self._publish(self.info_pub, st)

    # ---- inputs --------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        t = stamp_to_float(msg.header.stamp)
        if self._offer(0, msg) and t > self.last_handled and self.pending is None:
            self.pending = (t, time.monotonic())

    def _offer(self, stream: int, msg: object) -> bool:
        """Give one message to the synchronizer and handle the sets it completes; False when
        its stamp was rejected."""
        accepted, jump, sets = offer_to_sync(self, self.sync, stream, msg)
        if not accepted:
            return False
        self.last_input_wall[stream] = time.monotonic()
        if jump is not None:
            old, new = jump
            self.counts["time_jumps"] += 1
            self.warning = (f"input time jumped by {new - old:+.3f} s (every input agrees): "
                            f"continuing on the new time")
            self.get_logger().warning(self.warning)
            self.last_handled = -math.inf
            self.pending = None
            self._publish_diagnostics()
        for s in sets:
            self._handle_set(s)
        return True

    def _handle_set(self, msgs: list) -> None:
        t0 = time.perf_counter()
        js, pose, goal, status = msgs
        stamp = stamp_to_float(js.header.stamp)
        if stamp <= self.last_handled:
            self.counts["ignored_old"] += 1
            return
        self.last_handled = stamp
        self.pending = None
        trial = next((s for s in status.status if s.name == "trial"), None)
        if trial is None:
            self.counts["input_errors"] += 1
            self._input_error("/trial/status has no 'trial' entry", js.header.stamp)
            return
        values = {kv.key: kv.value for kv in trial.values}
        if values.get("ended") != "false":  # the trial ended: the sim is being reset
            self.in_trial = False
            self.counts["ended_steps"] += 1
            return
        self.in_trial = True
        if self.fault:  # idle: hold
            self._hold(js.header.stamp)
            return
        self.counts["sets"] += 1
        try:
            q = joint_positions_in_order(list(js.name), list(js.position), self.joint_names)
            self.last_measured = self.act_matrix @ q
            obs_pos, obs_quat = pose_arrays(pose, self.pose_topic)
            _, goal_quat = pose_arrays(goal, TRIAL_TOPICS[0])
            key = (values.get("trial", ""), values.get("seed", ""), values.get("start_stamp", ""))
            seed = int(values.get("seed", "0"))
            threshold = float(values.get("success_threshold", TrialConfig.success_threshold))
            if not 0.0 < threshold < math.pi:
                raise InputError(f"/trial/status success_threshold {threshold!r} is not in "
                                 "(0, pi) rad")
        except (InputError, ValueError) as e:
            self.counts["input_errors"] += 1
            self._input_error(str(e), js.header.stamp)
            return
        self.error = ""
        if key != self.trial_key:  # first set of a trial: start from no memory
            self.trial_key = key
            self.trial_label = f"trial {key[0]} (seed {key[1]})"
            self.counts["trials"] += 1
            self.pose_gate.reset()
            self.runtime.reset(self.act_matrix @ q, seed=seed)
            if isinstance(self.runtime, MPCRuntime):
                self.runtime.planner.success_threshold = threshold
        if self.pose_source == "vision":
            verdict = self.pose_gate.check(stamp, obs_pos, obs_quat)
            if not verdict.plausible:
                self.counts["implausible_poses"] += 1
                self.warning = (f"{verdict.describe()} — holding "
                                f"({self.counts['implausible_poses']} so far)")
                self.get_logger().warning(self.warning, throttle_duration_sec=1.0)
                self._hold(js.header.stamp)
                return
        try:
            if isinstance(self.runtime, MPCRuntime):
                m = Measurement(stamp, q, obs_pos, obs_quat,
                                joint_velocities_or_none(js, self.joint_names))
                targets = self.runtime.act_measured(m, goal_quat)
            else:
                obs = policy_observation(self.kin.fingertips(q), obs_pos, obs_quat, goal_quat,
                                         self.spec)
                targets = self.runtime.act(obs)
        except (ValueError, RuntimeError) as e:
            self._input_error(f"controller failed: {e}", js.header.stamp)
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

    # ---- outputs -------------------------------------------------------------------------------
    def _publish(self, pub: object, msg: object) -> None:
        publish_or_warn(self, pub, msg)

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

    # ---- timers (wall clock) -------------------------------------------------------------------
    def _stale_inputs(self, now: float) -> str:
        """Inputs that stopped during a trial, e.g. "/object/pose (1.2 s)"; "" when all flow.
        Every input counts from the later of its last message and our last command: in
        lockstep the sim, and so the cameras, perception and the trial node, wait for us, and
        a controller that plans for longer than input_timeout_s is not a stopped input. (A
        command needs a complete set, so a stopped input stops the commands too and is still
        reported.)"""
        if not self.in_trial or self.fault:
            return ""
        stale = []
        for i, topic in enumerate(self.input_topics):
            since = max(self.last_input_wall[i], self.last_cmd_wall)
            if now - since > self.input_timeout and math.isfinite(since):
                stale.append(f"{topic} ({now - since:.1f} s)")
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
        if not self.in_trial:
            return  # between trials (or before the first) nothing is owed to the hand
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

    def _waiting(self) -> str:
        """What the node waits for, if anything: a hand that never spoke, a trial node that
        never judged ("" once both came, or in the first seconds)."""
        now = time.monotonic()
        js_wall, status_wall = self.last_input_wall[0], self.last_input_wall[3]
        if math.isinf(js_wall) and now - self.start_wall > WAIT_S:
            return (f"waiting for /joint_states: nothing for {now - self.start_wall:.0f} s (is "
                    f"the hand's driver or the sim running?)")
        if math.isfinite(js_wall) and math.isinf(status_wall) \
                and now - self.start_wall > WAIT_S and self.trial_key is None:
            return "waiting for /trial/status (is the trial node running?)"
        return ""

    def _publish_diagnostics(self, immediate: bool = True) -> None:
        if self.fault or self.error:
            level, msg = ERROR, self.fault or self.error
        elif self.stale:
            level, msg = STALE, f"inputs stopped: {self.stale} — holding" + (
                f"; {self.warning}" if self.warning else "")
        elif self.warning:
            level, msg = WARN, self.warning
        elif self.last_input_wall and (waiting := self._waiting()):
            level, msg = WARN, waiting
            self.get_logger().warning(msg, throttle_duration_sec=10.0)
        else:
            level, msg = OK, "running" if self.in_trial else "between trials"
        vals = {"trial": self.trial_label, "controller": self.controller,
                "model_sha256": self.model_sha, "pose_source": self.pose_source,
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
    # up, says so on /policy/info and answers with hold commands).
    return run_node(PolicyNode, "dex_policy", (), None, args)


if __name__ == "__main__":
    sys.exit(main())
