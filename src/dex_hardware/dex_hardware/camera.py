"""A real camera as the perception model sees it (pure: OpenCV + numpy, no rclpy).

``FrameSource`` reads a V4L2 device (``"0"`` or ``/dev/video0``), a video file or a stream URL
through OpenCV, reopening it when it fails (unplugged, end of a file when ``loop``).
``to_model_image`` turns a frame into what the registry camera renders (centre crop to its aspect
ratio, resize, RGB), and ``camera_intrinsics`` gives the K and distortion that go with that
image: from a ``dex-calibrate-camera`` JSON (scaled by the same crop and resize) or, without
one, the registry camera's own pinhole model.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from dex_description.registry import Camera


class FrameSource:
    def __init__(self, source: str, loop: bool = False) -> None:
        self.source = source
        self.loop = loop
        self.cap: cv2.VideoCapture | None = None
        self.frames = 0
        self.reopens = 0

    def _open(self) -> bool:
        src: int | str = int(self.source) if self.source.isdigit() else self.source
        self.cap = cv2.VideoCapture(src)
        return bool(self.cap.isOpened())

    def read(self) -> np.ndarray | None:
        """The next BGR frame, or None (the source is away; the next call tries to reopen)."""
        if self.cap is None and not self._open():
            self.cap = None
            return None
        ok, frame = self.cap.read()
        if not ok and self.loop and Path(self.source).is_file():
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = None
            self.reopens += 1
            return None
        self.frames += 1
        return frame

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _crop(w: int, h: int, cam: Camera) -> tuple[int, int, int, int]:
    """(x0, y0, cw, ch): the centred crop of a w x h frame with the camera's aspect ratio."""
    want = cam.width / cam.height
    if w / h > want:
        cw, ch = round(h * want), h
    else:
        cw, ch = w, round(w / want)
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def to_model_image(frame_bgr: np.ndarray, cam: Camera) -> np.ndarray:
    """A BGR frame of any size → RGB ``cam.height x cam.width`` (centre crop, area resize)."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"expected a colour frame (H, W, 3); got shape {frame_bgr.shape}")
    h, w = frame_bgr.shape[:2]
    x0, y0, cw, ch = _crop(w, h, cam)
    crop = frame_bgr[y0:y0 + ch, x0:x0 + cw]
    small = cv2.resize(crop, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def camera_intrinsics(cam: Camera, calibration: str | Path | None = None
                      ) -> tuple[np.ndarray, list[float]]:
    """(K 3x3, distortion) for the model-sized image: the calibration's, moved by the crop and
    scaled by the resize, or the registry camera's pinhole model (no distortion)."""
    if not calibration:
        return cam.intrinsics(), [0.0] * 5
    c = json.loads(Path(calibration).read_text())
    if c.get("camera") != cam.name:
        raise ValueError(f"{calibration} calibrates camera {c.get('camera')!r}, not {cam.name!r}")
    K = np.array(c["K"], float)
    x0, y0, cw, ch = _crop(int(c["width"]), int(c["height"]), cam)
    sx, sy = cam.width / cw, cam.height / ch
    K2 = K.copy()
    K2[0, 0], K2[0, 2] = K[0, 0] * sx, (K[0, 2] - x0) * sx
    K2[1, 1], K2[1, 2] = K[1, 1] * sy, (K[1, 2] - y0) * sy
    return K2, [float(v) for v in c["dist"]]
