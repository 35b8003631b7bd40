"""dex_recorder: one rosbag2 (MCAP) per trial, written with the ``rosbags`` library.

Thin node over :mod:`dex_bringup.bagging`: raw (CDR bytes) subscriptions on every topic, the
trial windows from /trial/status, counts on /diagnostics. Run:
``python -m dex_bringup.recorder --ros-args -p out_dir:=runs/x``.
"""

from __future__ import annotations

import signal
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions

from dex_bringup.bag_frames import FrameSink
from dex_bringup.bagging import RosbagsSink, TrialRouter
from dex_bringup.graph import message_class, record_topics, topic_types


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
        self._subs: dict[str, object] = {}
        self._reliability: dict[str, ReliabilityPolicy] = {}
        for topic in self.types:
            self._subscribe(topic, ReliabilityPolicy.RELIABLE)
        self._status_cls = DiagnosticArray
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
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
        if len(self.router.errors) != self._last_errors or self.router.counts["write_errors"]:
            if self.router.errors and len(self.router.errors) != self._last_errors:
                self.get_logger().error(self.router.errors[-1])
                self._last_errors = len(self.router.errors)
                self._publish_diag()

    def _slow_tick(self) -> None:
        self._publish_diag()
        # Match best-effort publishers (a reliable subscription would receive nothing).
        for topic in self.types:
            infos = self.get_publishers_info_by_topic(topic)
            best_effort = any(
                i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos
            )
            if best_effort and self._reliability[topic] == ReliabilityPolicy.RELIABLE:
                self.get_logger().warn(f"{topic} has a best-effort publisher: subscribing best-effort")
                self._subscribe(topic, ReliabilityPolicy.BEST_EFFORT)

    def _publish_diag(self) -> None:
        c = self.router.counts
        lost = c["bad"] + c["write_errors"]
        level = DiagnosticStatus.ERROR if lost else (
            DiagnosticStatus.WARN if c["late"] + c["overflow"] else DiagnosticStatus.OK
        )
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        st = DiagnosticStatus(name="dex_recorder", hardware_id="dex", level=level)
        st.message = (
            f"{c['written']} written, {lost} not written" + (f": {self.router.errors[-1]}" if lost else "")
        )
        st.values = [KeyValue(key=k, value=str(v)) for k, v in c.items()]
        st.values.append(KeyValue(key="out_dir", value=str(self.out_dir)))
        st.values.append(
            KeyValue(key="closed_trials", value=str(sum(t.closed for t in self.router.trials.values())))
        )
        msg.status = [st]
        self._diag_pub.publish(msg)

    def shutdown(self) -> None:
        self.router.close_all(time.monotonic())
        c = self.router.counts
        self.get_logger().info(
            f"closed all bags in {self.out_dir}: {c['written']} written, {c['untrialed']} untrialed, "
            f"{c['late']} late, {c['bad'] + c['write_errors']} not written"
        )


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = {"flag": False}

    def _stop(_sig: int, _frame: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    node = RecorderNode()
    try:
        while rclpy.ok() and not stop["flag"]:
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
