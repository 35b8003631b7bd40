"""dex_description: the generated MJCF / URDF / RViz files agree with the registry and behave.

Checks names, order, limits and transmissions against the registry; that the committed files are
what the generator writes; that the MJCF and URDF kinematics agree; and the scene's physics
(cube rests on the palm, joints track steps within a control period) and rendering (each camera
sees the cube, not the goal marker).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import xml.etree.ElementTree as ET

import hand_checks
import mujoco
import numpy as np
import pytest
import yaml

from dex_description import generate, paths
from dex_description.pose import default_actuator_targets, default_joint_positions
from dex_description.registry import get_hand

HAND = get_hand("shadow")
NJ = HAND.n_joints


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(paths.scene_xml("shadow")))


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return ET.parse(paths.urdf_path("shadow")).getroot()


# ---- structure ---------------------------------------------------------------------------------
def test_generated_files_are_up_to_date() -> None:
    assert generate.main(["--check"]) == 0, "run `python -m dex_description.generate`"
    for hand in generate.HAND_PROFILES:  # every profile's files (Shadow and LEAP)
        for path, text in generate.outputs(hand).items():
            assert path.read_text() == text


def test_generator_check_detects_a_stale_file(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(generate, "PKG_DIR", tmp_path)
    assert generate.main(["--check"]) == 1  # nothing written yet
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    xml = tmp_path / "models" / f"{HAND.name}_scene.xml"
    xml.write_text(xml.read_text().replace('kp="2"', 'kp="3"', 1))
    assert generate.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert generate.main(["--check", "--hand", "leap"]) == 0  # only the Shadow file is stale
    (tmp_path / "models" / "dex_leap.urdf").unlink()
    assert generate.main(["--check", "--hand", "leap"]) == 1


def test_paths_point_at_files_and_explain_missing(monkeypatch, tmp_path) -> None:
    for p in (paths.scene_xml(), paths.urdf_path(), paths.rviz_config()):
        assert p.is_file()
    assert paths.rviz_config("leap").name == "dex_leap.rviz" and paths.rviz_config("leap").is_file()
    monkeypatch.setattr(paths, "_PKG_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="dex_description.generate"):
        paths.scene_xml()
    with pytest.raises(KeyError, match="unknown hand"):
        paths.urdf_path("nohand")


def test_joints_match_registry(model: mujoco.MjModel) -> None:
    hinge = [i for i in range(model.njnt) if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_HINGE]
    assert [model.joint(i).name for i in hinge] == HAND.joint_names
    lo, hi = HAND.joint_limits()
    for k, i in enumerate(hinge):
        assert model.jnt_qposadr[i] == k  # hand joints first, registry order: qpos[:24]
        assert model.jnt_limited[i]
        np.testing.assert_allclose(model.jnt_range[i], [lo[k], hi[k]], atol=1e-9)
    # The only other joint is the cube's free joint.
    assert model.njnt == NJ + 1
    free = model.joint("cube_free")
    assert free.type[0] == mujoco.mjtJoint.mjJNT_FREE
    assert model.body(free.bodyid[0]).name == HAND.cube.name


def test_actuators_match_registry(model: mujoco.MjModel) -> None:
    assert [model.actuator(i).name for i in range(model.nu)] == HAND.actuator_names
    for i, act in enumerate(HAND.actuators):
        a = model.actuator(i)
        np.testing.assert_allclose(a.ctrlrange, [act.lower, act.upper], atol=1e-9)
        assert model.actuator_ctrllimited[i] and model.actuator_forcelimited[i]
        assert a.gainprm[0] > 0 and a.biasprm[1] == -a.gainprm[0]  # position servo
        if act.coupled:
            assert a.trntype[0] == mujoco.mjtTrn.mjTRN_TENDON
            ten = model.tendon(a.trnid[0])
            assert ten.name == f"{act.name}_tendon"
            adr, num = model.tendon_adr[ten.id], model.tendon_num[ten.id]
            wrapped = [model.joint(model.wrap_objid[adr + w]).name for w in range(num)]
            assert sorted(wrapped) == sorted(act.joints)
            np.testing.assert_allclose(model.wrap_prm[adr : adr + num], 1.0)
            # Equal passive stiffness on J2 and J1 splits the commanded sum evenly.
            k = [model.jnt_stiffness[model.joint(j).id] for j in act.joints]
            assert k[0] == k[1] > 0
        else:
            assert a.trntype[0] == mujoco.mjtTrn.mjTRN_JOINT
            assert model.joint(a.trnid[0]).name == act.joints[0]


def test_fingertip_sites_at_distal_tips(model: mujoco.MjModel) -> None:
    data = hand_checks.reset_home(model)
    palm = data.xpos[model.body(HAND.palm_body).id]
    for name in HAND.fingertip_sites:
        sid = model.site(name).id
        body = model.body(model.site_bodyid[sid])
        assert body.name.endswith("distal")
        assert body.id not in model.body_parentid  # a leaf: the last link of the digit
        # The tip is farther from the palm than the distal link's own joint.
        tip = data.site_xpos[sid]
        assert np.linalg.norm(tip - palm) > np.linalg.norm(data.xpos[body.id] - palm)
    # Straight fingers: FF tip ~ knuckle (0.095) + phalanges (0.045+0.025+0.026) along +y.
    data.qpos[:NJ] = 0
    mujoco.mj_kinematics(model, data)
    ff = data.site_xpos[model.site(HAND.fingertip_sites[0]).id] - palm
    np.testing.assert_allclose(ff, [0.033, 0.191, 0.0], atol=1e-6)


def test_cameras_cube_goal_floor(model: mujoco.MjModel) -> None:
    data = hand_checks.reset_home(model)
    for cam in HAND.cameras:
        c = model.camera(cam.name)
        np.testing.assert_allclose(c.pos, cam.pos, atol=1e-6)
        x, y = np.array(cam.xyaxes()[:3]), np.array(cam.xyaxes()[3:])
        mat = data.cam_xmat[c.id].reshape(3, 3)
        np.testing.assert_allclose(mat[:, 0], x, atol=1e-5)
        np.testing.assert_allclose(mat[:, 1], y, atol=1e-5)
        assert model.cam_fovy[c.id] == pytest.approx(cam.fovy_deg)
    cube = model.body(HAND.cube.name)
    assert cube.mass[0] == pytest.approx(HAND.cube.mass)
    np.testing.assert_allclose(data.xpos[cube.id], HAND.cube.rest_pos, atol=1e-9)
    col = model.geom("cube_collision")
    np.testing.assert_allclose(col.size, [HAND.cube.size / 2] * 3)
    goal = model.body("goal")
    assert goal.mocapid[0] >= 0
    goal_geoms = [i for i in range(model.ngeom) if model.geom_bodyid[i] == goal.id]
    assert len(goal_geoms) == 7
    for i in goal_geoms:
        assert model.geom_contype[i] == 0 and model.geom_conaffinity[i] == 0
        assert model.geom_group[i] == 2 and model.geom_rgba[i][3] < 1
    assert model.opt.timestep == HAND.timestep
    assert model.geom("floor").pos[2] < HAND.cube.rest_pos[2] - 0.2


def test_keyframe_is_the_default_pose(model: mujoco.MjModel) -> None:
    key = model.key("home")
    np.testing.assert_allclose(key.ctrl, default_actuator_targets(HAND))
    np.testing.assert_allclose(key.qpos[:NJ], default_joint_positions(HAND))
    # The joint split agrees with the actuators: A @ q == targets.
    np.testing.assert_allclose(
        HAND.actuation_matrix() @ default_joint_positions(HAND), default_actuator_targets(HAND)
    )
    np.testing.assert_allclose(key.qpos[NJ : NJ + 3], HAND.cube.rest_pos)


# ---- physics -----------------------------------------------------------------------------------
def test_cube_settles_on_palm_at_default_pose(model: mujoco.MjModel) -> None:
    data = hand_checks.reset_home(model)
    cid = model.body(HAND.cube.name).id
    palm = model.body(HAND.palm_body).id
    palm_top = data.xpos[palm][2] + generate.PALM_HALF_T
    half = HAND.cube.size / 2
    start = data.xpos[cid].copy()
    for _ in range(round(2.0 / model.opt.timestep)):
        mujoco.mj_step(model, data)
        pos = data.xpos[cid]
        assert pos[2] > palm_top + 0.8 * half, f"cube sank/fell: z={pos[2]:.4f}"
        # Stays over the palm (palm spans x in [-0.042, 0.042], y in [0, 0.095] from WRJ1).
        rel = pos - data.xpos[palm]
        assert abs(rel[0]) < 0.042 and 0.0 < rel[1] < 0.095, f"cube slid off: {rel}"
    assert np.all(np.isfinite(data.qpos))
    assert np.linalg.norm(data.xpos[cid] - start) < 0.01  # settled where it was put
    assert np.linalg.norm(data.cvel[cid]) < 1e-2  # at rest
    # And the hand holds its default pose under the cube's weight.
    np.testing.assert_allclose(data.qpos[:NJ], default_joint_positions(HAND), atol=0.04)


def test_each_actuator_tracks_a_step_within_one_control_period(model: mujoco.MjModel) -> None:
    lo, hi = HAND.actuator_limits()
    amat = HAND.actuation_matrix()
    for k, act in enumerate(HAND.actuators):
        data = hand_checks.reset_home(model)
        data.qpos[NJ + 2] = -0.2  # cube out of the way: we test the joint servos
        for _ in range(25):
            mujoco.mj_step(model, data)
        before = amat[k] @ data.qpos[:NJ]
        step = 0.3 if data.ctrl[k] + 0.3 <= hi[k] else -0.3
        target = float(np.clip(data.ctrl[k] + step, lo[k], hi[k]))
        data.ctrl[k] = target
        for _ in range(HAND.substeps):
            mujoco.mj_step(model, data)
        frac = (amat[k] @ data.qpos[:NJ] - before) / (target - before)
        assert 0.8 < frac < 1.25, f"{act.name}: reached {frac:.2f} of the step in 80 ms"
        if act.coupled:  # the two coupled joints share the motion roughly evenly
            j2, j1 = (data.qpos[HAND.joint_names.index(j)] for j in act.joints)
            assert abs(j2 - j1) < 0.15 * target, f"{act.name}: J2={j2:.3f} J1={j1:.3f}"


# ---- rendering ---------------------------------------------------------------------------------
def test_each_camera_sees_the_cube_but_not_the_goal(model: mujoco.MjModel) -> None:
    hand_checks.assert_cameras_see_cube_not_goal(model, hand_checks.reset_home(model), HAND, [0.0, 0.6, -0.24])


# ---- URDF and RViz -----------------------------------------------------------------------------
def test_check_urdf_passes() -> None:
    hand_checks.assert_check_urdf_passes(paths.urdf_path(), HAND.name)


def test_urdf_joints_match_registry(urdf: ET.Element) -> None:
    hand_checks.assert_urdf_joint_limits_match(urdf, HAND)


def test_urdf_and_mjcf_kinematics_agree(model: mujoco.MjModel, urdf: ET.Element) -> None:
    hand_checks.assert_urdf_matches_mjcf(model, urdf, HAND, seed=0)


def test_ros2_control_tag(urdf: ET.Element) -> None:
    rc = urdf.find("ros2_control")
    assert rc is not None and rc.get("type") == "system" and rc.get("name") == HAND.name
    assert rc.find("hardware/plugin").text == "mock_components/GenericSystem"
    joints = {j.get("name"): j for j in rc.findall("joint")}
    assert list(joints) == HAND.joint_names
    for j in joints.values():
        assert [s.get("name") for s in j.findall("state_interface")] == ["position", "velocity"]
    cmd = [n for n, j in joints.items() if j.find("command_interface") is not None]
    assert len(cmd) == HAND.n_actuators == 20
    for act in HAND.actuators:
        j = joints[act.joints[0]]
        ci = j.find("command_interface")
        assert ci.get("name") == "position"
        params = {p.get("name"): p.text for p in ci.findall("param")}
        assert float(params["min"]) == pytest.approx(act.lower)
        assert float(params["max"]) == pytest.approx(act.upper)
        jp = {p.get("name"): p.text for p in j.findall("param")}
        if act.coupled:
            assert jp == {"actuator": act.name, "coupling": "+".join(act.joints)}
            assert joints[act.joints[1]].find("command_interface") is None
        else:
            assert jp == {}


def test_rviz_config() -> None:
    cfg = yaml.safe_load(paths.rviz_config().read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "world"
    by_class: dict[str, list[str]] = {}
    for d in vm["Displays"]:
        topic = d.get("Topic", d.get("Description Topic", {})).get("Value")
        by_class.setdefault(d["Class"].split("/")[-1], []).append(topic)
    assert by_class["RobotModel"] == ["/robot_description"]
    assert by_class["Image"] == [f"/cameras/{c}/image_raw" for c in HAND.camera_names]
    assert by_class["Marker"] == ["/goal/marker"]
    assert sorted(by_class["Pose"]) == ["/object/pose", "/object/pose_gt"]
