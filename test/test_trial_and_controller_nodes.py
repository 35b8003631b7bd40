"""The trial node and the controller node as real processes over real DDS; this test plays the
sim (lockstep) with the real physics core: /sim/reset is answered, every set gets one judgement
and one command stamped like its input, /trial/status is coherent, bad inputs are ERRORs and the
hand holds its last command."""

import math
import time

import numpy as np
import pytest
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, UInt32  # noqa: E402

from dex_common.ros_util import float_to_stamp, stamp_to_float  # noqa: E402
from dex_description.registry import get_hand  # noqa: E402
from dex_sim.physics import HandCubeSim  # noqa: E402

SPEC = get_hand("shadow")
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
SEED = 7


class FakeSimSide:
    """Publishes state sets from a real HandCubeSim and records what the policy publishes."""

    def __init__(self, node):
        self.node = node
        self.sim = HandCubeSim("shadow", render=False)
        self.resets: list[int] = []
        self.cmds: list[np.ndarray] = []
        self.actions: list[JointState] = []
        self.status: list[tuple[float, DiagnosticStatus]] = []
        self.diag: list[DiagnosticStatus] = []
        self.clock_pub = node.create_publisher(Clock, "/clock", QOS)
        self.js_pub = node.create_publisher(JointState, "/joint_states", QOS)
        self.pose_pub = node.create_publisher(PoseStamped, "/object/pose_gt", QOS)
        node.create_subscription(UInt32, "/sim/reset", lambda m: self.resets.append(m.data), QOS)
        node.create_subscription(Float64MultiArray, "/hand_position_controller/commands",
                                 lambda m: self.cmds.append(np.array(m.data)), QOS)
        node.create_subscription(JointState, "/policy/action", self.actions.append, QOS)
        node.create_subscription(
            DiagnosticArray, "/trial/status",
            lambda m: self.status.extend((stamp_to_float(m.header.stamp), s) for s in m.status),
            QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.diag.extend(m.status), QOS)

    def spin_until(self, cond, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.02)
            if cond():
                return True
        return False

    def publish_set(self, q=None, names=None, pose=True, joints=True,
                    stamp_offset: float = 0.0) -> float:
        t = self.sim.time + stamp_offset
        stamp = float_to_stamp(t)
        js = JointState()
        js.header.stamp = stamp
        js.name = list(names or SPEC.joint_names)
        js.position = [float(v) for v in (self.sim.joint_positions() if q is None else q)]
        js.velocity = [float(v) for v in self.sim.joint_velocities()]
        if joints and pose:  # a genuine set: the sim's clock leads it (lies come without one)
            self.clock_pub.publish(Clock(clock=stamp))
        if joints:
            self.js_pub.publish(js)
        if pose:
            pos, quat = self.sim.cube_pose()
            ps = PoseStamped()
            ps.header.stamp = stamp
            ps.header.frame_id = "world"
            ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = map(float, pos)
            o = ps.pose.orientation
            o.w, o.x, o.y, o.z = map(float, quat)
            self.pose_pub.publish(ps)
        return t

    def step_with_last_command(self) -> None:
        self.sim.set_targets(self.cmds[-1])
        self.sim.step_control()

    def expect_command(self, n_before: int, stamp: float) -> None:
        assert self.spin_until(lambda: len(self.cmds) > n_before and len(self.actions) > n_before,
                               timeout=10), f"no command for the set at {stamp}"
        assert len(self.cmds) == n_before + 1
        assert math.isclose(stamp_to_float(self.actions[-1].header.stamp), stamp, abs_tol=1e-9)
        assert list(self.actions[-1].name) == SPEC.actuator_names
        np.testing.assert_allclose(self.actions[-1].position, self.cmds[-1])

    def status_at(self, stamp: float) -> list[DiagnosticStatus]:
        return [s for ts, s in self.status if math.isclose(ts, stamp, abs_tol=1e-9)]

    def policy_values(self, name: str = "dex_policy") -> dict[str, str]:
        """The latest status values of node ``name`` on /diagnostics."""
        mine = [s for s in self.diag if s.name == name]
        return {kv.key: kv.value for kv in mine[-1].values} if mine else {}

    def errors(self, name: str = "dex_policy") -> list[DiagnosticStatus]:
        return [s for s in self.diag if s.name == name and s.level == DiagnosticStatus.ERROR]

    def steps_at(self, stamp: float) -> int:
        return int({kv.key: kv.value for kv in self.status_at(stamp)[-1].values}["steps"])


