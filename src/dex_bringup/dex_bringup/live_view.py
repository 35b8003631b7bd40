"""Live 3D view without a ROS distro: the running graph on a Foxglove WebSocket (no rclpy here).

:class:`LiveView` owns a Foxglove server (``foxglove-sdk``; 127.0.0.1:8765 by default) and turns
the graph's state into Foxglove's own schemas, which the Foxglove app shows without plugins:

| channel | schema | from |
|---|---|---|
| ``/scene`` | foxglove.SceneUpdate | the hand (every visual geom of the MuJoCo scene, posed by forward kinematics of /joint_states), the cube at its true pose, the estimated cube (translucent), the goal cube |
| ``/tf`` | foxglove.FrameTransforms | the URDF's links (``dex_description.frames``), ``cube``, ``cube_estimate``, ``goal`` |
| ``/cameras/<name>`` | foxglove.RawImage | the camera images (rgb8) |
| ``/trial`` | JSON | trial, goal number, successes, rotation error (deg), vision error (deg, mm): plot series |

Geoms become primitives: a box a cube, a sphere a sphere, a cylinder a cylinder and a capsule a
cylinder with a sphere at each end; the floor plane is left to the 3D panel's grid. The layout
``dex_bringup/foxglove/dex_layout.json`` (made by :func:`layout` with the SDK's layout API;
``python -m dex_bringup.live_view --layout`` rewrites it) arranges a 3D panel, the three images
and the plots.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from dex_common.rotations import rotation_distance
from dex_description.frames import LinkFrames
from dex_description.scene import PosedScene

TRIAL_SCHEMA = {
    "type": "object",
    "properties": {k: {"type": "number"} for k in (
        "trial", "goal", "successes", "rotation_error_deg", "vision_rotation_error_deg",
        "vision_position_error_mm")},
}
_BOX, _SPHERE, _CYLINDER, _CAPSULE, _PLANE = (int(t) for t in (
    mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CYLINDER,
    mujoco.mjtGeom.mjGEOM_CAPSULE, mujoco.mjtGeom.mjGEOM_PLANE))
ESTIMATE_ALPHA = 0.35


def _quat_xyzw(mat9: np.ndarray) -> tuple[float, float, float, float]:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, mat9)
    return float(q[1]), float(q[2]), float(q[3]), float(q[0])


class SceneGeoms(PosedScene):
    """The visual geoms of a hand scene, posed from a state (``pose``) and converted to
    Foxglove primitives, grouped by what they belong to (hand, cube, goal)."""

    def __init__(self, hand: str) -> None:
        super().__init__(hand)
        m = self.model
        cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self.spec.cube.name)
        goal_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "goal")
        self.groups: dict[str, list[int]] = {"hand": [], "cube": [], "goal": []}
        for g in range(m.ngeom):
            if m.geom_group[g] == 3 or m.geom_type[g] == _PLANE or m.geom_rgba[g, 3] == 0:
                continue  # collision-only, the floor, invisible
            b = int(m.geom_bodyid[g])
            key = "cube" if b == cube_body else "goal" if b == goal_body else "hand"
            self.groups[key].append(g)

    def primitives(self, group: str, alpha: float | None = None) -> dict[str, list]:
        """{"cubes": [...], "spheres": [...], "cylinders": [...]} of a group, world frame."""
        from foxglove.messages import (
            Color,
            CubePrimitive,
            CylinderPrimitive,
            Pose,
            Quaternion,
            SpherePrimitive,
            Vector3,
        )

        m, d = self.model, self.data
        out: dict[str, list] = {"cubes": [], "spheres": [], "cylinders": []}
        for g in self.groups[group]:
            r, gg, b, a = (float(v) for v in m.geom_rgba[g])
            color = Color(r=r, g=gg, b=b, a=alpha if alpha is not None else a)
            pos, mat = d.geom_xpos[g], d.geom_xmat[g]
            x, y, z, w = _quat_xyzw(mat)
            pose = Pose(position=Vector3(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])),
                        orientation=Quaternion(x=x, y=y, z=z, w=w))
            s = m.geom_size[g]
            t = int(m.geom_type[g])
            if t == _BOX:
                out["cubes"].append(CubePrimitive(pose=pose, size=Vector3(
                    x=2 * float(s[0]), y=2 * float(s[1]), z=2 * float(s[2])), color=color))
            elif t == _SPHERE:
                out["spheres"].append(SpherePrimitive(pose=pose, size=Vector3(
                    x=2 * float(s[0]), y=2 * float(s[0]), z=2 * float(s[0])), color=color))
            elif t in (_CYLINDER, _CAPSULE):
                rad, half = float(s[0]), float(s[1])
                out["cylinders"].append(CylinderPrimitive(
                    pose=pose, size=Vector3(x=2 * rad, y=2 * rad, z=2 * half),
                    bottom_scale=1.0, top_scale=1.0, color=color))
                if t == _CAPSULE:  # the two caps, at ±half along the geom's z
                    axis = mat.reshape(3, 3)[:, 2]
                    for sign in (-1.0, 1.0):
                        c = pos + sign * half * axis
                        out["spheres"].append(SpherePrimitive(
                            pose=Pose(position=Vector3(x=float(c[0]), y=float(c[1]),
                                                       z=float(c[2])),
                                      orientation=Quaternion(x=x, y=y, z=z, w=w)),
                            size=Vector3(x=2 * rad, y=2 * rad, z=2 * rad), color=color))
        return out


def _stamp(ns: int):
    from foxglove.messages import Timestamp

    return Timestamp(sec=ns // 1_000_000_000, nsec=ns % 1_000_000_000)


class LiveView:
    """A Foxglove WebSocket server fed with the graph's state (call the ``on_*`` methods)."""

    def __init__(self, hand: str, host: str = "127.0.0.1", port: int = 8765,
                 cameras: list[str] | None = None) -> None:
        import foxglove
        from foxglove.channels import FrameTransformsChannel, RawImageChannel, SceneUpdateChannel

        self.geoms = SceneGeoms(hand)
        self.frames = LinkFrames(hand)
        self.context = foxglove.Context()
        self.server = foxglove.start_server(name="dex", host=host, port=port,
                                            context=self.context)
        self.scene = SceneUpdateChannel("/scene", context=self.context)
        self.tf = FrameTransformsChannel("/tf", context=self.context)
        self.trial = foxglove.Channel("/trial", schema=TRIAL_SCHEMA, context=self.context)
        self.images = {c: RawImageChannel(f"/cameras/{c}", context=self.context)
                       for c in (cameras if cameras is not None else
                                 [c.name for c in self.geoms.spec.cameras])}
        self.joints: np.ndarray | None = None
        self.cube: tuple[np.ndarray, np.ndarray] | None = None
        self.estimate: tuple[np.ndarray, np.ndarray] | None = None
        self.goal: np.ndarray | None = None
        self.frames_sent = 0
        self._static_sent = False

    @property
    def port(self) -> int:
        return int(self.server.port)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    # ---- inputs ---------------------------------------------------------------------------------
    def on_joints(self, stamp_ns: int, names: list[str], positions: Any) -> bool:
        """A joint state (registry names and order); publishes the scene and frames. False (and
        nothing sent) for another hand's or a partial state."""
        if list(names) != list(self.geoms.spec.joint_names):
            return False
        q = np.asarray(positions, float)
        if not np.all(np.isfinite(q)):
            return False
        self.joints = q
        self._publish(stamp_ns)
        return True

    def on_cube(self, pos: Any, quat: Any) -> None:
        self.cube = (np.asarray(pos, float), np.asarray(quat, float))

    def on_estimate(self, pos: Any, quat: Any) -> None:
        self.estimate = (np.asarray(pos, float), np.asarray(quat, float))

    def on_goal(self, quat: Any) -> None:
        self.goal = np.asarray(quat, float)

    def on_trial(self, stamp_ns: int, values: dict[str, str]) -> None:
        """A /trial/status 'trial' entry: plot series (with the vision error when known)."""
        def num(key: str) -> float | None:
            try:
                return float(values[key])
            except (KeyError, ValueError):
                return None

        msg: dict[str, float] = {}
        for key, out in (("trial", "trial"), ("goal_index", "goal"), ("successes", "successes")):
            v = num(key)
            if v is not None:
                msg[out] = v
        err = num("rotation_error")
        if err is not None and math.isfinite(err):
            msg["rotation_error_deg"] = math.degrees(err)
        if self.cube is not None and self.estimate is not None:
            msg["vision_rotation_error_deg"] = math.degrees(
                rotation_distance(self.cube[1], self.estimate[1]))
            msg["vision_position_error_mm"] = 1000 * float(
                np.linalg.norm(self.cube[0] - self.estimate[0]))
        self.trial.log(msg, log_time=stamp_ns)

    def on_image(self, camera: str, stamp_ns: int, width: int, height: int, encoding: str,
                 step: int, data: bytes) -> None:
        from foxglove.messages import RawImage

        ch = self.images.get(camera)
        if ch is None:
            return
        ch.log(RawImage(timestamp=_stamp(stamp_ns), frame_id=f"{camera}_optical_frame",
                        width=width, height=height, encoding=encoding, step=step,
                        data=bytes(data)), log_time=stamp_ns)

    # ---- outputs --------------------------------------------------------------------------------
    def _publish(self, stamp_ns: int) -> None:
        from foxglove.messages import (
            FrameTransform,
            FrameTransforms,
            Quaternion,
            SceneEntity,
            SceneUpdate,
            Vector3,
        )

        g = self.geoms
        ts = _stamp(stamp_ns)
        entities = []
        g.pose(self.joints, self.cube, self.goal)
        for group in ("hand", "cube", "goal"):
            if group == "cube" and self.cube is None:
                continue
            entities.append(SceneEntity(timestamp=ts, frame_id="world", id=group,
                                        **g.primitives(group)))
        if self.estimate is not None:
            g.pose(None, self.estimate, None)
            entities.append(SceneEntity(timestamp=ts, frame_id="world", id="cube_estimate",
                                        **g.primitives("cube", ESTIMATE_ALPHA)))
        self.scene.log(SceneUpdate(entities=entities), log_time=stamp_ns)
        edges = self.frames.moving(self.joints)
        if not self._static_sent or self.frames_sent % 25 == 0:  # late joiners get them too
            edges = self.frames.static() + edges
            self._static_sent = True
        for name, pose in (("cube", self.cube), ("cube_estimate", self.estimate)):
            if pose is not None:
                edges.append(("world", name, tuple(pose[0]), tuple(pose[1])))
        self.tf.log(FrameTransforms(transforms=[
            FrameTransform(timestamp=ts, parent_frame_id=p, child_frame_id=c,
                           translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                           rotation=Quaternion(x=float(q[1]), y=float(q[2]), z=float(q[3]),
                                               w=float(q[0])))
            for p, c, t, q in edges]), log_time=stamp_ns)
        self.frames_sent += 1

    def close(self) -> None:
        self.server.stop()


