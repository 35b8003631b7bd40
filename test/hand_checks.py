"""Checks every hand profile's generated description must pass (used by test_description.py for
the Shadow hand and test_leap.py for LEAP): cameras see the cube, check_urdf, URDF limits and
URDF forward kinematics against the MJCF."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import mujoco
import numpy as np
import pytest

from dex_description.registry import HandSpec


def reset_home(model: mujoco.MjModel) -> mujoco.MjData:
    """Fresh data at the scene's ``home`` keyframe, forward-computed."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    return data


def face_pixels(img: np.ndarray) -> int:
    """Pixels of any cube face colour: one or two channels high, the rest low."""
    f = img.astype(int)
    hi, lo = f > 110, f < 90
    n_hi = hi.sum(-1)
    return int(((n_hi >= 1) & (n_hi <= 2) & ((hi | lo).all(-1))).sum())


def assert_cameras_see_cube_not_goal(model: mujoco.MjModel, data: mujoco.MjData, hand: HandSpec,
                                     far_cube_pos: Sequence[float]) -> None:
    """Each camera shows the cube; with the cube moved to ``far_cube_pos`` (out of view), no
    camera shows face colours, so the goal marker (drawn: default geom groups) is out of view."""
    nj = hand.n_joints
    w = h = 64
    with mujoco.Renderer(model, h, w) as r:
        seen, empty = [], []
        for cam in hand.cameras:
            r.update_scene(data, camera=cam.name)
            seen.append(face_pixels(r.render()))
        data.qpos[nj : nj + 3] = far_cube_pos
        mujoco.mj_forward(model, data)
        for cam in hand.cameras:
            r.update_scene(data, camera=cam.name)
            empty.append(face_pixels(r.render()))
    assert min(seen) > 0.03 * w * h, f"cube face pixels per camera: {seen}"
    assert max(empty) < 0.005 * w * h, f"face-coloured pixels without the cube: {empty}"


def assert_check_urdf_passes(path: Path, robot_name: str) -> None:
    exe = shutil.which("check_urdf")
    assert exe, "check_urdf missing: apt-get install -y liburdfdom-tools"
    out = subprocess.run([exe, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully Parsed XML" in out.stdout and robot_name in out.stdout


def assert_urdf_joint_limits_match(urdf: ET.Element, hand: HandSpec) -> None:
    joints = {j.get("name"): j for j in urdf.findall("joint") if j.get("type") == "revolute"}
    assert sorted(joints) == sorted(hand.joint_names)
    for spec in hand.joints:
        lim = joints[spec.name].find("limit")
        assert float(lim.get("lower")) == pytest.approx(spec.lower)
        assert float(lim.get("upper")) == pytest.approx(spec.upper)


def urdf_fk(urdf: ET.Element, q: dict[str, float]) -> dict[str, np.ndarray]:
    """World position of every link origin (all joint origins have rpy 0, as generated)."""
    joints = {j.find("child").get("link"): j for j in urdf.findall("joint")}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {"world": (np.eye(3), np.zeros(3))}

    def pose(link: str) -> tuple[np.ndarray, np.ndarray]:
        if link not in cache:
            j = joints[link]
            assert j.find("origin").get("rpy") == "0 0 0"
            rp, tp = pose(j.find("parent").get("link"))
            t = tp + rp @ np.array([float(v) for v in j.find("origin").get("xyz").split()])
            r = rp
            if j.get("type") == "revolute":
                axis = np.array([float(v) for v in j.find("axis").get("xyz").split()])
                quat, mat = np.zeros(4), np.zeros(9)
                mujoco.mju_axisAngle2Quat(quat, axis, q[j.get("name")])
                mujoco.mju_quat2Mat(mat, quat)
                r = rp @ mat.reshape(3, 3)
            cache[link] = (r, t)
        return cache[link]

    return {link: pose(link)[1] for link in joints}


def assert_urdf_matches_mjcf(model: mujoco.MjModel, urdf: ET.Element, hand: HandSpec,
                             seed: int = 0, samples: int = 3) -> None:
    """At random joint angles, URDF FK puts every fingertip and joint body where MuJoCo does."""
    nj = hand.n_joints
    data = mujoco.MjData(model)
    lo, hi = hand.joint_limits()
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        q = rng.uniform(lo, hi)
        data.qpos[:nj] = q
        mujoco.mj_kinematics(model, data)
        fk = urdf_fk(urdf, dict(zip(hand.joint_names, q, strict=True)))
        for site in hand.fingertip_sites:
            np.testing.assert_allclose(fk[site], data.site_xpos[model.site(site).id], atol=1e-6)
        for jn in hand.joint_names:
            body = model.body(model.jnt_bodyid[model.joint(jn).id]).name
            np.testing.assert_allclose(fk[body], data.xpos[model.body(body).id], atol=1e-6)
