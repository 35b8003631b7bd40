"""The real hand's control loop and safety layer, run against the emulated LEAP hand on a pty:
start-up ramp, commands, watchdog, e-stop, hardware errors, over-temperature, a silent servo,
unplug/replug, shutdown ramp."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dex_common import dynamixel as dxl
from dex_hardware.hand_loop import ERROR, OK, WARN, HandLoop
from dex_hardware.leap import LeapConfig, LeapHand
from dex_sim.dxl_emulator import EmulatedHand, PtyBus

RATE = 100.0


@pytest.fixture
def rig(tmp_path):
    hand = EmulatedHand("leap")
    bus = PtyBus(hand, link=tmp_path / "ttyLEAP").start()
    cfg = LeapConfig(port=bus.port, rate_hz=RATE, ramp_speed=2.0, watchdog_s=0.15,
                     reconnect_period_s=0.1, max_bus_errors=5,
                     latency_timer_ms=40.0)  # the emulator is a Python thread: see test_dynamixel
    loop = HandLoop(LeapHand(cfg))
    yield hand, bus, loop
    loop.hand.close()
    bus.unplug()


def run(loop: HandLoop, seconds: float, command=None) -> None:  # noqa: ANN001
    """Tick at the loop's rate for ``seconds``, submitting ``command()`` each tick if given."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if command is not None:
            loop.submit(command())
        loop.tick()
        time.sleep(1 / RATE)


def until(loop: HandLoop, state: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while loop.state != state and time.monotonic() < end:
        loop.tick()
        time.sleep(1 / RATE)
    assert loop.state == state, loop.status()


def test_startup_ramps_to_the_safe_pose_then_follows_commands(rig) -> None:
    hand, _, loop = rig
    loop.tick()
    assert loop.state == "starting" and hand.value(0, dxl.TORQUE_ENABLE) == 1
    steps = []
    while loop.state == "starting":
        before = loop.hand.guard.last_safe
        loop.tick()
        steps.append(np.max(np.abs(loop.target - before)))
        time.sleep(1 / RATE)
    assert loop.state == "ready" and max(steps) <= 2.0 / RATE + 1e-9  # ramp speed holds
    assert np.allclose(loop.target, loop.safe_pose)
    goal = loop.safe_pose + 0.2
    run(loop, 0.6, lambda: goal)
    assert loop.state == "running" and loop.level == OK
    assert np.allclose(loop.reading.positions, goal, atol=0.08), loop.reading.positions - goal


def test_watchdog_holds_then_resumes(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    run(loop, 0.2, lambda: loop.safe_pose + 0.1)
    held = loop.target.copy()
    run(loop, 0.3)  # no commands
    assert loop.state == "holding" and loop.level == WARN and "watchdog" in loop.message
    assert np.allclose(loop.target, held) and loop.counts["watchdog_holds"] == 1
    run(loop, 0.1, lambda: loop.safe_pose)
    assert loop.state == "running" and loop.level == OK


def test_estop_turns_the_torque_off_and_refuses_commands_until_recover(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    assert loop.estop("test")
    assert all(hand.value(i, dxl.TORQUE_ENABLE) == 0 for i in range(16))
    goals = hand.goal_positions()
    run(loop, 0.1, lambda: loop.safe_pose + 0.3)
    assert loop.state == "estopped" and loop.level == ERROR
    assert np.array_equal(hand.goal_positions(), goals)  # nothing written
    assert loop.recover() == "recovered"
    until(loop, "ready")
    assert hand.value(3, dxl.TORQUE_ENABLE) == 1


def test_overload_is_a_safe_stop_named_per_servo(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    run(loop, 0.1, lambda: loop.safe_pose)
    hand.set_hardware_error(6, dxl.HW_OVERLOAD)  # servo 6: middle finger PIP
    loop.tick()
    assert loop.state == "fault" and loop.level == ERROR
    assert "servo 6 (mf_pip): hardware error: overload" in loop.message
    held = loop.target.copy()
    run(loop, 0.1, lambda: loop.safe_pose + 0.3)
    assert np.allclose(loop.target, held)  # commands refused
    assert "rebooted [6]" in loop.recover()
    assert hand.value(6, dxl.HARDWARE_ERROR_STATUS) == 0
    until(loop, "ready")


def test_overheating_is_a_safe_stop(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    hand.set_temperature(13, 66)  # over our 65 C, under the servo's own 70 C
    run(loop, 0.4)  # polled every status_every cycles
    assert loop.state == "fault" and "servo 13 (th_axl): temperature 66 C > 65 C" in loop.message


def test_a_servo_that_stops_answering_is_a_safe_stop(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    loop.cfg.status_every = 2  # status polls fall on cycles where the servo is silent too
    hand.silent.add(9)
    run(loop, 1.5)  # each failed cycle: the reply timeout, then the drain
    assert loop.state == "fault" and "silent: servo 9 (rf_mcp)" in loop.message
    assert loop.counts["bus_errors"] >= 5


def test_unplug_reconnects_and_reports_what_was_missed(rig) -> None:
    hand, bus, loop = rig
    until(loop, "ready")
    run(loop, 0.1, lambda: loop.safe_pose)
    bus.unplug()
    run(loop, 0.2, lambda: loop.safe_pose + 0.1)
    assert loop.state == "disconnected" and loop.level == ERROR
    missed = loop._missed
    assert missed > 5
    bus.replug()
    until(loop, "starting", timeout=2.0)
    assert loop.counts["reconnects"] == 1
    assert "reconnected after" in loop.message and f"{missed} command(s)" in loop.message
    until(loop, "ready")


def test_shutdown_ramps_to_the_safe_pose_then_torque_off(rig) -> None:
    hand, _, loop = rig
    until(loop, "ready")
    run(loop, 0.3, lambda: loop.safe_pose + 0.25)
    loop.shutdown()
    assert loop.state == "stopping"
    until(loop, "off")
    assert np.allclose(loop.target, loop.safe_pose)
    assert all(hand.value(i, dxl.TORQUE_ENABLE) == 0 for i in range(16))


def test_a_port_that_never_answers_keeps_retrying(tmp_path) -> None:
    loop = HandLoop(LeapHand(LeapConfig(port=str(tmp_path / "nothing"), reconnect_period_s=0.05)))
    for _ in range(3):
        loop.tick()
        time.sleep(0.06)
    assert loop.state == "disconnected" and loop.level == ERROR
    assert "cannot reach the hand" in loop.message and "nothing" in loop.message