LAYOUT_PATH = Path(__file__).resolve().parent / "foxglove" / "dex_layout.json"


def layout(cameras: list[str]) -> str:
    """The Foxglove layout (JSON) for the view: 3D scene | camera images over the plots."""
    from foxglove.layouts import (
        BaseRendererSceneUpdateTopicSettings,
        ImageConfig,
        ImageModeConfig,
        ImagePanel,
        Layout,
        PlotConfig,
        PlotPanel,
        PlotSeries,
        SplitContainer,
        SplitItem,
        ThreeDeeConfig,
        ThreeDeePanel,
    )

    three_d = ThreeDeePanel(title="hand and cube", config=ThreeDeeConfig(
        follow_tf="world", topics={"/scene": BaseRendererSceneUpdateTopicSettings(visible=True)}))
    images = [SplitItem(content=ImagePanel(title=c, config=ImageConfig(
        image_mode=ImageModeConfig(image_topic=f"/cameras/{c}")))) for c in cameras]

    def plot(title: str, fields: list[tuple[str, str]]) -> SplitItem:
        return SplitItem(content=PlotPanel(title=title, config=PlotConfig(paths=[
            PlotSeries(value=f"/trial.{f}", label=label, enabled=True,
                       timestamp_method="receiveTime") for f, label in fields])))

    right = SplitContainer(direction="column", items=[
        SplitItem(content=SplitContainer(direction="row", items=images)),
        plot("rotation error to the goal (deg)", [("rotation_error_deg", "rotation error")]),
        plot("successes", [("successes", "successes"), ("goal", "goal")]),
        plot("pose estimate error", [("vision_rotation_error_deg", "rotation (deg)"),
                                     ("vision_position_error_mm", "position (mm)")]),
    ])
    return Layout(content=SplitContainer(direction="row", items=[
        SplitItem(proportion=1.2, content=three_d), SplitItem(content=right)])).to_json()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write the Foxglove layout of the live view")
    p.add_argument("--layout", action="store_true", help=f"rewrite {LAYOUT_PATH}")
    a = p.parse_args(argv)
    if a.layout:
        LAYOUT_PATH.parent.mkdir(exist_ok=True)
        from dex_description.registry import HANDS

        cams = sorted({c for spec in HANDS.values() for c in spec.camera_names})
        LAYOUT_PATH.write_text(layout(cams) + "\n")
        print(f"wrote {LAYOUT_PATH}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
