"""Checkerboard calibration on a synthetic video: a board rendered (by homography) through a
known pinhole camera at the registry pose of cam0, written as an MP4, read back and solved."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from dex_description.registry import get_hand
from dex_hardware.calibrate import _BOARD_TO_HAND_R, _optical_in_world, main

COLS, ROWS, SQ = 9, 6, 0.02
W, H = 640, 480
CAM = get_hand("leap").camera("cam0")
FY = 0.5 * H / math.tan(math.radians(CAM.fovy_deg) / 2)
K = np.array([[FY, 0, W / 2], [0, FY, H / 2], [0, 0, 1.0]])
BOARD_IN_HAND = np.array([-0.08, 0.105, 0.03])  # centred under the camera's look-at point


def _texture(ppm: float = 2000.0) -> tuple[np.ndarray, np.ndarray]:
    """Board image (white margin of one square) and the map texture pixel -> board metres."""
    x0, y0 = -2 * SQ, -2 * SQ
    w, h = int((COLS + 3) * SQ * ppm), int((ROWS + 3) * SQ * ppm)
    v, u = np.mgrid[0:h, 0:w]
    X, Y = u / ppm + x0, v / ppm + y0
    i, j = np.floor(X / SQ).astype(int), np.floor(Y / SQ).astype(int)
    inside = (i >= -1) & (i <= COLS - 1) & (j >= -1) & (j <= ROWS - 1)
    img = np.full((h, w), 255, np.uint8)
    img[inside & ((i + j) % 2 == 0)] = 0
    A = np.array([[1 / ppm, 0, x0], [0, 1 / ppm, y0], [0, 0, 1]])
    return img, A


def _render(tex: np.ndarray, A: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    Hm = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ A
    return cv2.warpPerspective(tex, Hm, (W, H), flags=cv2.INTER_AREA, borderValue=140)


def _video(path, rng) -> np.ndarray:  # noqa: ANN001
    """Tilted boards in front of the camera, then the board flat on the hand; returns the true
    camera-in-hand transform."""
    tex, A = _texture()
    center = np.array([(COLS - 1) * SQ / 2, (ROWS - 1) * SQ / 2, 0])
    frames = []
    for _ in range(14):
        rv = rng.normal(size=3)
        rv *= math.radians(rng.uniform(10, 35)) / np.linalg.norm(rv)
        R, _ = cv2.Rodrigues(rv)
        c = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.02, 0.02), rng.uniform(0.3, 0.4)])
        frames.append(_render(tex, A, R, c - R @ center))
    T_hc = np.eye(4)
    T_hc[:3, :3] = _optical_in_world(np.asarray(CAM.pos, float), np.asarray(CAM.lookat, float))
    T_hc[:3, 3] = CAM.pos
    T_hb = np.eye(4)
    T_hb[:3, :3], T_hb[:3, 3] = _BOARD_TO_HAND_R, BOARD_IN_HAND
    T_cb = np.linalg.inv(T_hc) @ T_hb
    frames.append(_render(tex, A, T_cb[:3, :3], T_cb[:3, 3]))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for f in frames:
        out.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    out.release()
    return T_hc


def test_calibration_recovers_intrinsics_and_the_camera_pose(tmp_path, capsys) -> None:
    T_true = _video(tmp_path / "board.mp4", np.random.default_rng(0))
    out = tmp_path / "cam0.json"
    assert main([str(tmp_path / "board.mp4"), "--camera", "cam0", "--board", "9x6",
                 "--square", "0.02", "--every", "1",
                 "--board-in-hand=" + ",".join(map(str, BOARD_IN_HAND)), "--out", str(out)]) == 0
    c = json.loads(out.read_text())
    assert c["frames_used"] >= 12 and c["reprojection_error_px"] < 1.0
    Kc = np.array(c["K"])
    assert abs(Kc[1, 1] / FY - 1) < 0.02 and abs(Kc[0, 2] - W / 2) < 5
    T = np.array(c["T_hand_camera"])
    assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) < 0.005
    assert abs(c["measured_fovy_deg"] - CAM.fovy_deg) < 0.5
    # Rendered at the registry pose: the report says the camera is where the model expects it.
    assert c["registry_position_error_m"] < 0.005 and c["registry_axis_error_deg"] < 1.0
    assert "reprojection error" in capsys.readouterr().out


def test_calibration_without_a_board_says_so(tmp_path, capsys) -> None:
    path = tmp_path / "empty.mp4"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    for _ in range(5):
        out.write(np.full((H, W, 3), 90, np.uint8))
    out.release()
    assert main([str(path), "--camera", "cam0", "--square", "0.02"]) == 2
    assert "found in 0 of 1 frames" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--board", "9by6"], ["--board-in-hand", "1,2"]])
def test_calibration_bad_arguments(tmp_path, bad, capsys) -> None:
    assert main([str(tmp_path), "--camera", "cam0", "--square", "0.02", *bad]) == 2
    assert capsys.readouterr().err
