"""The LEAP hand profile (16 joints, 16 position actuators, 4 fingertips): registry facts, the
generated MJCF / URDF, the scene's physics and cameras, HandCubeSim and the observation layout.

The Shadow facts must not move when another hand is added: its facts hash is pinned here (the
shipped ONNX models record it and are refused on a mismatch).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import xml.etree.ElementTree as ET

import hand_checks
import mujoco
import numpy as np
import pytest

from dex_common.observations import (
    POLICY_OBS_LAYOUT,
    obs_dim,
    obs_slices,
    policy_obs_layout,
    policy_observation,
)
from dex_description import generate, paths
from dex_description.pose import default_actuator_targets, default_joint_positions
from dex_description.registry import get_hand

HAND = get_hand("leap")
NJ = HAND.n_joints
SHADOW_FACTS_HASH = "f666ceca5b706e01"


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(paths.scene_xml("leap")))


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return ET.parse(paths.urdf_path("leap")).getroot()


# ---- registry ----------------------------------------------------------------------------------
def test_shadow_facts_unchanged_and_leap_distinct() -> None:
    assert get_hand("shadow").facts_hash() == SHADOW_FACTS_HASH
    assert HAND.facts_hash() != SHADOW_FACTS_HASH
    assert get_hand("dex_leap") is HAND and HAND.name == "dex_leap"


def test_leap_registry_facts() -> None:
    fingers = [f"{f}_{j}" for f in ("if", "mf", "rf") for j in ("mcp", "rot", "pip", "dip")]
    assert HAND.joint_names == fingers + ["th_cmc", "th_axl", "th_mcp", "th_ipl"]
    assert HAND.actuator_names == HAND.joint_names  # one actuator per joint, same name
    assert not any(a.coupled for a in HAND.actuators)
    np.testing.assert_array_equal(HAND.actuation_matrix(), np.eye(16))
    lo, hi = HAND.joint_limits()
    np.testing.assert_array_equal(HAND.actuator_limits()[0], lo)
    np.testing.assert_array_equal(HAND.actuator_limits()[1], hi)
    assert HAND.joint("if_mcp").lower == pytest.approx(-0.314)
    assert HAND.joint("th_ipl").upper == pytest.approx(1.88)
    assert np.all(lo < 0) and np.all(hi > 0)  # zero is inside every LEAP range
    assert HAND.fingertip_sites == ("if_tip", "mf_tip", "rf_tip", "th_tip")
    assert HAND.camera_names == ["cam0", "cam1", "cam2"]
    for cam in HAND.cameras:
        assert cam.lookat == HAND.cube.rest_pos
    assert HAND.cube.size == pytest.approx(0.07)
    assert HAND.control_period == 0.08 and HAND.substeps == 40


# ---- generated files ---------------------------------------------------------------------------
def test_generated_files_are_up_to_date_for_both_hands() -> None:
    files = generate.outputs("leap")
    assert {p.name for p in files} == {"dex_leap_scene.xml", "dex_leap.urdf", "dex_leap.rviz"}
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name}: run `python -m dex_description.generate`"
    assert generate.main(["--check"]) == 0  # --check covers every hand profile
    assert set(generate.HAND_PROFILES) == {"shadow", "leap"}


def test_joints_and_actuators_match_registry(model: mujoco.MjModel) -> None:
    hinge = [i for i in range(model.njnt) if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert [model.joint(i).name for i in hinge] == HAND.joint_names
    assert model.njnt == NJ + 1 and model.ntendon == 0
    lo, hi = HAND.joint_limits()
    for k, i in enumerate(hinge):
        assert model.jnt_qposadr[i] == k and model.jnt_limited[i]
        np.testing.assert_allclose(model.jnt_range[i], [lo[k], hi[k]], atol=1e-9)
    assert [model.actuator(i).name for i in range(model.nu)] == HAND.actuator_names
    for i, act in enumerate(HAND.actuators):
        a = model.actuator(i)
        np.testing.assert_allclose(a.ctrlrange, [act.lower, act.upper], atol=1e-9)
        assert a.gainprm[0] > 0 and a.biasprm[1] == -a.gainprm[0]  # position servo
        assert a.trntype[0] == mujoco.mjtTrn.mjTRN_JOINT
        assert model.joint(a.trnid[0]).name == act.joints[0]
    assert model.opt.timestep == HAND.timestep


def test_fingertips_keyframe_and_cube(model: mujoco.MjModel) -> None:
    data = hand_checks.reset_home(model)
    for name in HAND.fingertip_sites:
        body = model.body(model.site(name).bodyid[0])
        assert body.name.endswith("_ds") and body.id not in model.body_parentid  # a leaf
    key = model.key("home")
    np.testing.assert_allclose(key.ctrl, default_actuator_targets(HAND))
    np.testing.assert_allclose(key.qpos[:NJ], default_joint_positions(HAND))
    np.testing.assert_allclose(key.qpos[NJ : NJ + 3], HAND.cube.rest_pos)
    assert np.any(key.ctrl != 0)  # a curled pose, not all zeros
    cube = model.body(HAND.cube.name)
    assert cube.mass[0] == pytest.approx(HAND.cube.mass)
    np.testing.assert_allclose(model.geom("cube_collision").size, [HAND.cube.size / 2] * 3)
    # Straight fingers: the index tip lies on the knuckle line plus the phalanges along +y.
    data.qpos[:NJ] = 0
    mujoco.mj_kinematics(model, data)
    tip = data.site_xpos[model.site("if_tip").id]
    expect = [
        generate.LEAP_FINGER_X["if"],
        generate.LEAP_KNUCKLE_Y + sum(generate.LEAP_FINGER),
        generate.LEAP_PALM_Z,
    ]
    np.testing.assert_allclose(tip, expect, atol=1e-6)
    # LEAP is larger than the Shadow hand: the middle finger reaches farther from the palm.
    assert tip[1] - data.xpos[model.body("palm").id][1] > 0.2


# ---- physics -----------------------------------------------------------------------------------
def test_cube_settles_on_palm_at_default_pose(model: mujoco.MjModel) -> None:
    data = hand_checks.reset_home(model)
    cid = model.body(HAND.cube.name).id
    palm_top = generate.LEAP_PALM_Z + generate.LEAP_PALM_HALF[2]
    hx, hy = generate.LEAP_PALM_HALF[:2]
    half = HAND.cube.size / 2
    start = data.xpos[cid].copy()
    for _ in range(round(2.0 / model.opt.timestep)):
        mujoco.mj_step(model, data)
        pos = data.xpos[cid]
        assert pos[2] > palm_top + 0.8 * half, f"cube sank/fell: z={pos[2]:.4f}"
        assert abs(pos[0]) < hx and 0.0 < pos[1] < 2 * hy, f"cube slid off: {pos}"
    assert np.all(np.isfinite(data.qpos))
    assert np.linalg.norm(data.xpos[cid] - start) < 0.01
    assert np.linalg.norm(data.cvel[cid]) < 1e-2  # at rest
    np.testing.assert_allclose(data.qpos[:NJ], default_joint_positions(HAND), atol=0.04)


def test_each_actuator_tracks_a_step_within_one_control_period(model: mujoco.MjModel) -> None:
    lo, hi = HAND.actuator_limits()
    for k, act in enumerate(HAND.actuators):
        data = hand_checks.reset_home(model)
        data.qpos[NJ + 2] = -0.2  # cube out of the way: we test the joint servos
        mujoco.mj_step(model, data, nstep=25)
        before = data.qpos[k]
        step = 0.3 if data.ctrl[k] + 0.3 <= hi[k] else -0.3
        target = float(np.clip(data.ctrl[k] + step, lo[k], hi[k]))
        data.ctrl[k] = target
        mujoco.mj_step(model, data, nstep=HAND.substeps)
        frac = (data.qpos[k] - before) / (target - before)
        assert 0.8 < frac < 1.25, f"{act.name}: reached {frac:.2f} of the step in 80 ms"


# ---- rendering ---------------------------------------------------------------------------------
def test_each_camera_sees_the_cube_but_not_the_goal(model: mujoco.MjModel) -> None:
    hand_checks.assert_cameras_see_cube_not_goal(model, hand_checks.reset_home(model), HAND, [0.0, 0.8, -0.24])


# ---- URDF --------------------------------------------------------------------------------------
def test_check_urdf_passes() -> None:
    hand_checks.assert_check_urdf_passes(paths.urdf_path("leap"), "dex_leap")


def test_urdf_matches_registry_and_ros2_control(urdf: ET.Element) -> None:
    assert urdf.get("name") == HAND.name
    hand_checks.assert_urdf_joint_limits_match(urdf, HAND)
    links = {lk.get("name") for lk in urdf.findall("link")}
    assert set(HAND.fingertip_sites) <= links and HAND.palm_body in links
    rc = urdf.find("ros2_control")
    assert rc is not None and rc.get("name") == HAND.name
    rcj = {j.get("name"): j for j in rc.findall("joint")}
    assert list(rcj) == HAND.joint_names
    cmd = [n for n, j in rcj.items() if j.find("command_interface") is not None]
    assert cmd == HAND.actuator_names and len(cmd) == 16
    for act in HAND.actuators:
        ci = rcj[act.name].find("command_interface")
        params = {p.get("name"): float(p.text) for p in ci.findall("param")}
        assert params == pytest.approx({"min": act.lower, "max": act.upper})
        assert rcj[act.name].findall("param") == []  # no coupling
    q0 = dict(zip(HAND.joint_names, default_joint_positions(HAND), strict=True))
    for name, j in rcj.items():
        init = j.find("state_interface/param[@name='initial_value']")
        assert float(init.text) == pytest.approx(q0[name], abs=1e-6)


def test_urdf_and_mjcf_kinematics_agree(model: mujoco.MjModel, urdf: ET.Element) -> None:
    hand_checks.assert_urdf_matches_mjcf(model, urdf, HAND, seed=1)


# ---- HandCubeSim and observations --------------------------------------------------------------
def test_hand_cube_sim_runs_leap() -> None:
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim("leap", render=False)
    sim.reset(7)
    t0 = sim.time
    assert sim.joint_positions().shape == (16,) and sim.fingertip_positions().shape == (4, 3)
    ok, applied, _ = sim.set_targets(default_actuator_targets(HAND))
    assert ok and applied.shape == (16,)
    assert not sim.set_targets(np.zeros(20))[0]  # Shadow-length command is rejected
    n = 13  # 1.04 s
    for _ in range(n):
        sim.step_control()
    assert sim.time == pytest.approx(t0 + n * HAND.control_period)
    pos, quat = sim.cube_pose()
    palm_top = generate.LEAP_PALM_Z + generate.LEAP_PALM_HALF[2]
    assert pos[2] > palm_top + 0.4 * HAND.cube.size  # still on the palm after 1 s
    obs = policy_observation(
        sim.fingertip_positions(), pos, quat, np.array([1.0, 0, 0, 0]), hand="leap"
    )
    assert obs.shape == (19,) and np.all(np.isfinite(obs))
    np.testing.assert_allclose(obs[obs_slices("leap")["cube_pos"]], pos, rtol=1e-6)


def test_observation_layout_depends_on_fingertip_count() -> None:
    assert policy_obs_layout("shadow") == POLICY_OBS_LAYOUT and obs_dim() == obs_dim("shadow") == 22
    assert policy_obs_layout(HAND) == [("fingertip_pos", 12), ("cube_pos", 3), ("rel_goal_quat", 4)]
    assert obs_dim("leap") == 19 and obs_slices("leap")["cube_pos"] == slice(12, 15)
    q = np.array([1.0, 0, 0, 0])
    with pytest.raises(ValueError, match="fingertips"):
        policy_observation(np.zeros((5, 3)), np.zeros(3), q, q, hand="leap")
    assert policy_observation(np.zeros((5, 3)), np.zeros(3), q, q).shape == (22,)