@pytest.fixture
def side(dds_env):
    rclpy.init()
    node = rclpy.create_node("fake_sim_side")
    s = FakeSimSide(node)
    yield s
    node.destroy_node()
    rclpy.try_shutdown()


def start_nodes(node_procs, trial: dict | None = None, **policy):
    """The trial node (``trial``: its parameter overrides) and the controller (``policy``)."""
    procs = []
    for name, module, params in (
            ("trial", "dex_bringup.trial_node", {"seed": SEED, "use_sim_time": True,
                                                 **(trial or {})}),
            ("policy", "dex_policy.node", {"pose_source": "gt", "input_timeout_s": 0.5,
                                           "use_sim_time": True, **policy})):
        args = ["-m", module, "--ros-args"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        procs.append(node_procs.start(name, args))
    return procs


def logs(node_procs) -> str:
    return node_procs.log("trial") + logs(node_procs)


def test_lockstep_trial_and_faults(node_procs, side):
    procs = start_nodes(node_procs)
    assert side.spin_until(lambda: side.js_pub.get_subscription_count() > 1
                           and side.pose_pub.get_subscription_count() > 1, timeout=30)
    # Like the lockstep sim: publish the first set and wait; the trial node answers with a reset
    # (no command comes), then that pre-reset set is ignored even when it is re-sent.
    t_pre = side.publish_set()
    assert side.spin_until(lambda: side.resets, timeout=30), logs(node_procs)
    assert side.resets[0] == SEED  # seed + trial index 0
    side.publish_set()  # a re-send of the pre-reset set
    assert not side.spin_until(lambda: side.cmds, timeout=0.3)
    side.sim.reset(side.resets[0])
    assert side.sim.time > t_pre

    # One command per set, /policy/action stamped with the input stamp.
    for i in range(4):
        n = len(side.cmds)
        t = side.publish_set()
        side.expect_command(n, t)
        assert side.spin_until(lambda t=t: side.status_at(t), timeout=5), "no /trial/status"
        st = side.status_at(t)
        v = {kv.key: kv.value for kv in st[-1].values}
        assert st[-1].name == "trial" and st[-1].message in ("running", "success")
        assert v["trial"] == "0" and v["seed"] == str(SEED) and v["ended"] == "false"
        assert v["steps"] == str(i + 1) and v["mode"] == "state"
        assert float(v["success_threshold"]) == 0.4  # the rule, for controllers that plan for it
        assert len(v["policy_model_sha256"]) == 64
        side.step_with_last_command()

    # A re-sent set (same stamp) is ignored: no second command.
    n = len(side.cmds)
    t_last = side.publish_set()
    side.expect_command(n, t_last)
    side.publish_set()
    assert not side.spin_until(lambda: len(side.cmds) > n + 1, timeout=0.7)
    side.step_with_last_command()

    # NaN joint state: ERROR on /diagnostics, the previous command is held (re-published).
    prev = side.cmds[-1].copy()
    q = side.sim.joint_positions()
    q[3] = np.nan
    n = len(side.cmds)
    t = side.publish_set(q=q)
    side.expect_command(n, t)
    np.testing.assert_array_equal(side.cmds[-1], prev)
    assert side.spin_until(lambda: any("NaN" in s.message for s in side.errors()), timeout=5)

    # Unknown joint names: ERROR and hold.
    side.sim.step_control()
    names = list(SPEC.joint_names)
    names[0] = "bogus_joint"
    n = len(side.cmds)
    t = side.publish_set(names=names)
    side.expect_command(n, t)
    np.testing.assert_array_equal(side.cmds[-1], prev)
    assert side.spin_until(lambda: any("unknown joint" in s.message for s in side.errors()),
                           timeout=5)

    # Reordered names are accepted (reordered by name): a normal new command follows.
    side.sim.step_control()
    perm = np.random.default_rng(0).permutation(SPEC.n_joints)
    q = side.sim.joint_positions()
    n = len(side.cmds)
    t = side.publish_set(q=q[perm], names=[SPEC.joint_names[i] for i in perm])
    side.expect_command(n, t)
    assert side.spin_until(lambda: side.status_at(t), timeout=5)
    v = {kv.key: kv.value for kv in side.status_at(t)[-1].values}
    assert v["steps"] == "8"  # the trial node judged the sets the controller could not use

    # joint_states without a pose: after input_timeout_s the hold command keeps lockstep going.
    side.step_with_last_command()
    prev = side.cmds[-1].copy()
    n = len(side.cmds)
    t0 = time.monotonic()
    t = side.publish_set(pose=False)
    side.expect_command(n, t)
    assert time.monotonic() - t0 >= 0.4
    np.testing.assert_array_equal(side.cmds[-1], prev)
    # The pose stopped: STALE on /diagnostics naming the topic.
    assert side.spin_until(
        lambda: any(s.name == "dex_policy" and s.level == DiagnosticStatus.STALE
                    and "/object/pose_gt" in s.message for s in side.diag), timeout=5)

    # Lying stamps: a joint state stamped 0 and a pose stamped 1000 s ahead are rejected and
    # move nothing: the next genuine set gets its command at once and the trial goes on.
    while side.sim.time < 2.0:  # (a stamp within 1 s of the others is only out of order)
        side.step_with_last_command()
        n = len(side.cmds)
        side.expect_command(n, side.publish_set())
    side.step_with_last_command()
    n = len(side.cmds)
    side.publish_set(pose=False, stamp_offset=-side.sim.time)  # stamp 0
    side.publish_set(joints=False, stamp_offset=1000.0)
    t = side.publish_set()
    side.expect_command(n, t)
    assert side.spin_until(lambda t=t: side.status_at(t), timeout=5)
    steps = side.steps_at(t)
    for name in ("dex_policy", "dex_trial"):
        assert side.spin_until(
            lambda n=name: side.policy_values(n).get("sync_dropped_implausible") == "2",
            timeout=5), side.policy_values(name)
        assert side.policy_values(name)["time_jumps"] == "0"

    # The clock and every input jump back 1.5 s together (a sim restarted under us, a bag loop):
    # the trial continues on the new time, with no step lost and a WARN saying so.
    for k in range(2):
        side.step_with_last_command()
        n = len(side.cmds)
        t = side.publish_set(stamp_offset=-1.5)
        side.expect_command(n, t)
        assert side.spin_until(lambda t=t: side.status_at(t), timeout=5)
        v = {kv.key: kv.value for kv in side.status_at(t)[-1].values}
        assert v["steps"] == str(steps + 1 + k) and v["ended"] == "false"
    for name in ("dex_policy", "dex_trial"):
        assert side.spin_until(lambda n=name: side.policy_values(n).get("time_jumps") == "1",
                               timeout=5)
        assert any(s.name == name  # (STALE instead of WARN if this test was slow)
                   and s.level in (DiagnosticStatus.WARN, DiagnosticStatus.STALE)
                   and "input time jumped by -1.4" in s.message for s in side.diag)
    assert all(p.poll() is None for p in procs), logs(node_procs)


def test_bad_parameters_do_not_crash_either_node(node_procs, side):
    """Each node names every bad parameter at once (ERROR on /diagnostics) and stays up; the
    faulted controller says so on /policy/info, so the trial node starts no trial."""
    procs = start_nodes(node_procs, pose_source="bogus", model_path="/nonexistent.onnx",
                        slop="abc")
    assert side.spin_until(lambda: any("pose_source" in s.message for s in side.errors()),
                           timeout=30), logs(node_procs)
    msg = next(s.message for s in side.errors() if "pose_source" in s.message)
    assert "slop" in msg  # all named at once
    side.publish_set()  # the hand speaks, but no healthy controller: no trial
    assert side.spin_until(lambda: any("controller reports a fault" in s.message
                                       for s in side.errors("dex_trial")), timeout=10)
    assert not side.spin_until(lambda: side.resets, timeout=1.0)
    assert all(p.poll() is None for p in procs)


def test_a_trial_node_with_bad_parameters_starts_no_trial(node_procs, side):
    procs = start_nodes(node_procs, trial={"num_trials": -1, "first_trial": -2, "slop": "abc",
                                           "goal_rule": "sideways"})
    assert side.spin_until(lambda: side.errors("dex_trial"), timeout=30), logs(node_procs)
    msg = side.errors("dex_trial")[-1].message
    assert all(k in msg for k in ("num_trials", "first_trial", "slop", "goal_rule")), msg
    side.publish_set()
    assert not side.spin_until(lambda: side.resets, timeout=1.0)
    assert all(p.poll() is None for p in procs)


def test_trials_start_without_a_controller_that_never_announces_itself(node_procs, side):
    """A controller that does not speak /policy/info (one of the user's own): the trial node
    WARNs that it waits, then after controller_wait_s runs the trials anyway."""
    args = ["-m", "dex_bringup.trial_node", "--ros-args", "-p", f"seed:={SEED}",
            "-p", "use_sim_time:=true", "-p", "controller_wait_s:=1.5"]
    node_procs.start("trial", args)
    assert side.spin_until(lambda: side.js_pub.get_subscription_count() > 0, timeout=30)
    side.publish_set()
    assert side.spin_until(lambda: any(
        s.name == "dex_trial" and "waiting for a healthy controller" in s.message
        for s in side.diag), timeout=10), node_procs.log("trial")
    assert not side.resets
    assert side.spin_until(lambda: side.resets, timeout=10), node_procs.log("trial")
    assert side.resets[0] == SEED


def test_the_trial_node_exits_after_finished_when_asked(node_procs, side):
    """exit_when_finished:=true (what the launch files set): after its last trial the trial
    node publishes 'finished', then exits with code 0 about a second later (the launch file's
    OnProcessExit then ends the graph)."""
    proc, _ = start_nodes(node_procs, trial={"num_trials": 1, "goal_timeout_s": 0.4,
                                             "exit_when_finished": True})
    assert side.spin_until(lambda: side.js_pub.get_subscription_count() > 1
                           and side.pose_pub.get_subscription_count() > 1, timeout=30)
    side.publish_set()
    assert side.spin_until(lambda: side.resets, timeout=30), logs(node_procs)
    side.sim.reset(side.resets[0])
    finished = lambda: any(s.message == "finished" for _, s in side.status)  # noqa: E731
    for _ in range(40):  # 0.4 s of sim time = 5 control steps, then a timeout
        n = len(side.cmds)
        side.publish_set()
        side.spin_until(lambda n=n: len(side.cmds) > n or finished(), timeout=10)
        if finished():
            break
        side.step_with_last_command()
    assert finished(), logs(node_procs)
    t_finished = time.monotonic()
    assert proc.wait(timeout=10) == 0, logs(node_procs)
    assert 0.5 < time.monotonic() - t_finished < 5.0


def test_both_nodes_say_they_wait_for_the_hand(node_procs, side):
    """No /joint_states at all (a hand whose driver is not running): WARN on /diagnostics
    naming the topic, instead of a silent wait; it clears once the hand speaks."""
    start_nodes(node_procs)
    for name in ("dex_policy", "dex_trial"):
        assert side.spin_until(lambda n=name: [
            s for s in side.diag if s.name == n and s.level == DiagnosticStatus.WARN
            and "waiting for /joint_states" in s.message], timeout=15), logs(node_procs)
    side.publish_set()
    assert side.spin_until(lambda: side.resets, timeout=10), logs(node_procs)
    n = len(side.diag)
    assert side.spin_until(lambda: {s.name for s in side.diag[n:]}
                           >= {"dex_policy", "dex_trial"}, 5)
    assert not any("waiting for /joint_states" in s.message for s in side.diag[n:])


@pytest.mark.parametrize("judge_source", ["gt", "vision"])
def test_an_implausible_vision_estimate_is_not_acted_on_nor_judged(node_procs, side,
                                                                    judge_source):
    """A pose estimate that flips the cube 180° in one control period (a face taken for its
    opposite) is held through: the hand keeps its last command and /diagnostics says so (WARN,
    ``implausible_poses``); the next good estimate goes on. Judged on the truth (sim), the step
    still counts; judged on the estimate (a real hand), the step is not judged: its status
    repeats the last judgement, so the controller still gets its set."""
    from dex_common.rotations import axis_angle_to_quat, quat_mul

    vision_pub = side.node.create_publisher(PoseStamped, "/object/pose", QOS)
    start_nodes(node_procs, trial={"judge_source": judge_source}, pose_source="vision")
    assert side.spin_until(lambda: side.js_pub.get_subscription_count() > 1
                           and vision_pub.get_subscription_count() > 0, timeout=30)

    def publish(flip: bool = False) -> float:
        pos, quat = side.sim.cube_pose()
        if flip:
            quat = quat_mul(axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), math.pi), quat)
        ps = PoseStamped()
        ps.header.stamp = float_to_stamp(side.sim.time)
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = map(float, pos)
        o = ps.pose.orientation
        o.w, o.x, o.y, o.z = map(float, quat)
        vision_pub.publish(ps)
        return side.publish_set()

    publish()
    assert side.spin_until(lambda: side.resets, timeout=30), logs(node_procs)
    side.sim.reset(side.resets[0])
    stamps = []
    for k in range(5):
        n = len(side.cmds)
        stamps.append(publish(flip=k == 2))
        side.expect_command(n, stamps[-1])
        if k == 2:
            np.testing.assert_array_equal(side.cmds[-1], side.cmds[-2])  # held
        side.step_with_last_command()
    assert side.spin_until(lambda: side.policy_values().get("implausible_poses") == "1", 10)
    assert all(side.status_at(t) for t in stamps)
    steps = [side.steps_at(t) for t in stamps]
    assert steps == ([1, 2, 3, 4, 5] if judge_source == "gt" else [1, 2, 2, 3, 4]), steps
    judges = ["dex_policy"] + (["dex_trial"] if judge_source == "vision" else [])
    for name in judges:  # WARN (or STALE once the inputs stop, the warning carried along)
        assert side.spin_until(lambda n=name: any(
            s.level in (DiagnosticStatus.WARN, DiagnosticStatus.STALE)
            and "implausible cube pose" in s.message for s in side.diag if s.name == n), 5)
    assert side.spin_until(lambda: "implausible_poses" in side.policy_values("dex_trial"), 5)
    assert side.policy_values("dex_trial")["implausible_poses"] == str(len(judges) - 1)


