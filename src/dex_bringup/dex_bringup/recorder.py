"""dex_recorder: one rosbag2 (MCAP) per trial, written with the ``rosbags`` library.

Thin node over :mod:`dex_bringup.bagging`: raw (CDR bytes) subscriptions on every topic, the
trial windows from /trial/status, counts on /diagnostics. Run:
``python -m dex_bringup.recorder --ros-args -p out_dir:=runs/x``.
"""

from __future__ import annotations

import sys
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from dex_bringup.bag_frames import FrameSink
from dex_bringup.bagging import RosbagsSink, TrialRouter
from dex_bringup.graph import message_class, record_topics, sensor_topics, topic_types
from dex_common.ros_util import ERROR, OK, WARN, DiagnosticsPublisher, run_node


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_recorder")
        hand = self.declare_parameter("hand", "shadow").value
        self.out_dir = self.declare_parameter("out_dir", "runs/record").value
        topics = list(self.declare_parameter("topics", record_topics(hand)).value)
        grace = float(self.declare_parameter("grace_s", 1.0).value)
        # /tf, /tf_static, /robot_description derived into each bag (dex_bringup.bag_frames)
        frames = bool(self.declare_parameter("frames", True).value)
        known = topic_types(hand)
        unknown = [t for t in topics if t not in known]
        if unknown:
            self.get_logger().error(f"not recording unknown topics {unknown}; known: {sorted(known)}")
        self.types = {t: known[t] for t in topics if t in known}
        self.sink = RosbagsSink(self.out_dir, log=lambda s: self.get_logger().info(s))
        if frames:
            self.sink = FrameSink(self.sink, hand)
        self.router = TrialRouter(self.sink, self.types, grace_s=grace)
        self.sensors = [t for t in sensor_topics(hand) if t in self.types]
        self._closed = 0
        # Without /clock (a wall-time graph: the real hand), a header-less message (the command
        # topic's Float64MultiArray) is routed by the time it arrived.
        self.wall_time = not self.get_parameter("use_sim_time").value
        self._subs: dict[str, object] = {}
        self._reliability: dict[str, ReliabilityPolicy] = {}
        for topic in self.types:
            self._subscribe(topic, ReliabilityPolicy.RELIABLE)
        self._status_cls = DiagnosticArray
        self.diag = DiagnosticsPublisher(self, hardware_id="dex",
                                         refresh=lambda: self._publish_diag(immediate=False))
        self._last_errors = 0
        # Wall-clock timers: with use_sim_time a sim-time timer would stall whenever /clock does.
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.2, self._tick, clock=wall)
        self.create_timer(1.0, self._slow_tick, clock=wall)
        self.get_logger().info(f"recording {len(self.types)} topics into {self.out_dir}")

    def _subscribe(self, topic: str, reliability: ReliabilityPolicy) -> None:
        if topic in self._subs:
            self.destroy_subscription(self._subs.pop(topic))
        cls = message_class(self.types[topic])
        qos = QoSProfile(depth=200, reliability=reliability)
        self._subs[topic] = self.create_subscription(
            cls, topic, lambda data, t=topic: self._on_raw(t, data), qos, raw=True
        )
        self._reliability[topic] = reliability

    def _on_raw(self, topic: str, data: bytes) -> None:
        now = time.monotonic()
        if self.wall_time:
            self.router.clock = self.get_clock().now().nanoseconds
        self.router.on_message(topic, data, now)
        if topic == "/trial/status":
            try:
                msg = deserialize_message(data, self._status_cls)
            except Exception as exc:  # a corrupt status must not stop the recording
                self.router.counts["bad"] += 1
                self.get_logger().error(f"could not parse /trial/status: {exc}")
                return
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            for st in msg.status:
                if st.name == "trial":
                    values = {kv.key: kv.value for kv in st.values}
                    self.router.on_status(stamp, st.message, values, now)

    def _tick(self) -> None:
        self.router.tick(time.monotonic())
        closed = sum(t.closed for t in self.router.trials.values())
        if closed != self._closed:  # at once: `dex run` waits for the last bag to close
            self._closed = closed
            self._publish_diag()
        if len(self.router.errors) != self._last_errors or self.router.counts["write_errors"]:
            if self.router.errors and len(self.router.errors) != self._last_errors:
                self.get_logger().error(self.router.errors[-1])
                self._last_errors = len(self.router.errors)
                self._publish_diag()

    def _slow_tick(self) -> None:
        # A trial's bag waits for the sensor streams that have a writer (TrialRouter).
        self.router.wait_topics = frozenset(
            t for t in self.sensors if self._subs[t].get_publisher_count() > 0)
        # Match best-effort publishers (a reliable subscription would receive nothing).
        for topic in self.types:
            infos = self.get_publishers_info_by_topic(topic)
            best_effort = any(
                i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos
            )
            if best_effort and self._reliability[topic] == ReliabilityPolicy.RELIABLE:
                self.get_logger().warn(f"{topic} has a best-effort publisher: subscribing best-effort")
                self._subscribe(topic, ReliabilityPolicy.BEST_EFFORT)

    def _publish_diag(self, immediate: bool = True) -> None:
        c = self.router.counts
        lost = c["bad"] + c["write_errors"]
        level = ERROR if lost else WARN if c["late"] + c["overflow"] else OK
        message = (f"{c['written']} written, {lost} not written"
                   + (f": {self.router.errors[-1]}" if lost else ""))
        closed = sum(t.closed for t in self.router.trials.values())
        self.diag.report("dex_recorder", level, message,
                         {**c, "out_dir": self.out_dir, "closed_trials": closed}, immediate)

    def shutdown(self) -> None:
        self.router.close_all(time.monotonic())
        c = self.router.counts
        self.get_logger().info(
            f"closed all bags in {self.out_dir}: {c['written']} written, {c['untrialed']} untrialed, "
            f"{c['late']} late, {c['bad'] + c['write_errors']} not written"
        )


def main(argv: list[str] | None = None) -> int:
    return run_node(RecorderNode, "dex_recorder", (), RecorderNode.shutdown, argv)


if __name__ == "__main__":
    sys.exit(main())
