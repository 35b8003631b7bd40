"""Checkerboard calibration of a real camera (pure: OpenCV + numpy, no rclpy).

    dex-calibrate-camera VIDEO_OR_DIR --camera cam0 --board 9x6 --square 0.02 [--hand leap]
        [--board-in-hand=X,Y,Z] [--out calib/cam0.json]

Intrinsics (K, distortion) from every frame where the inner corners are found; the
camera-to-hand extrinsics from the frame where the board lies at its known place on the hand
(``--board-frame``: which frame; default the last one): the board's origin (first inner corner)
at ``--board-in-hand`` (m, hand/world frame), its x axis along the hand's +x, y along +y, flat
(z up: the board faces up). The result names the registry camera it is for and says how far the
measured pose and field of view are from the registry's, which the perception model was trained
with: move the camera until they agree, or retrain with the measured poses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from dex_description.registry import get_hand

# Hand/world-frame rotation of the board frame when it lies flat, face up (OpenCV's board z
# points into the board, i.e. down): x -> +x, y -> -y, z -> -z.
_BOARD_TO_HAND_R = np.diag([1.0, -1.0, -1.0])


@dataclass
class Calibration:
    camera: str
    width: int
    height: int
    K: list[list[float]]
    dist: list[float]
    reprojection_error_px: float
    frames_used: int
    T_hand_camera: list[list[float]]  # camera optical frame (x right, y down, z forward) in hand
    registry_position_error_m: float
    registry_axis_error_deg: float
    registry_fovy_deg: float
    measured_fovy_deg: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def board_points(cols: int, rows: int, square: float) -> np.ndarray:
    """Inner-corner coordinates in the board frame (z = 0), OpenCV's corner order."""
    g = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float32)
    return np.hstack([g * square, np.zeros((len(g), 1), np.float32)])


def read_frames(source: str | Path, every: int = 1) -> list[np.ndarray]:
    """Grey frames of a video file (every ``every``-th) or of the images in a folder."""
    p = Path(source)
    frames = []
    if p.is_dir():
        for f in sorted(p.iterdir()):
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is not None:
                frames.append(img)
    else:
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {p}")
        k = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            if k % every == 0:
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
            k += 1
        cap.release()
    if not frames:
        raise ValueError(f"no images in {p}")
    return frames


def _optical_in_world(cam_pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """Rotation (columns: optical x, y, z in world) of a camera at ``cam_pos`` looking at
    ``lookat`` with world z up (x right, y down on the image)."""
    z = lookat - cam_pos
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


def calibrate(frames: list[np.ndarray], cols: int, rows: int, square: float,
              camera: str, hand: str = "leap", board_in_hand: tuple[float, float, float] = (0, 0, 0),
              board_frame: int = -1) -> Calibration:
    spec = get_hand(hand)
    cam = spec.camera(camera)
    h, w = frames[0].shape[:2]
    obj = board_points(cols, rows, square)
    found: list[tuple[int, np.ndarray]] = []
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    for i, img in enumerate(frames):
        ok, corners = cv2.findChessboardCorners(img, (cols, rows))
        if ok:
            found.append((i, cv2.cornerSubPix(img, corners, (5, 5), (-1, -1), crit)))
    if len(found) < 3:
        raise ValueError(f"the {cols}x{rows} checkerboard was found in {len(found)} of "
                         f"{len(frames)} frames; need >= 3 (whole board in view, in focus)")
    err, K, dist, _, _ = cv2.calibrateCamera([obj] * len(found), [c for _, c in found],
                                             (w, h), None, None)
    want = board_frame % len(frames)
    at = [c for i, c in found if i == want]
    if not at:
        raise ValueError(f"board frame {want}: the board was not found in it")
    _, rvec, tvec = cv2.solvePnP(obj, at[0], K, dist)
    R_cb, _ = cv2.Rodrigues(rvec)  # board -> camera
    T_cb = np.eye(4)
    T_cb[:3, :3], T_cb[:3, 3] = R_cb, tvec.ravel()
    T_hb = np.eye(4)
    T_hb[:3, :3], T_hb[:3, 3] = _BOARD_TO_HAND_R, board_in_hand
    T_hc = T_hb @ np.linalg.inv(T_cb)
    reg_R = _optical_in_world(np.asarray(cam.pos, float), np.asarray(cam.lookat, float))
    pos_err = float(np.linalg.norm(T_hc[:3, 3] - np.asarray(cam.pos)))
    axis_err = math.degrees(math.acos(float(np.clip(T_hc[:3, 2] @ reg_R[:, 2], -1, 1))))
    fovy = math.degrees(2 * math.atan(0.5 * h / K[1, 1]))
    return Calibration(camera, w, h, K.tolist(), dist.ravel().tolist(), float(err), len(found),
                       T_hc.tolist(), pos_err, axis_err, cam.fovy_deg, fovy)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="video file or folder of images of the checkerboard")
    p.add_argument("--camera", required=True, help="registry camera name (cam0, cam1, cam2)")
    p.add_argument("--hand", default="leap")
    p.add_argument("--board", default="9x6", help="inner corners, COLSxROWS")
    p.add_argument("--square", type=float, required=True, help="square size, m")
    p.add_argument("--board-in-hand", default="0,0,0",
                   help="x,y,z (m, hand frame) of the board's first inner corner in the "
                        "extrinsics frame")
    p.add_argument("--board-frame", type=int, default=-1,
                   help="index of the frame where the board lies at --board-in-hand")
    p.add_argument("--every", type=int, default=5, help="use every N-th video frame")
    p.add_argument("--out", type=Path, help="write the calibration JSON here")
    a = p.parse_args(argv)
    try:
        cols, rows = (int(v) for v in a.board.lower().split("x"))
        at = tuple(float(v) for v in a.board_in_hand.split(","))
        if len(at) != 3:
            raise ValueError("--board-in-hand needs x,y,z")
        c = calibrate(read_frames(a.source, a.every), cols, rows, a.square, a.camera, a.hand,
                      at, a.board_frame)  # type: ignore[arg-type]
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"dex-calibrate-camera: {e}", file=sys.stderr)
        return 2
    print(f"{c.camera}: {c.frames_used} frames, reprojection error {c.reprojection_error_px:.3f}"
          f" px; fovy {c.measured_fovy_deg:.1f} deg (registry {c.registry_fovy_deg:.1f}); "
          f"pose vs registry: {1000 * c.registry_position_error_m:.1f} mm, "
          f"{c.registry_axis_error_deg:.1f} deg")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(c.to_json())
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
