"""dex_view: the running graph on a local Foxglove WebSocket (thin adapter over
:mod:`dex_bringup.live_view`). ``dex run --view`` starts it; open the Foxglove app, "Open
connection", ``ws://127.0.0.1:8765``, and load ``dex_bringup/foxglove/dex_layout.json``.

Parameters: ``hand``, ``host`` (127.0.0.1: this machine only; 0.0.0.0 exposes it), ``port``
(8765), ``images`` (true: the camera images too).
"""

from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from dex_bringup.live_view import LiveView
from dex_common.ros_util import IMAGE_QOS, STATE_QOS, DiagnosticsPublisher, run_node
from dex_description.registry import get_hand


def _ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _pose(msg: PoseStamped) -> tuple[list[float], list[float]]:
    p, q = msg.pose.position, msg.pose.orientation
    return [p.x, p.y, p.z], [q.w, q.x, q.y, q.z]


class ViewNode(Node):
    def __init__(self) -> None:
        super().__init__("dex_view")
        hand = str(self.declare_parameter("hand", "shadow").value)
        host = str(self.declare_parameter("host", "127.0.0.1").value)
        port = int(self.declare_parameter("port", 8765).value)
        images = bool(self.declare_parameter("images", True).value)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535; got {port}")
        spec = get_hand(hand)
        cams = list(spec.camera_names) if images else []
        try:
            self.view = LiveView(hand, host, port, cameras=cams)
        except Exception as e:  # port in use, bad host: a clear fatal line, exit code 2
            raise ValueError(f"cannot serve Foxglove on {host}:{port}: {e}") from e
        self.rejected = 0
        self.diag = DiagnosticsPublisher(self)
        self.create_subscription(JointState, "/joint_states", self._on_joints, STATE_QOS)
        self.create_subscription(PoseStamped, "/object/pose_gt",
                                 lambda m: self.view.on_cube(*_pose(m)), STATE_QOS)
        self.create_subscription(PoseStamped, "/object/pose",
                                 lambda m: self.view.on_estimate(*_pose(m)), STATE_QOS)
        self.create_subscription(PoseStamped, "/goal/pose",
                                 lambda m: self.view.on_goal(_pose(m)[1]), STATE_QOS)
        self.create_subscription(DiagnosticArray, "/trial/status", self._on_status, STATE_QOS)
        for cam in cams:
            self.create_subscription(Image, f"/cameras/{cam}/image_raw",
                                     lambda m, c=cam: self._on_image(c, m), IMAGE_QOS)
        url = f"ws://{host}:{self.view.port}"
        self.get_logger().info(f"Foxglove: open connection {url} (layout: "
                               f"dex_bringup/foxglove/dex_layout.json)")
        self.diag.report("dex_view", DiagnosticStatus.OK, f"serving {url}", {"url": url})

    def _on_joints(self, msg: JointState) -> None:
        if not self.view.on_joints(_ns(msg.header), list(msg.name), msg.position):
            self.rejected += 1
        self.diag.report("dex_view", DiagnosticStatus.OK if not self.rejected else
                         DiagnosticStatus.WARN,
                         f"{self.view.frames_sent} frames sent"
                         + (f", {self.rejected} joint states not this hand's or not finite"
                            if self.rejected else ""),
                         {"frames_sent": self.view.frames_sent, "rejected": self.rejected,
                          "url": self.view.url()}, immediate=False)

    def _on_status(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "trial":
                self.view.on_trial(_ns(msg.header), {kv.key: kv.value for kv in st.values})

    def _on_image(self, camera: str, msg: Image) -> None:
        self.view.on_image(camera, _ns(msg.header), msg.width, msg.height, msg.encoding,
                           msg.step, bytes(msg.data))

    def close(self) -> None:
        self.view.close()


def main(args: list[str] | None = None) -> int:
    return run_node(ViewNode, "dex_view", (ValueError, KeyError), ViewNode.close, args)


if __name__ == "__main__":
    sys.exit(main())
