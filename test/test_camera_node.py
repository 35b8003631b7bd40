"""The OpenCV camera node on a rendered video file, over real DDS; the crop/resize and the
intrinsics that go with it."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import rclpy
import rclpy.executors
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from dex_description.registry import get_hand
from dex_hardware.camera import FrameSource, camera_intrinsics, to_model_image

CAM = get_hand("leap").camera("cam1")
W, H = 640, 480


def _frame(k: int) -> np.ndarray:
    f = np.zeros((H, W, 3), np.uint8)
    f[:, : W // 2] = (0, 0, 200)  # BGR: left half red
    f[:, W // 2:] = (200, 0, 0)  # right half blue
    cv2.putText(f, str(k), (300, 240), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return f


def _video(path, n: int = 8) -> None:  # noqa: ANN001
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for k in range(n):
        out.write(_frame(k))
    out.release()


def test_model_image_is_the_registry_size_in_rgb() -> None:
    img = to_model_image(_frame(0), CAM)
    assert img.shape == (CAM.height, CAM.width, 3)
    assert img[CAM.height // 2, 2, 0] > 150 and img[CAM.height // 2, -3, 2] > 150  # R left, B right


def test_intrinsics_follow_the_crop_and_resize(tmp_path) -> None:
    K = np.array([[500.0, 0, 330], [0, 500.0, 235], [0, 0, 1]])
    calib = tmp_path / "c.json"
    calib.write_text(json.dumps({"camera": CAM.name, "width": W, "height": H, "K": K.tolist(),
                                 "dist": [0.1, -0.01, 0, 0, 0]}))
    K2, d = camera_intrinsics(CAM, calib)
    assert CAM.width == CAM.height  # square registry image: the centre 480 x 480 of the frame
    s = CAM.width / H
    assert np.allclose(K2, [[500 * s, 0, (330 - (W - H) / 2) * s], [0, 500 * s, 235 * s],
                            [0, 0, 1]])
    assert d == [0.1, -0.01, 0, 0, 0]
    K0, d0 = camera_intrinsics(CAM, None)
    assert np.allclose(K0, CAM.intrinsics()) and d0 == [0.0] * 5
    calib.write_text(json.dumps({"camera": "cam2", "width": W, "height": H, "K": K.tolist(),
                                 "dist": [0] * 5}))
    try:
        camera_intrinsics(CAM, calib)
    except ValueError as e:
        assert "calibrates camera 'cam2', not 'cam1'" in str(e)
    else:
        raise AssertionError("a calibration of another camera was accepted")


def test_file_source_loops_and_a_missing_source_reopens(tmp_path) -> None:
    _video(tmp_path / "v.mp4", n=3)
    src = FrameSource(str(tmp_path / "v.mp4"), loop=True)
    assert all(src.read() is not None for _ in range(7))
    gone = FrameSource(str(tmp_path / "none.mp4"))
    assert gone.read() is None and gone.read() is None


def test_camera_node_publishes_images_and_info(node_procs, dds_env, tmp_path) -> None:
    _video(tmp_path / "v.mp4")
    node_procs.start("cam", ["-m", "dex_hardware.camera_node", "--ros-args",
                             "-p", "camera:=cam1", "-p", f"source:={tmp_path / 'v.mp4'}",
                             "-p", "loop:=true", "-p", "rate_hz:=20.0"])
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(dds_env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("cam_test", context=ctx)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    imgs: list[Image] = []
    infos: list[CameraInfo] = []
    node.create_subscription(Image, "/cameras/cam1/image_raw", imgs.append, qos)
    node.create_subscription(CameraInfo, "/cameras/cam1/camera_info", infos.append, qos)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    end = time.monotonic() + 30
    while time.monotonic() < end and len(imgs) < 20:
        ex.spin_once(timeout_sec=0.05)
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    assert len(imgs) >= 20, node_procs.log("cam")  # looped past the 8-frame file
    im = imgs[-1]
    assert (im.height, im.width, im.encoding) == (CAM.height, CAM.width, "rgb8")
    assert im.header.frame_id == CAM.frame_id
    px = np.frombuffer(bytes(im.data), np.uint8).reshape(CAM.height, CAM.width, 3)
    assert px[CAM.height // 2, 2, 0] > 150  # red on the left
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in imgs]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert np.allclose(np.array(infos[-1].k).reshape(3, 3), CAM.intrinsics())


def test_camera_node_refuses_an_unknown_camera(node_procs) -> None:
    p = node_procs.start("cam_bad", ["-m", "dex_hardware.camera_node", "--ros-args",
                                     "-p", "camera:=cam7"])
    assert p.wait(timeout=30) == 2
    assert "cam7" in node_procs.log("cam_bad")
