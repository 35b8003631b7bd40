"""Video of a recorded trial: the hand and cube re-posed from the bag and rendered in MuJoCo.

Each frame is one /joint_states message: the hand's joints from it, the cube at the true pose of
that stamp (the estimate when the bag has no truth, as on a real hand), rendered from a viewer
camera; an inset shows the goal orientation from the same viewpoint, and the trial, sim time,
successes, goal number and rotation error are burnt in. Nothing is simulated: the pictures are
the recorded states (forward kinematics only), so a hardware bag renders the same way.

``write_video(record, "trial_000.mp4")`` (MPEG-4, plays in VLC/ffmpeg players; ``.webm`` gives
VP9, which browsers play: the report embeds that). ``contact_sheet`` tiles frames into one PNG.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import mujoco
import numpy as np

from dex_bringup.trial_record import TrialRecord
from dex_description.scene import PosedScene

FOURCC = {".mp4": "mp4v", ".webm": "VP90"}


class TrialRenderer:
    """Poses the registry scene of a hand from recorded states and renders a viewer camera."""

    def __init__(self, hand: str, width: int = 480, height: int = 360, inset: float = 0.3,
                 azimuth: float = 135.0, elevation: float = -35.0, distance: float = 0.38) -> None:
        self.scene = PosedScene(hand)
        self.spec, self.model, self.data = self.scene.spec, self.scene.model, self.scene.data
        self.width, self.height = width, height
        self.renderer = mujoco.Renderer(self.model, height=height, width=width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self.inset_size = max(32, int(inset * height))
        self.inset_renderer = mujoco.Renderer(self.model, height=self.inset_size,
                                              width=self.inset_size)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = self.spec.cube.rest_pos
        self.camera.azimuth, self.camera.elevation, self.camera.distance = (
            azimuth, elevation, distance)
        self.goal_camera = mujoco.MjvCamera()
        self.goal_camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        goal_body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "goal")
        mujoco.mj_forward(self.model, self.data)
        if goal_body >= 0:
            self.goal_camera.lookat[:] = self.data.xpos[goal_body]
        self.goal_camera.azimuth, self.goal_camera.elevation = azimuth, elevation
        self.goal_camera.distance = 5.0 * self.spec.cube.size
        self.goal_option = mujoco.MjvOption()  # the inset shows the goal marker (group 2) only
        for g in range(len(self.goal_option.geomgroup)):
            self.goal_option.geomgroup[g] = int(g == 2)
        # Opaque goal faces (translucent in the scene): same colours as the cube's, to compare.
        self.model.geom_rgba[self.model.geom_group == 2, 3] = 1.0
        self.has_goal = self.scene.idx.goal_mocap >= 0

    def pose(self, joints: np.ndarray, cube: tuple[np.ndarray, np.ndarray] | None,
             goal_quat: np.ndarray | None) -> None:
        """Set the scene to joint angles (registry order), the cube pose and the goal."""
        self.scene.pose(joints, cube, goal_quat)

    def render(self) -> np.ndarray:
        """RGB uint8 (H, W, 3): the viewer camera with the goal inset in the top-right corner."""
        self.renderer.update_scene(self.data, camera=self.camera)
        img = self.renderer.render().copy()
        if self.has_goal:
            self.inset_renderer.update_scene(self.data, camera=self.goal_camera,
                                              scene_option=self.goal_option)
            g = self.inset_renderer.render()
            s = self.inset_size
            img[4:4 + s, -s - 4:-4] = g
            cv2.rectangle(img, (self.width - s - 5, 3), (self.width - 4, s + 4), (255, 255, 255), 1)
            _text(img, "goal", (self.width - s, s), 0.45)
        return img

    def close(self) -> None:
        self.renderer.close()
        self.inset_renderer.close()


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5) -> None:
    """White text with a dark outline (readable on the floor and on the hand)."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def frames(record: TrialRecord, renderer: TrialRenderer, every: int = 1) -> Iterator[np.ndarray]:
    """One RGB frame per ``every``-th /joint_states message of the trial, annotated."""
    if record.hand is None:
        raise ValueError(f"{record.path}: /joint_states names match no registry hand "
                         f"({record.joint_names[:4]}...): cannot pose a model")
    truth = record.cube if len(record.cube) else record.estimate
    t0 = record.t_joints[0] if len(record.t_joints) else 0.0
    for i in range(0, len(record.t_joints), max(1, every)):
        t = float(record.t_joints[i])
        goal = record.goal.at(t)
        renderer.pose(record.joints[i], truth.at(t), None if goal is None else goal[1])
        img = renderer.render()
        k = int(np.searchsorted(record.t_status, t + 1e-9, side="right")) - 1
        succ = int(record.successes[k]) if k >= 0 else 0
        goal_no = int(record.goal_index[k]) + 1 if k >= 0 else 1
        err = float(record.rotation_error[k]) if k >= 0 else float("nan")
        _text(img, f"trial {record.trial}  t {t - t0:5.2f} s", (8, 20))
        _text(img, f"successes {succ}  goal {goal_no}", (8, 42))
        if np.isfinite(err):
            _text(img, f"rotation error {np.degrees(err):5.1f} deg", (8, 64))
        if i + every >= len(record.t_joints):
            _text(img, f"end: {record.end_reason}", (8, renderer.height - 12), 0.6)
        yield img


def playback_fps(record: TrialRecord) -> float:
    """Frames per second that play the trial in real time (one frame per control step)."""
    dt = np.diff(record.t_joints)
    return 1.0 / float(np.median(dt)) if len(dt) and np.median(dt) > 0 else 12.5


def write_video(record: TrialRecord, path: str | Path, renderer: TrialRenderer | None = None,
                fps: float | None = None) -> int:
    """Write the trial's video (container by extension: .mp4 or .webm); returns frames written.
    ``fps`` defaults to real time."""
    if record.hand is None:
        raise ValueError(f"{record.path}: /joint_states names match no registry hand")
    own = renderer is None
    r = renderer or TrialRenderer(record.hand.name)
    n = 0
    try:
        writer = open_writer(path, fps or playback_fps(record), (r.width, r.height))
        try:
            for img in frames(record, r):
                writer.write(img[:, :, ::-1])
                n += 1
        finally:
            writer.release()
    finally:
        if own:
            r.close()
    return n


def open_writer(path: str | Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV video writer for ``path`` (.mp4: MPEG-4 Part 2, .webm: VP9); RuntimeError if
    OpenCV cannot encode it. FFmpeg's note that WebM takes no codec tag (it writes VP9 all the
    same) is kept off the terminal: it reads like an error and is not one."""
    path = Path(path)
    if path.suffix not in FOURCC:
        raise ValueError(f"video path must end in {sorted(FOURCC)}; got {path}")
    fourcc = cv2.VideoWriter_fourcc(*FOURCC[path.suffix])
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could not open a {path.suffix} writer for {path}")
    return writer


def contact_sheet(images: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile RGB frames (same size) into one image, row by row."""
    if not images:
        raise ValueError("no frames for a contact sheet")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return sheet
