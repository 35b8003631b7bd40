"""ROS 2 node for one real camera (OpenCV): Image + CameraInfo under the registry camera's name.

    python -m dex_hardware.camera_node --ros-args -p camera:=cam0 -p source:=/dev/video0 \
        -p calibration:=calib/cam0.json

Publishes /cameras/NAME/image_raw (rgb8, the registry camera's resolution: the frame is centre
cropped to its aspect ratio and resized, as the perception model expects) and
/cameras/NAME/camera_info (K for that image from the calibration, else the registry's pinhole
model), both stamped when the frame was read, at ``rate_hz``. ``source``: a device index,
``/dev/videoN``, a video file (``loop`` replays it) or a stream URL. A source that stops giving
frames is a WARN on /diagnostics and is reopened; the node never exits for it.
"""

from __future__ import annotations

import sys

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from dex_common.ros_util import IMAGE_QOS, STATE_QOS, DiagnosticsPublisher, run_node
from dex_description.registry import get_hand
from dex_hardware.camera import FrameSource, camera_intrinsics, to_model_image


class CameraNode(Node):
    def __init__(self) -> None:
        super().__init__("camera")
        hand = self.declare_parameter("hand", "leap").value
        name = self.declare_parameter("camera", "cam0").value
        source = str(self.declare_parameter("source", "0").value)
        rate = float(self.declare_parameter("rate_hz", 30.0).value)
        loop = bool(self.declare_parameter("loop", False).value)
        calibration = self.declare_parameter("calibration", "").value
        if not rate > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate}")
        self.cam = get_hand(hand).camera(name)  # KeyError names the known cameras
        k, d = camera_intrinsics(self.cam, calibration or None)
        self.src = FrameSource(source, loop)
        self.diag = DiagnosticsPublisher(self, hardware_id=f"camera {name}@{source}")
        base = f"/cameras/{self.cam.name}"
        self.img_pub = self.create_publisher(Image, base + "/image_raw", IMAGE_QOS)
        self.info_pub = self.create_publisher(CameraInfo, base + "/camera_info", STATE_QOS)
        self.info = CameraInfo(height=self.cam.height, width=self.cam.width,
                               distortion_model="plumb_bob", d=d, k=k.reshape(-1).tolist(),
                               r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
                               p=[k[0, 0], 0.0, k[0, 2], 0.0, 0.0, k[1, 1], k[1, 2], 0.0,
                                  0.0, 0.0, 1.0, 0.0])
        self.info.header.frame_id = self.cam.frame_id
        self._ok: bool | None = None
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0 / rate, self._tick, clock=steady)
        self.get_logger().info(f"camera {self.cam.name} from {source} at {rate:g} Hz "
                               f"-> {self.cam.width}x{self.cam.height} rgb8"
                               f"{' (calibrated)' if calibration else ''}")

    def _tick(self) -> None:
        frame = self.src.read()
        if frame is None:
            if self._ok is not False:
                self.diag.report(self.cam.name, 1, f"no frame from {self.src.source} (unplugged "
                                 f"or at its end); reopening", {"reopens": self.src.reopens})
            self._ok = False
            return
        stamp = self.get_clock().now().to_msg()
        rgb = to_model_image(frame, self.cam)
        img = Image(height=self.cam.height, width=self.cam.width, encoding="rgb8",
                    is_bigendian=0, step=self.cam.width * 3, data=rgb.tobytes())
        img.header.stamp = stamp
        img.header.frame_id = self.cam.frame_id
        self.info.header.stamp = stamp
        self.img_pub.publish(img)
        self.info_pub.publish(self.info)
        if self._ok is not True:
            self.diag.report(self.cam.name, 0, f"streaming from {self.src.source}",
                             {"frames": self.src.frames})
            self._ok = True

    def close(self) -> None:
        self.src.close()


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, "camera", (ValueError, KeyError), CameraNode.close, args)


if __name__ == "__main__":
    sys.exit(main())