def test_a_controller_slower_than_the_input_timeout_is_not_a_stopped_input(node_procs, side):
    """Lockstep with the MPC controller planning for longer than input_timeout_s: the sim, its
    cameras and perception wait for the command, so no input is reported stopped (before, the
    pose was STALE after every slow plan); the commands keep coming."""
    timeout = 0.15
    start_nodes(node_procs, controller="mpc", mpc_horizon=16, input_timeout_s=timeout)
    assert side.spin_until(lambda: side.js_pub.get_subscription_count() > 1
                           and side.pose_pub.get_subscription_count() > 1, timeout=30)
    side.publish_set()
    assert side.spin_until(lambda: side.resets, timeout=30), logs(node_procs)
    side.sim.reset(side.resets[0])
    slow = 0
    for _ in range(4):
        n = len(side.cmds)
        t0 = time.monotonic()
        t = side.publish_set()
        side.expect_command(n, t)
        slow += time.monotonic() - t0 > timeout
        side.spin_until(lambda: False, timeout=0.05)  # diagnostics the plan may have caused
        side.step_with_last_command()
    assert slow >= 2  # most plans took longer than the timeout
    stale = [s.message for s in side.diag if s.name == "dex_policy"
             and s.level == DiagnosticStatus.STALE]
    assert not stale, stale
