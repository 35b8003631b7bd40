"""HandCubeSim + HandKinematics on the real MJCF and real MuJoCo (rendering via EGL)."""

import math
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dex_description.kinematics import HandKinematics  # noqa: E402
from dex_description.registry import get_hand  # noqa: E402
from dex_sim.physics import HandCubeSim  # noqa: E402

SPEC = get_hand("shadow")


@pytest.fixture(scope="module")
def sim() -> HandCubeSim:
    s = HandCubeSim("shadow", render=True)
    yield s
    s.close()


def _rollout(s: HandCubeSim, seed: int, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    s.reset(seed)
    lo, hi = SPEC.actuator_limits()
    s.set_targets(lo + 0.3 * (hi - lo))
    for _ in range(n):
        s.step_control()
    pos, quat = s.cube_pose()
    return np.concatenate([s.joint_positions(), s.joint_velocities(), pos, quat]), s.data.qpos


def test_shapes_and_registry_order(sim):
    sim.reset(0)
    assert sim.joint_positions().shape == (SPEC.n_joints,)
    assert sim.joint_velocities().shape == (SPEC.n_joints,)
    assert sim.fingertip_positions().shape == (len(SPEC.fingertip_sites), 3)
    assert sim.actuator_targets().shape == (SPEC.n_actuators,)
    # the cached address for registry joint i really is that joint's qpos slot
    for i, name in enumerate(SPEC.joint_names):
        assert sim.idx.qpos_adr[i] == sim.model.jnt_qposadr[sim.model.joint(name).id]
    for i, name in enumerate(SPEC.actuator_names):
        assert sim.idx.actuator_ids[i] == sim.model.actuator(name).id


def test_reset_is_deterministic_per_seed(sim):
    a, _ = _rollout(sim, 7)
    b, _ = _rollout(sim, 7)
    c, _ = _rollout(sim, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # a fresh instance gives the same trajectory too (no hidden global state)
    other = HandCubeSim("shadow", render=False)
    d, _ = _rollout(other, 7)
    np.testing.assert_array_equal(a, d)


def test_reset_places_cube_near_rest_pose(sim):
    for seed in range(5):
        sim.reset(seed)
        pos, quat = sim.cube_pose()
        assert np.linalg.norm(pos[:2] - np.asarray(SPEC.cube.rest_pos[:2])) < 0.01
        assert abs(np.linalg.norm(quat) - 1.0) < 1e-12
        np.testing.assert_allclose(sim.joint_velocities(), 0.0)


def test_time_is_monotonic_across_reset_and_steps_exact(sim):
    sim.reset(1)
    t0 = sim.time_ns
    sim.step_control()
    assert sim.time_ns - t0 == round(SPEC.control_period * 1e9)
    sim.step_control()
    t1 = sim.time_ns
    sim.reset(2)
    assert sim.time_ns > t1  # reset never rewinds the clock (the sim is the ROS clock)
    assert sim.data.time < 1e-9  # while MuJoCo's own time does restart
    assert sim.time == pytest.approx(sim.time_ns * 1e-9)


def test_cube_quaternion_unit_while_moving(sim):
    sim.reset(3)
    for _ in range(10):
        sim.step_control()
        pos, quat = sim.cube_pose()
        assert np.all(np.isfinite(pos))
        assert abs(np.linalg.norm(quat) - 1.0) < 1e-9
    lin, ang = sim.cube_velocity()
    assert lin.shape == (3,) and ang.shape == (3,)


def test_cube_pose_equals_numpy_reference_and_is_a_copy(sim):
    sim.reset(5)
    a = sim.idx.cube_qpos
    for _ in range(5):
        sim.step_control()
        q = sim.data.qpos[a + 3 : a + 7]
        pos, quat = sim.cube_pose()
        assert np.array_equal(pos, sim.data.qpos[a : a + 3])
        # The scalar fast path normalizes by sqrt(w^2 + x^2 + y^2 + z^2) summed in that order;
        # numpy's norm may sum differently (BLAS, numpy version): equal within an ulp.
        w, x, y, z = q.tolist()
        assert np.array_equal(quat, q / math.sqrt(w * w + x * x + y * y + z * z))
        np.testing.assert_array_max_ulp(quat, q / np.linalg.norm(q), maxulp=2)
    pos[:] = 9.0
    quat[:] = 9.0  # callers may mutate what they get: the sim state must not change
    assert not np.any(sim.data.qpos[a : a + 7] == 9.0)


def test_targets_clamped_to_actuator_limits(sim):
    sim.reset(0)
    lo, hi = SPEC.actuator_limits()
    for _ in range(10):  # a jump is rate-limited: repeated, the command reaches the limits
        ok, applied, reason = sim.set_targets(hi + 0.5)
    assert ok and "clamped" in reason and "rate-limited" not in reason
    np.testing.assert_array_equal(applied, hi)
    np.testing.assert_array_equal(sim.actuator_targets(), hi)
    ok, applied, reason = sim.set_targets(hi + 10.0)  # absurd: rejected, the hand holds
    assert not ok and "absurd" in reason
    np.testing.assert_array_equal(sim.actuator_targets(), hi)


@pytest.mark.parametrize("bad", ["nan", "short", "inf"])
def test_bad_targets_rejected_last_safe_held(sim, bad):
    sim.reset(0)
    lo, hi = SPEC.actuator_limits()
    good = lo + 0.25 * (hi - lo)
    for _ in range(10):  # reached through the guard's rate limit
        assert sim.set_targets(good)[0]
    cmd = good.copy()
    if bad == "nan":
        cmd[3] = np.nan
    elif bad == "inf":
        cmd[-1] = -np.inf
    else:
        cmd = cmd[:-1]
    ok, applied, reason = sim.set_targets(cmd)
    assert not ok and reason
    np.testing.assert_array_equal(applied, good)
    np.testing.assert_array_equal(sim.actuator_targets(), good)
    sim.step_control()
    assert np.all(np.isfinite(sim.joint_positions()))


def test_hand_tracks_targets(sim):
    """The position actuators actually move the hand towards the commanded targets."""
    sim.reset(0)
    lo, hi = SPEC.actuator_limits()
    target = lo + 0.6 * (hi - lo)
    for _ in range(15):  # re-sent every period, as a controller does (jumps are rate-limited)
        sim.set_targets(target)
        sim.step_control()
    actual = SPEC.actuation_matrix() @ sim.joint_positions()
    # most actuators get within 0.15 rad (contacts with the cube may block a few)
    assert np.mean(np.abs(actual - target) < 0.15) > 0.9


def test_render_shape_dtype_per_camera(sim):
    sim.reset(0)
    for cam in SPEC.cameras:
        img = sim.render(cam.name)
        assert img.shape == (cam.height, cam.width, 3)
        assert img.dtype == np.uint8
        assert img.std() > 5  # not a blank frame
    with pytest.raises(KeyError):
        sim.render("no_such_camera")


def test_render_disabled_never_touches_gl():
    s = HandCubeSim("shadow", render=False)
    with pytest.raises(RuntimeError):
        s.render(SPEC.cameras[0].name)
    assert not s._renderers


def test_fingertips_agree_with_kinematics(sim):
    kin = HandKinematics("shadow")
    sim.reset(4)
    lo, hi = SPEC.actuator_limits()
    rng = np.random.default_rng(0)
    for _ in range(5):
        sim.set_targets(rng.uniform(lo, hi))
        sim.step_control()
        np.testing.assert_allclose(
            kin.fingertips(sim.joint_positions()), sim.fingertip_positions(), atol=1e-9, rtol=0
        )
    with pytest.raises(ValueError):
        kin.fingertips(np.zeros(SPEC.n_joints - 1))
    with pytest.raises(ValueError):
        kin.fingertips(np.full(SPEC.n_joints, np.nan))
    with pytest.raises(ValueError, match="NaN/Inf"):
        kin.fingertips(np.r_[np.zeros(SPEC.n_joints - 1), np.inf])


def test_goal_marker(sim):
    q = np.array([0.0, 1.0, 0.0, 0.0])
    sim.set_goal_marker(q * 2.0)  # normalised
    np.testing.assert_allclose(sim.data.mocap_quat[sim.idx.goal_mocap], q)
    with pytest.raises(ValueError):
        sim.set_goal_marker([np.nan, 0, 0, 0])


def _contact_set(m, d) -> dict[tuple[str, str], tuple]:
    """Contacts by (geom, geom) name pair -> (count, dim, friction, solref, solimp)."""
    out: dict[tuple[str, str], list] = {}
    for c in d.contact[: d.ncon]:
        key = tuple(sorted(m.geom(int(g)).name for g in c.geom))
        out.setdefault(key, []).append(
            (c.dim, *np.round(c.friction, 9), *np.round(c.solref, 9), *np.round(c.solimp, 9)))
    return {k: (len(v), *sorted(v)[0]) for k, v in out.items()}


@pytest.mark.parametrize("hand", ["shadow", "leap"])
def test_explicit_contact_pairs_match_the_automatic_mechanism(hand):
    """The shipped scene lists every collision as a <pair> (no broad phase); on states from
    drops and random flailing, MuJoCo's contype/conaffinity mechanism on the same scene finds
    exactly the same contacts with the same parameters (so also: the hand never reaches the
    floor, which the pairs leave out). Friction randomization reaches the pairs too."""
    import mujoco

    from dex_description.generate import DESCRIPTIONS, build_mjcf
    from dex_sim.randomization import DomainRandomizer

    spec = get_hand(hand)
    s = HandCubeSim(hand, render=False)
    auto = mujoco.MjModel.from_xml_string(build_mjcf(spec, contacts="auto"))
    da = mujoco.MjData(auto)
    assert s.model.npair > len(spec.joint_names) // 2 and auto.npair == 0
    jac = {"sparse": mujoco.mjtJacobian.mjJAC_SPARSE, "dense": mujoco.mjtJacobian.mjJAC_DENSE}
    assert s.model.opt.jacobian == jac[DESCRIPTIONS[spec.name].jacobian]
    lo, hi = spec.actuator_limits()
    rng = np.random.default_rng(0)
    seen: set[tuple[str, str]] = set()
    for seed in range(6):
        s.reset(seed)
        for _ in range(12):
            s.set_targets(rng.uniform(lo, hi))
            s.step_control()
            da.qpos[:], da.qvel[:], da.ctrl[:] = s.data.qpos, s.data.qvel, s.data.ctrl
            mujoco.mj_forward(auto, da)
            mujoco.mj_forward(s.model, s.data)
            got, want = _contact_set(s.model, s.data), _contact_set(auto, da)
            assert got == want
            seen |= set(got)
    # A dropped cube landing on the floor.
    floor = s.model.geom("floor").pos[2]
    for d in (s.data, da):
        d.qpos[s.idx.cube_qpos + 2] = floor + 0.99 * spec.cube.size / 2
    mujoco.mj_forward(auto, da)
    mujoco.mj_forward(s.model, s.data)
    assert _contact_set(s.model, s.data) == _contact_set(auto, da)
    seen |= set(_contact_set(s.model, s.data))
    assert ("cube_collision", "floor") in seen and len(seen) >= 4  # fingers, palm, floor
    # Friction randomization: each pair's coefficients follow its geoms' (the larger one).
    r = DomainRandomizer(s, {"physics"})
    s.reset(0)
    r.apply(r.sample(np.random.default_rng(3)))
    m = s.model
    f = m.geom_friction
    want = np.maximum(f[m.pair_geom1], f[m.pair_geom2])[:, [0, 0, 1, 2, 2]]
    np.testing.assert_array_equal(m.pair_friction, want)
    assert np.ptp(m.pair_friction[:, 0]) > 0.1
    for _ in range(10):  # the cube settles onto the palm
        s.step_control()
        if s.data.ncon:
            break
    assert s.data.ncon > 0
    pairs = [(int(a), int(b)) for a, b in zip(m.pair_geom1, m.pair_geom2, strict=True)]
    for c in s.data.contact[: s.data.ncon]:  # what the solver uses
        p = pairs.index((int(c.geom[0]), int(c.geom[1])))
        np.testing.assert_allclose(c.friction, want[p])
    r.restore_nominal()
    np.testing.assert_array_equal(m.pair_friction[:, 0], 1.0)
