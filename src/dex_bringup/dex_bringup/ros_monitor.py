"""The demo/bench monitor node (thin rclpy adapter over :class:`dex_bringup.monitor.DemoMonitor`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from dex_bringup.bagging import cdr_stamp
from dex_bringup.graph import camera_topics, message_class
from dex_bringup.monitor import DemoMonitor


class MonitorNode(Node):
    """Subscribes /trial/status, /diagnostics, /policy/action and the loop inputs."""

    def __init__(
        self,
        hand: str = "shadow",
        vision: bool = True,
        progress: Callable[[str], None] | None = None,
        name: str = "dex_monitor",
    ) -> None:
        super().__init__(name)
        self.core = DemoMonitor(input_name="camera" if vision else "/joint_states")
        self.progress = progress or (lambda s: None)
        self.counts: dict[str, int] = {}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        inputs = [t for t in camera_topics(hand) if t.endswith("image_raw")] if vision else ["/joint_states"]
        for topic in inputs:
            cls = message_class("sensor_msgs/msg/Image" if vision else "sensor_msgs/msg/JointState")
            self.create_subscription(cls, topic, lambda d, t=topic: self._on_input(t, d), qos, raw=True)
        self.create_subscription(
            message_class("sensor_msgs/msg/JointState"), "/policy/action", self._on_action, qos, raw=True
        )
        self.create_subscription(DiagnosticArray, "/trial/status", self._on_status, qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)

    def _count(self, topic: str) -> None:
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _on_input(self, topic: str, data: bytes) -> None:
        self._count(topic)
        try:
            self.core.on_input(cdr_stamp(data), time.monotonic())
        except ValueError as exc:
            self.get_logger().warn(f"{topic}: {exc}")

    def _on_action(self, data: bytes) -> None:
        now = time.monotonic()
        self._count("/policy/action")
        try:
            self.core.on_action(cdr_stamp(data), now)
        except ValueError as exc:
            self.get_logger().warn(f"/policy/action: {exc}")

    def _on_status(self, msg: DiagnosticArray) -> None:
        self._count("/trial/status")
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        for st in msg.status:
            if st.name == "trial":
                line = self.core.on_status(stamp, st.message, {kv.key: kv.value for kv in st.values})
                if line:
                    self.progress(line)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self._count("/diagnostics")
        for st in msg.status:
            level = st.level if isinstance(st.level, int) else int.from_bytes(st.level, "little")
            self.core.on_diagnostics(st.name, level, st.message, {kv.key: kv.value for kv in st.values})
