"""The LEAP hand node as a real process over real DDS, on the emulated hand's pseudo-terminal:
joint states, both command topics, the e-stop service, /diagnostics, shutdown ramp."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from dex_common import dynamixel as dxl
from dex_description.registry import LEAP_SERVOS, get_hand
from dex_sim.dxl_emulator import EmulatedHand, PtyBus

SPEC = get_hand("leap")
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture
def graph(node_procs, dds_env, tmp_path):
    hand = EmulatedHand("leap")
    bus = PtyBus(hand, link=tmp_path / "ttyUSB0").start()
    node_procs.start("leap", ["-m", "dex_hardware.leap_node", "--ros-args",
                              "-p", f"port:={bus.port}", "-p", "ramp_speed:=3.0",
                              "-p", "watchdog_s:=0.3",
                              # the emulator answers from a Python thread: allow a loaded CI
                              # machine the reply time of a 40 ms USB latency timer
                              "-p", "latency_timer_ms:=40.0"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(dds_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("leap_test", context=ctx)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    got: dict[str, list] = {"js": [], "diag": []}
    node.create_subscription(JointState, "/joint_states", got["js"].append, QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: got["diag"].extend(s for s in m.status
                                                          if s.name == "leap_hand"), QOS)
    pubs = {"cmd": node.create_publisher(Float64MultiArray,
                                         "/hand_position_controller/commands", QOS),
            "leap": node.create_publisher(JointState, "cmd_leap", QOS)}

    def spin_until(cond, timeout=10.0) -> bool:  # noqa: ANN001
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.02)
            if cond():
                return True
        return False

    yield hand, bus, node, pubs, got, spin_until, node_procs
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    bus.unplug()


def _last_message(got) -> str:  # noqa: ANN001
    return got["diag"][-1].message if got["diag"] else "(none)"


def test_leap_node_drives_the_hand_and_stops_safely(graph) -> None:
    hand, bus, node, pubs, got, spin_until, procs = graph
    assert spin_until(lambda: any("waiting for commands" in s.message for s in got["diag"]),
                      timeout=30), procs.log("leap") + _last_message(got)
    js = got["js"][-1]
    assert list(js.name) == SPEC.joint_names and len(js.position) == 16
    assert js.header.stamp.sec > 0
    # The sim's command topic, registry order.
    goal = np.clip(np.full(16, 0.3), *SPEC.actuator_limits())

    def settled(target: np.ndarray) -> bool:
        pubs["cmd"].publish(Float64MultiArray(data=target.tolist()))
        return bool(got["js"]) and np.max(np.abs(np.array(got["js"][-1].position) - target)) < 0.1

    assert spin_until(lambda: settled(goal), timeout=10), got["js"][-1].position
    # LEAP_Hand_API's cmd_leap: servo ID order, pi = open hand.
    leap_goal = np.full(16, math.pi + 0.15)
    want = LEAP_SERVOS.from_servo(leap_goal[list(LEAP_SERVOS.ids)])

    def settled_leap() -> bool:
        pubs["leap"].publish(JointState(position=leap_goal.tolist()))
        return np.max(np.abs(np.array(got["js"][-1].position) - want)) < 0.1

    assert spin_until(settled_leap, timeout=10)
    # A bad command is refused on /diagnostics; the hand holds.
    n = len(got["diag"])
    pubs["cmd"].publish(Float64MultiArray(data=[float("nan")] * 16))
    assert spin_until(lambda: any("non-finite" in s.message for s in got["diag"][n:]), 5)
    # E-stop: torque off, confirmed.
    cli = node.create_client(Trigger, "/hand/estop")
    assert cli.wait_for_service(timeout_sec=5)
    fut = cli.call_async(Trigger.Request())
    assert spin_until(fut.done, 5) and fut.result().success, fut.result()
    assert all(hand.value(i, dxl.TORQUE_ENABLE) == 0 for i in range(16))
    rec = node.create_client(Trigger, "/hand/recover")
    fut = rec.call_async(Trigger.Request())
    assert spin_until(fut.done, 5) and fut.result().success, fut.result().message
    assert spin_until(lambda: hand.value(0, dxl.TORQUE_ENABLE) == 1, 5)
    # SIGINT: ramp to the safe pose, torque off, exit 0.
    name, proc = procs.procs[0]
    proc.send_signal(__import__("signal").SIGINT)
    assert proc.wait(timeout=20) == 0, procs.log("leap")
    assert "torque off" in procs.log("leap")
    assert all(hand.value(i, dxl.TORQUE_ENABLE) == 0 for i in range(16))


def test_leap_node_refuses_bad_parameters(node_procs) -> None:
    p = node_procs.start("leap_bad", ["-m", "dex_hardware.leap_node", "--ros-args",
                                      "-p", "operating_mode:=1", "-p", "current_limit_ma:=0"])
    assert p.wait(timeout=30) == 2
    log = node_procs.log("leap_bad")
    assert "operating_mode must be 3" in log and "current_limit_ma" in log, log


def test_leap_node_without_a_hand_reports_and_keeps_retrying(node_procs, dds_env, tmp_path):
    p = node_procs.start("leap_none", ["-m", "dex_hardware.leap_node", "--ros-args",
                                       "-p", f"port:={tmp_path / 'ttyUSB9'}",
                                       "-p", "reconnect_period_s:=0.2"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(dds_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("leap_none_test", context=ctx)
    diag = []
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: diag.extend(s for s in m.status if s.name == "leap_hand"),
                             QOS)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + 20
    while time.monotonic() < end and not diag:
        ex.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    assert diag and diag[-1].level == b"\x02" and "cannot reach the hand" in diag[-1].message
    assert p.poll() is None  # still running, still retrying
    assert os.path.basename(str(tmp_path / "ttyUSB9")) in diag[-1].message
