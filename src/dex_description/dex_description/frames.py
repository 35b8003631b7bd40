"""The hand's TF frames: the URDF's links, posed from joint angles (no rclpy, no tf2).

``LinkFrames(hand).static()`` gives the transforms of the URDF's fixed joints (world → the
hand's base, each distal link → its fingertip link), read from the URDF itself;
``moving(joint_positions)`` gives parent → child of every moving joint for a state, computed by
MuJoCo forward kinematics on the hand's MJCF scene, whose bodies are the URDF's links (same
names, same frames: tested). Together they are what robot_state_publisher would publish, for a
stack with no ROS distro (the recorder writes them into each trial's bag as /tf_static and /tf).
A transform is ``(parent, child, (x, y, z), (w, x, y, z))``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from dex_description.paths import urdf_path
from dex_description.registry import get_hand
from dex_description.scene import SceneIndex, load_model

Transform = tuple[str, str, tuple[float, float, float], tuple[float, float, float, float]]


def rpy_to_quat(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """URDF ``rpy`` (fixed axes x, then y, then z) as a unit quaternion (w, x, y, z)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy)


def urdf_joints(text: str) -> list[dict]:
    """The URDF's joints: name, type, parent, child, origin xyz and rpy."""
    out = []
    for j in ET.fromstring(text).findall("joint"):  # not <ros2_control>'s <joint>s
        origin = j.find("origin")
        xyz = rpy = (0.0, 0.0, 0.0)
        if origin is not None:
            xyz = tuple(float(v) for v in origin.get("xyz", "0 0 0").split())
            rpy = tuple(float(v) for v in origin.get("rpy", "0 0 0").split())
        out.append({"name": j.get("name"), "type": j.get("type"),
                    "parent": j.find("parent").get("link"), "child": j.find("child").get("link"),
                    "xyz": xyz, "rpy": rpy})
    return out


class LinkFrames:
    """Static and per-state link transforms of one registry hand."""

    def __init__(self, hand: str) -> None:
        self.spec = get_hand(hand)
        self.urdf = urdf_path(hand).read_text()
        self.model = load_model(hand)
        self.data = mujoco.MjData(self.model)
        self.idx = SceneIndex(self.model, self.spec)
        joints = urdf_joints(self.urdf)
        self._static: list[Transform] = [
            (j["parent"], j["child"], j["xyz"], rpy_to_quat(*j["rpy"]))
            for j in joints if j["type"] == "fixed"]
        moving = [j for j in joints if j["type"] != "fixed"]
        ids = []
        for j in moving:
            for link in (j["parent"], j["child"]):
                if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, link) < 0:
                    raise KeyError(f"URDF link {link!r} has no MJCF body of that name")
            ids.append((mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, j["parent"]),
                        mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, j["child"])))
        self._moving = [(j["parent"], j["child"]) for j in moving]
        self._ids = np.array(ids, dtype=np.intp).reshape(-1, 2)

    @property
    def root(self) -> str:
        return "world"

    def static(self) -> list[Transform]:
        return list(self._static)

    def moving(self, joint_positions: np.ndarray) -> list[Transform]:
        """parent → child of each moving URDF joint at these joint angles (registry order)."""
        q = np.asarray(joint_positions, float)
        if q.shape != (self.spec.n_joints,):
            raise ValueError(f"need {self.spec.n_joints} joint positions; got shape {q.shape}")
        self.data.qpos[self.idx.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        out: list[Transform] = []
        inv = np.zeros(4)
        rel_q = np.zeros(4)
        for (parent, child), (pi, ci) in zip(self._moving, self._ids, strict=True):
            pp, pq = self.data.xpos[pi], self.data.xquat[pi]
            cp, cq = self.data.xpos[ci], self.data.xquat[ci]
            mujoco.mju_negQuat(inv, pq)
            mujoco.mju_mulQuat(rel_q, inv, cq)
            rel_p = np.zeros(3)
            mujoco.mju_rotVecQuat(rel_p, cp - pp, inv)
            out.append((parent, child, tuple(rel_p.tolist()), tuple(rel_q.tolist())))
        return out


def compose(transforms: list[Transform], frame: str, root: str = "world"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Pose (position, quaternion) of ``frame`` in ``root`` by chaining ``transforms`` (a tree
    given as parent → child edges), as a TF listener would."""
    by_child = {t[1]: t for t in transforms}
    pos, quat = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
    while frame != root:
        if frame not in by_child:
            raise KeyError(f"no transform reaches {frame!r} from {root!r}")
        parent, _, p, q = by_child[frame]
        # pose_in_parent ∘ pose_so_far
        rotated = np.zeros(3)
        mujoco.mju_rotVecQuat(rotated, pos, np.asarray(q, float))
        pos = rotated + np.asarray(p, float)
        nq = np.zeros(4)
        mujoco.mju_mulQuat(nq, np.asarray(q, float), quat)
        quat = nq
        frame = parent
    return pos, quat
