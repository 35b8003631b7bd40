"""ROS 2 node for a real LEAP hand: the thin adapter around ``HandLoop`` (all logic is there).

    ros2 run dex_hardware leap_node --ros-args -p port:=/dev/ttyUSB0 -p current_limit_ma:=350

Publishes /joint_states (registry joint names and order, stamped at read time; effort = motor
current in A) and /diagnostics; takes actuator targets on the sim's command topic
(/hand_position_controller/commands, Float64MultiArray, registry order, rad) and on LEAP_Hand_API's
``cmd_leap`` (JointState, LEAP's convention: servo ID order, pi = open hand), so scripts written
for their node work unchanged. Services: /hand/estop (torque off now) and /hand/recover
(std_srvs/Trigger). Every ``LeapConfig`` field is a parameter of the same name.
On SIGINT/SIGTERM the hand ramps to its safe pose and turns its torque off before exiting.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from dex_common.ros_util import (
    COMMAND_TOPIC,
    STATE_QOS,
    STATE_WRITER_QOS,
    DiagnosticsPublisher,
    run_node,
)
from dex_hardware.hand_loop import HandLoop
from dex_hardware.leap import LeapConfig, LeapHand

SHUTDOWN_TIMEOUT_S = 10.0


class LeapNode(Node):
    def __init__(self) -> None:
        super().__init__("leap_hand")
        defaults = LeapConfig()
        values = {}
        for name in LeapConfig.field_names():
            default = getattr(defaults, name)
            if isinstance(default, tuple):
                default = list(default)
            values[name] = self.declare_parameter(name, default).value
        values["side_ids"] = tuple(int(i) for i in values["side_ids"])
        cfg = LeapConfig(**values)
        cfg.validate()  # ValueError names every bad parameter
        self.hand = LeapHand(cfg)
        self.loop = HandLoop(self.hand)
        self.joint_names = self.hand.spec.joint_names
        self.servo_ids = list(self.hand.map.ids)
        self.diag = DiagnosticsPublisher(self, hardware_id=f"leap@{cfg.port}")
        self.js_pub = self.create_publisher(JointState, "/joint_states", STATE_WRITER_QOS)
        self.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command, STATE_QOS)
        self.create_subscription(JointState, "cmd_leap", self._on_cmd_leap, STATE_QOS)
        self.create_service(Trigger, "/hand/estop", self._on_estop)
        self.create_service(Trigger, "/hand/recover", self._on_recover)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.timer = self.create_timer(1.0 / cfg.rate_hz, self._tick, clock=self._steady)
        self._last_stamp = None
        self._last_level: int | None = None
        self.get_logger().info(f"LEAP hand on {cfg.port} at {cfg.baudrate} baud, "
                               f"{cfg.rate_hz:g} Hz; safety: watchdog {cfg.watchdog_s:g} s, "
                               f"max step {cfg.max_step:g} rad")

    # ---- inputs ------------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        self.loop.submit(np.asarray(msg.data, float))  # the guard judges it at the next tick

    def _on_cmd_leap(self, msg: JointState) -> None:
        pos = np.asarray(msg.position, float)
        if pos.shape != (len(self.servo_ids),):
            self.diag.report("leap_hand/cmd_leap", 1, f"cmd_leap needs {len(self.servo_ids)} "
                             f"positions in servo ID order; got {pos.shape[0]}: ignored")
            return
        self.loop.submit(self.hand.map.from_servo(pos[self.servo_ids]))

    def _on_estop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success = self.loop.estop("e-stop service")
        res.message = self.loop.message
        self._report(force=True)
        return res

    def _on_recover(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.message = self.loop.recover()
        res.success = self.loop.state in ("starting", "ready")
        self._report(force=True)
        return res

    # ---- cycle -------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.loop.tick()
        r = self.loop.reading
        if r is not None and r.stamp != self._last_stamp:
            self._last_stamp = r.stamp
            msg = JointState()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.name = self.joint_names
            msg.position = r.positions.tolist()
            msg.velocity = r.velocities.tolist()
            msg.effort = (r.currents_ma / 1000.0).tolist()
            self.js_pub.publish(msg)
        self._report()

    def _report(self, force: bool = False) -> None:
        st = self.loop.status()
        changed = force or st.level != self._last_level
        self._last_level = st.level
        self.diag.report("leap_hand", st.level, st.message, st.values, immediate=changed)

    def stop_hand(self) -> None:
        """Ramp to the safe pose and torque off (bounded by SHUTDOWN_TIMEOUT_S)."""
        self.loop.shutdown()
        end = time.monotonic() + SHUTDOWN_TIMEOUT_S
        while self.loop.state not in ("off", "disconnected") and time.monotonic() < end:
            self.loop.tick()
            time.sleep(1.0 / self.hand.config.rate_hz)
        self.get_logger().info(f"LEAP hand: {self.loop.message}")
        self.hand.close()


def main(args: list[str] | None = None) -> int:
    return run_node(LeapNode, "leap_hand", (ValueError, KeyError), LeapNode.stop_hand, args)


if __name__ == "__main__":
    sys.exit(main())
