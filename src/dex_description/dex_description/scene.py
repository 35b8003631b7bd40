"""The MuJoCo hand + cube scene of a hand: loading its MJCF and looking up, once, the ids and
addresses of what the registry names (joints, actuators, fingertip sites, cameras, the cube).

Used by the simulator (dex_sim), by forward kinematics and by the MPC controller: anything that
reads the model imports it from here, not from the simulator package.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from dex_description.paths import scene_xml
from dex_description.registry import HandSpec


class SceneIndex:
    """MuJoCo ids and addresses for one hand scene, in registry order (looked up once)."""

    def __init__(self, model: mujoco.MjModel, spec: HandSpec) -> None:
        def jid(name: str) -> int:
            i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if i < 0:
                raise KeyError(f"joint {name!r} (registry) is missing from the MJCF")
            return i

        def oid(kind: mujoco.mjtObj, name: str, what: str) -> int:
            i = mujoco.mj_name2id(model, kind, name)
            if i < 0:
                raise KeyError(f"{what} {name!r} (registry) is missing from the MJCF")
            return i

        joint_ids = [jid(n) for n in spec.joint_names]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in joint_ids], dtype=np.intp)
        self.qvel_adr = np.array([model.jnt_dofadr[j] for j in joint_ids], dtype=np.intp)
        self.actuator_ids = np.array(
            [oid(mujoco.mjtObj.mjOBJ_ACTUATOR, n, "actuator") for n in spec.actuator_names],
            dtype=np.intp,
        )
        self.site_ids = np.array(
            [oid(mujoco.mjtObj.mjOBJ_SITE, n, "site") for n in spec.fingertip_sites],
            dtype=np.intp,
        )
        self.camera_ids = {
            c.name: oid(mujoco.mjtObj.mjOBJ_CAMERA, c.name, "camera") for c in spec.cameras
        }
        cube_j = oid(mujoco.mjtObj.mjOBJ_JOINT, spec.cube.name + "_free", "cube joint")
        self.cube_qpos = int(model.jnt_qposadr[cube_j])
        self.cube_qvel = int(model.jnt_dofadr[cube_j])
        goal_b = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "goal")
        # The goal marker is optional for physics (a mocap body only for visualisation).
        self.goal_mocap = int(model.body_mocapid[goal_b]) if goal_b >= 0 else -1


def load_model(hand: str) -> mujoco.MjModel:
    path = scene_xml(hand)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"MJCF scene {path} not found; generate it with `python -m dex_description.generate`"
        )
    return mujoco.MjModel.from_xml_path(str(path))


class PosedScene:
    """A hand scene posed from a recorded or measured state, no physics: the joints, the cube
    and the goal marker set, then forward kinematics (for renderers and viewers)."""

    def __init__(self, hand: str) -> None:
        from dex_description.registry import get_hand

        self.spec = get_hand(hand)
        self.model = load_model(hand)
        self.data = mujoco.MjData(self.model)
        self.idx = SceneIndex(self.model, self.spec)

    def pose(self, joints: np.ndarray | None = None,
             cube: tuple[np.ndarray, np.ndarray] | None = None,
             goal_quat: np.ndarray | None = None) -> None:
        """Joint angles (registry order), the cube (position, quaternion w x y z), the goal
        marker's quaternion; each left as it was when None."""
        d = self.data
        if joints is not None:
            d.qpos[self.idx.qpos_adr] = joints
        if cube is not None:
            c = self.idx.cube_qpos
            d.qpos[c:c + 3] = cube[0]
            d.qpos[c + 3:c + 7] = cube[1]
        if goal_quat is not None and self.idx.goal_mocap >= 0:
            d.mocap_quat[self.idx.goal_mocap] = goal_quat
        mujoco.mj_kinematics(self.model, d)
