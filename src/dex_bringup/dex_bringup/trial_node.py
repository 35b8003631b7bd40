"""The trial node (``python -m dex_bringup.trial_node``, node ``dex_trial``): Dactyl's trial
rules for whatever controller drives the hand.

Per synced set {/joint_states, judged cube pose} newer than the last one handled it judges the
step with ``TrialTracker`` (goals, success, drop, timeout) and publishes /trial/status,
/goal/pose and /goal/marker, all stamped with the set's stamp. The controller (``dex_policy``:
the LSTM policy or the MPC, or any node that speaks the same topics) syncs those two with its
own inputs and commands the hand; it commands nothing for a step whose status says the trial
ended. Each trial starts with /sim/reset(seed + trial index); sets not newer than the newest
stamp seen when the reset was requested are ignored. The first reset is requested when the
first /joint_states has arrived and a healthy controller has announced itself on /policy/info
(or ``controller_wait_s`` passed without one: the trials then run with a WARN, recording no
controller). The protocol is in docs/interfaces.md.

Trials are judged on ``judge_source`` (``gt``: the sim's true pose; ``vision``: the estimate,
on a real hand). A judged estimate no cube could have moved to in one period
(``dex_common.pose_gate``), or a pose that is not finite, is not judged: the status of that
stamp repeats the last judgement (message ``running``), so the controller still gets its set.

Faults never crash the node: bad parameters are an ERROR on /diagnostics and no trial starts.
A time jump every input agrees on (a sim restarted under us, a bag loop) continues the trial on
the new time (WARN, ``time_jumps``).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import UInt32
from visualization_msgs.msg import Marker

from dex_common.contract import file_sha256
from dex_common.node_inputs import (
    POSE_TOPICS,
    CheckedParams,
    InputError,
    not_bool,
    not_count,
    not_in,
    not_seconds,
    pose_arrays,
)
from dex_common.pose_gate import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED, gate_from_parameters
from dex_common.ros_util import (
    ERROR,
    LATCHED_QOS,
    OK,
    POLICY_INFO_TOPIC,
    STATE_QOS,
    WARN,
    DiagnosticsPublisher,
    declare_dynamic,
    offer_to_sync,
    publish_or_warn,
    run_node,
    stamp_to_float,
)
from dex_common.sync import ApproxTimeSynchronizer
from dex_common.trial import GOAL_RULES, TrialConfig, TrialEvent, TrialTracker
from dex_description.registry import get_hand

# A pre-reset stamp arriving this long (wall) after the reset request means the request was
# lost (a lockstep sim re-sends its last set every lockstep_resend_s): request it again.
RESET_STALE_S = 0.5
# No /joint_states this long after start: WARN "waiting for /joint_states" (a hand not running).
JOINT_STATES_WAIT_S = 3.0
# exit_when_finished: time for the last status to reach the recorder and the monitor, s.
EXIT_AFTER_FINISHED_S = 1.0


class TrialNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_trial")
        self.start_wall = time.monotonic()
        self.fault = ""  # non-empty: bad parameters; no trial starts
        self.error = ""  # last input error (cleared by a good set)
        self.warning = ""
        self.status_pub = self.create_publisher(DiagnosticArray, "/trial/status", STATE_QOS)
        self.goal_pub = self.create_publisher(PoseStamped, "/goal/pose", STATE_QOS)
        self.marker_pub = self.create_publisher(Marker, "/goal/marker", STATE_QOS)
        self.reset_pub = self.create_publisher(UInt32, "/sim/reset", STATE_QOS)
        self.diag = DiagnosticsPublisher(
            self, refresh=lambda: self._publish_diagnostics(immediate=False))
        self.counts = {"sets": 0, "ignored_old": 0, "ignored_pre_reset": 0, "unjudged": 0,
                       "input_errors": 0, "resets": 0, "time_jumps": 0, "implausible_poses": 0}
        self.trial_index = 0
        self.finished = False
        self.awaiting_reset = True
        self.reset_mark = -math.inf  # sets with stamps <= this predate our reset request
        self.reset_wall: float | None = None
        self.first_js_wall: float | None = None
        self.newest_stamp = -math.inf
        self.last_handled = -math.inf
        self.last_event: TrialEvent | None = None
        self.controller: dict[str, str] | None = None  # a healthy one's /policy/info values
        self.controller_fault = ""  # what /policy/info last reported wrong
        self.controller_waited = False  # controller_wait_s passed without a healthy one
        self.exit_at = math.inf  # monotonic time to exit at (exit_when_finished)
        self._configure()
        self.create_subscription(DiagnosticStatus, POLICY_INFO_TOPIC, self._on_policy_info,
                                 LATCHED_QOS)
        self.create_timer(0.05, self._watchdog, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ---- setup ---------------------------------------------------------------------------------
    def _configure(self) -> None:
        """Read and validate parameters; any problem → fault state (no trial starts)."""
        p = CheckedParams({name: declare_dynamic(self, name, default) for name, default in (
            ("hand", "shadow"), ("judge_source", "gt"), ("num_trials", 0), ("seed", 0),
            # Where a restarted trial node resumes (dex run --respawn): trials before it ended.
            ("first_trial", 0),
            # Exit (code 0) EXIT_AFTER_FINISHED_S after 'finished': how a launch file ends.
            ("exit_when_finished", False),
            # False: the first set starts trial 0 as it is, with no /sim/reset request (the
            # state source is already at the trial's start: dex replay of a recorded trial).
            ("reset_first_trial", True),
            ("slop", 0.005),
            ("goal_timeout_s", TrialConfig.goal_timeout_s),  # Dactyl: 8 s sim, 80 s robot
            ("goal_rule", TrialConfig.goal_rule),
            ("success_threshold", TrialConfig.success_threshold),
            # The perception model in the loop (vision mode): its hash goes into every trial.
            ("pose_model_path", ""),
            ("max_cube_angular_speed", MAX_ANGULAR_SPEED),
            ("max_cube_linear_speed", MAX_LINEAR_SPEED),
            ("controller_wait_s", 30.0),
        )})
        problems = p.problems
        try:
            self.spec = get_hand(str(p["hand"]))
        except KeyError as e:
            self.spec = get_hand("shadow")
            problems.append(f"bad parameter hand: {e}")
        self.diag.hardware_id = self.spec.name
        self.judge_source = p.take("judge_source", not_in, "gt", POSE_TOPICS)
        self.num_trials = p.take("num_trials", not_count, 0)
        self.seed = p.take("seed", not_count, 0)
        self.exit_when_finished = p.take("exit_when_finished", not_bool, False)
        if p.take("reset_first_trial", not_bool, True) is False:
            self.reset_wall = time.monotonic()  # as if requested: no set predates the trial
        slop = p.take("slop", not_seconds, 0.005, 0.0, 1.0, closed_low=True)
        self.controller_wait = float(p.take("controller_wait_s", not_seconds, 30.0, 0.0, 3600.0,
                                            closed_low=True))
        first = p["first_trial"]
        if not_count("first_trial", first) or 0 < self.num_trials <= first:
            problems.append(f"first_trial must be an integer in [0, num_trials); got {first!r}")
        else:
            self.trial_index = first
        self.pose_gate, problem = gate_from_parameters(p["max_cube_angular_speed"],
                                                       p["max_cube_linear_speed"])
        problems += [problem] if problem else []
        goal_rule = p.take("goal_rule", not_in, "uniform", GOAL_RULES)
        try:
            self.trial_config = TrialConfig.for_hand(
                self.spec, goal_timeout_s=p["goal_timeout_s"],
                success_threshold=p["success_threshold"], goal_rule=goal_rule)
        except (ValueError, TypeError) as e:
            self.trial_config = TrialConfig.for_hand(self.spec)
            problems.append(str(e))
        self.tracker = TrialTracker(self.trial_config)
        self.pose_model_sha = ""
        if p["pose_model_path"]:
            try:
                self.pose_model_sha = file_sha256(str(p["pose_model_path"]))
            except OSError as e:
                self.get_logger().warning(
                    f"pose model {p['pose_model_path']!r} unreadable for hashing: {e}")
        self.vision_fallback = bool(p["pose_model_path"])  # mode until the controller says

        self.judge_topic = POSE_TOPICS[self.judge_source]
        self.sync = ApproxTimeSynchronizer(2, float(slop))
        self.create_subscription(JointState, "/joint_states", self._on_joint_states, STATE_QOS)
        self.create_subscription(PoseStamped, self.judge_topic, lambda m: self._offer(1, m),
                                 STATE_QOS)
        if problems:
            self.fault = "bad parameters: " + "; ".join(problems)
            self.get_logger().error(self.fault + " — no trial starts")
            self._publish_diagnostics()

    # ---- the controller ------------------------------------------------------------------------
    def _on_policy_info(self, st: DiagnosticStatus) -> None:
        info = {kv.key: kv.value for kv in st.values}
        if st.level == ERROR:
            self.controller, self.controller_fault = None, f"the controller reports a fault: " \
                f"{st.message}"
        elif info.get("hand") and info["hand"] != self.spec.name:
            self.controller, self.controller_fault = None, (
                f"the controller drives hand {info['hand']!r}, these trials are for "
                f"{self.spec.name!r}")
        else:
            self.controller, self.controller_fault = info, ""
            self.get_logger().info(f"controller: {info.get('controller', '?')} "
                                   f"(sha256 {info.get('model_sha256', '')[:12]})")
        if self.controller_fault:
            self.get_logger().error(self.controller_fault + " — no trial starts until it is "
                                    "healthy")
        self._publish_diagnostics()
        self._maybe_start()

    def _controller_ready(self) -> bool:
        """A healthy controller announced itself, or none spoke at all within
        controller_wait_s (a controller that does not publish /policy/info)."""
        return self.controller is not None or (self.controller_waited
                                               and not self.controller_fault)

    # ---- inputs --------------------------------------------------------------------------------
    def _on_joint_states(self, msg: JointState) -> None:
        t = stamp_to_float(msg.header.stamp)
        if not self._offer(0, msg):
            return  # rejected stamp: it moves nothing (counted by the synchronizer)
        if self.first_js_wall is None:
            self.first_js_wall = time.monotonic()
        if self.awaiting_reset and self.reset_wall is not None and t <= self.reset_mark \
                and not self.finished and time.monotonic() - self.reset_wall > RESET_STALE_S:
            # A lockstep sim re-sent its old set well after our request: it missed it.
            self.get_logger().warning("state source re-sent a pre-reset set: requesting the "
                                      "reset again")
            self._request_reset()
        self._maybe_start()

    def _maybe_start(self) -> None:
        """Request the first trial's reset once the state source publishes (so every set it
        sent before it got the request is <= reset_mark) and a controller is there to act."""
        if (self.awaiting_reset and self.reset_wall is None and not self.fault
                and not self.finished and self.first_js_wall is not None
                and self._controller_ready()):
            self._request_reset()

    def _offer(self, stream: int, msg: object) -> bool:
        """Give one message to the synchronizer and handle the sets it completes; False when
        its stamp was rejected."""
        accepted, jump, sets = offer_to_sync(self, self.sync, stream, msg)
        if not accepted:
            return False
        if jump is not None:
            self._on_time_jump(*jump)
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
        if math.isfinite(self.last_handled) and self.tracker.started and not self.tracker.ended:
            self.tracker.shift_time(new - self.last_handled - self.spec.control_period)
        self.last_handled = -math.inf
        self.newest_stamp = new
        if self.awaiting_reset and self.reset_wall is not None:
            self._request_reset()
        self._publish_diagnostics()

    def _handle_set(self, msgs: list) -> None:
        js, pose = msgs
        stamp = stamp_to_float(js.header.stamp)
        if stamp <= self.last_handled:
            self.counts["ignored_old"] += 1
            return
        if self.finished or self.fault:
            self.last_handled = stamp
            return
        if self.awaiting_reset and (self.reset_wall is None or stamp <= self.reset_mark):
            self.counts["ignored_pre_reset"] += 1
            return
        self.last_handled = stamp
        self.counts["sets"] += 1
        if self.awaiting_reset:  # first set of the trial
            self.awaiting_reset = False
            self.pose_gate.reset()
            self.last_event = None
            self.tracker.start(self.seed + self.trial_index, stamp=stamp)
        try:
            pos, quat = pose_arrays(pose, self.judge_topic)
        except InputError as e:
            self.counts["input_errors"] += 1
            self.error = str(e)
            self.get_logger().error(f"{e} — this step is not judged", throttle_duration_sec=1.0)
            self._publish_diagnostics()
            self._publish_unjudged(js.header.stamp, stamp)
            return
        self.error = ""
        if self.judge_source == "vision":
            verdict = self.pose_gate.check(stamp, pos, quat)
            if not verdict.plausible:  # a flip of the estimate can look like a reached goal
                self.counts["implausible_poses"] += 1
                self.warning = (f"{verdict.describe()} — not judged "
                                f"({self.counts['implausible_poses']} so far)")
                self.get_logger().warning(self.warning, throttle_duration_sec=1.0)
                self._publish_unjudged(js.header.stamp, stamp)
                return
        ev = self.tracker.step(stamp, pos, quat)
        self.last_event = ev
        self._publish_trial(ev, js.header.stamp)
        if not ev.ended:
            return
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

    def _publish_unjudged(self, ros_stamp: object, stamp: float) -> None:
        """The status of a step that could not be judged: the last judgement again, as
        ``running`` (a trial neither ends nor scores on a pose it cannot trust)."""
        self.counts["unjudged"] += 1
        last = self.last_event
        ev = TrialEvent("running", 0.0, last.successes if last else 0,
                        last.goal_index if last else 0,
                        last.rotation_error if last else math.nan, False, "",
                        last.steps if last else 0, stamp, self.tracker.goal)
        self._publish_trial(ev, ros_stamp)

    # ---- outputs -------------------------------------------------------------------------------
    def _publish(self, pub: object, msg: object) -> None:
        publish_or_warn(self, pub, msg)

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

    def _mode(self) -> str:
        source = (self.controller or {}).get("pose_source")
        if source in POSE_TOPICS:
            return "state" if source == "gt" else "vision"
        return "vision" if self.vision_fallback else "state"

    def _status_values(self, ev: TrialEvent | None, ended: bool) -> list[KeyValue]:
        controller = self.controller or {}
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
            "controller": controller.get("controller", ""),
            "policy_model_sha256": controller.get("model_sha256", ""),
            "pose_model_sha256": self.pose_model_sha,
            "mode": self._mode(),
            "goal_rule": self.trial_config.goal_rule,
            # the controller may plan for the rule it is judged by (the MPC's success term)
            "success_threshold": repr(float(self.trial_config.success_threshold)),
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
        w, x, y, z = (float(v) for v in np.asarray(ev.goal))
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
    def _watchdog(self) -> None:
        if (self.controller is None and not self.controller_waited
                and not self.controller_fault and self.first_js_wall is not None
                and time.monotonic() - self.first_js_wall > self.controller_wait):
            self.controller_waited = True
            self.warning = (f"no healthy controller announced itself on {POLICY_INFO_TOPIC} "
                            f"within {self.controller_wait:g} s: starting the trials anyway "
                            f"(they record no controller)")
            self.get_logger().warning(self.warning)
            self._publish_diagnostics()
            self._maybe_start()

    def _waiting(self) -> str:
        """What keeps the first trial from starting, if anything."""
        waited = time.monotonic() - self.start_wall
        if self.first_js_wall is None and waited > JOINT_STATES_WAIT_S:
            return (f"waiting for /joint_states: nothing for {waited:.0f} s (is the hand's "
                    f"driver or the sim running?)")
        if self.first_js_wall is not None and not self._controller_ready():
            return f"waiting for a healthy controller on {POLICY_INFO_TOPIC}"
        return ""

    def _publish_diagnostics(self, immediate: bool = True) -> None:
        if self.fault or self.error or self.controller_fault:
            level, msg = ERROR, self.fault or self.error or self.controller_fault
        elif self.warning:
            level, msg = WARN, self.warning
        elif waiting := self._waiting():
            level, msg = WARN, waiting
            self.get_logger().warning(msg, throttle_duration_sec=10.0)
        else:
            level, msg = OK, "finished" if self.finished else "running"
        controller = self.controller or {}
        vals = {"trial": str(self.trial_index), "finished": str(self.finished).lower(),
                "judge_source": self.judge_source, "goal_rule": self.trial_config.goal_rule,
                "controller": controller.get("controller", ""),
                "controller_model_sha256": controller.get("model_sha256", ""),
                **{k: str(v) for k, v in self.counts.items()},
                **{"sync_" + k: str(v) for k, v in self.sync.stats.items()}}
        self.diag.report("dex_trial", level, msg, vals, immediate=immediate)
        self.warning = ""


def main(args: list[str] | None = None) -> int:
    # Never a start error: bad parameters put the node in its fault state (it stays up and
    # reports them). It exits by itself after its last trial when exit_when_finished is set.
    return run_node(TrialNode, "dex_trial", (), None, args,
                    keep_running=lambda node: time.monotonic() < node.exit_at)


if __name__ == "__main__":
    sys.exit(main())
