"""Domain randomization (D Tables 1, 7, 8): every effect changes what it claims, within range;
switching off restores nominal; seeds are deterministic; bad configuration is refused."""

from pathlib import Path

import mujoco
import numpy as np
import pytest

import dex_sim.randomization as rz
from dex_common.observations import policy_observation
from dex_common.rotations import rotation_distance
from dex_sim.env import DexCubeEnv, TaskConfig
from dex_sim.physics import HandCubeSim
from dex_sim.randomization import (
    GROUPS,
    PARAMS,
    PER,
    RANDOMIZATIONS,
    DomainRandomizer,
    RandParam,
    check_ranges,
    markdown_doc,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim():
    # One per test: a randomizer takes the model's values at construction as nominal, so a
    # model another test randomized would shift this test's baseline.
    s = HandCubeSim(render=False)
    yield s
    s.close()


def fresh(sim, enabled, seed=0, ranges=None):
    """Reset ``sim`` and apply one draw of ``enabled`` (a new randomizer: nominal = the XML)."""
    r = DomainRandomizer(sim, enabled)
    # The XML's values, captured by this sim's first randomizer (a later one would take a
    # model an earlier call randomized as its nominal).
    r.nominal = sim.__dict__.setdefault("xml_nominal", r.nominal)
    r.restore_nominal()
    sim.reset(seed)
    draw = r.sample(np.random.default_rng(seed), ranges)
    r.apply(draw)
    return r, draw


def free_cube(sim):
    """Cube away from the hand, at rest: only gravity and applied forces act on it."""
    a, v = sim.idx.cube_qpos, sim.idx.cube_qvel
    sim.data.qpos[a:a + 3] = [0.3, 0.3, 0.3]
    sim.data.qvel[v:v + 6] = 0.0


def cube_accel(sim):
    v = sim.idx.cube_qvel
    v0 = sim.data.qvel[v:v + 3].copy()
    t0 = sim.data.time
    sim.step_control()
    return (sim.data.qvel[v:v + 3] - v0) / (sim.data.time - t0)


# ---- the table -----------------------------------------------------------------------------
def test_table_is_complete_and_doc_generated():
    names = [p.name for p in RANDOMIZATIONS]
    assert len(names) == len(set(names))
    for p in RANDOMIZATIONS:
        assert p.group in GROUPS and p.dist in ("uniform", "loguniform", "normal", "bernoulli",
                                               "event")
        assert p.source.startswith("D Table") and p.unit and p.doc
        if p.dist in ("uniform", "loguniform"):
            assert p.low <= p.high
            assert p.adr  # every interval may be widened by ADR
    # The Dactyl numbers (D Table 1/7/8).
    assert (PARAMS["cube_size_scale"].low, PARAMS["cube_size_scale"].high) == (0.95, 1.05)
    assert (PARAMS["joint_damping_scale"].dist, PARAMS["joint_damping_scale"].high) == (
        "loguniform", 3.0)
    assert PARAMS["obs_cube_pos_noise_episode"].high == 0.005
    assert (PARAMS["timing_rate"].low, PARAMS["timing_rate"].high) == (1250.0, 10000.0)
    doc = (ROOT / "docs" / "randomization.md").read_text()
    assert doc.strip() == markdown_doc().strip(), "regenerate: python -m dex_sim.randomization " \
        "--markdown > docs/randomization.md"
    assert all(f"`{n}`" in doc for n in names) and "ADR" in doc


def test_every_row_says_how_it_is_drawn_and_what_it_writes():
    for p in RANDOMIZATIONS:
        assert p.per in PER and callable(p.write), p.name
        assert (p.dist == "event") <= (p.per == "step"), p.name  # events are drawn per step
    r = DomainRandomizer(HandCubeSim("leap", render=False), True)
    assert set(r.nominal) == {f for p in RANDOMIZATIONS for f in p.fields}


def _armature(r, scale):
    r.views["dof_armature"][r.hand_dofs] *= scale


def test_a_randomization_is_added_by_writing_one_row(sim, monkeypatch):
    """A new row (a quantity nothing else mentions) is drawn, written, restored, validated and
    documented with no other change."""
    row = RandParam("armature_scale", "physics", "uniform", 2.0, 3.0, "x", "D Table 1 (test)",
                    "hand joint armature scale, per hand joint", True, 1.0, "hand_dof",
                    _armature, ("dof_armature",), nonneg=True)
    monkeypatch.setattr(rz, "RANDOMIZATIONS", (*RANDOMIZATIONS, row))
    monkeypatch.setattr(rz, "PARAMS", {**PARAMS, row.name: row})
    r = DomainRandomizer(sim, True)
    nominal = sim.model.dof_armature.copy()
    sim.reset(3)
    d = r.sample(np.random.default_rng(3))
    r.apply(d)
    scale = sim.model.dof_armature[r.hand_dofs] / nominal[r.hand_dofs]
    assert np.all((scale >= 2.0) & (scale <= 3.0)) and np.ptp(scale) > 0
    np.testing.assert_allclose(scale, d["armature_scale"])
    r.restore_nominal()
    np.testing.assert_array_equal(sim.model.dof_armature, nominal)
    with pytest.raises(ValueError, match="armature_scale"):
        check_ranges({"armature_scale": (-1.0, 2.0)})
    assert "`armature_scale`" in rz.markdown_table()


# ---- physics (D Table 1) -----------------------------------------------------------------
def test_physics_draws_within_range_and_written_to_model(sim):
    r = DomainRandomizer(sim, {"physics"})
    nom = r.nominal
    m = sim.model
    cb, cg, act = r.cube_body, r.cube_geoms, r.act_ids
    grav, lim = [], []
    for seed in range(40):
        sim.reset(seed)
        d = r.sample(np.random.default_rng(seed))
        r.apply(d)
        s, ms = d["cube_size_scale"], d["body_mass_scale"]
        assert 0.95 <= s <= 1.05
        np.testing.assert_allclose(m.geom_size[cg], nom["geom_size"][cg] * s)  # box + plates
        np.testing.assert_allclose(m.geom_pos[cg], nom["geom_pos"][cg] * s)
        assert np.all((ms >= 0.5) & (ms <= 1.5))
        i_cube = list(r.mass_bodies).index(cb)
        assert m.body_mass[cb] == pytest.approx(nom["body_mass"][cb] * s**3 * ms[i_cube])
        np.testing.assert_allclose(m.body_inertia[cb] / m.body_mass[cb],
                                   nom["body_inertia"][cb] / nom["body_mass"][cb] * s**2)
        fr = m.geom_friction[:, 0] / nom["geom_friction"][:, 0]
        assert np.all((fr >= 0.7) & (fr <= 1.3)) and np.ptp(fr) > 0.1
        dm = m.dof_damping[r.hand_dofs] / nom["dof_damping"][r.hand_dofs]
        assert np.all((dm >= 0.3) & (dm <= 3.0)) and np.ptp(dm) > 0.3
        kp = m.actuator_gainprm[act, 0] / nom["actuator_gainprm"][act, 0]
        assert np.all((kp >= 0.75) & (kp <= 1.5))
        np.testing.assert_array_equal(m.actuator_biasprm[act, 1], -m.actuator_gainprm[act, 0])
        jr = m.jnt_range[r.hand_joints]
        assert np.all(jr[:, 1] > jr[:, 0])
        lim.append(d["joint_limit_offset"])
        grav.append(m.opt.gravity - nom["opt.gravity"])
    assert np.std(np.concatenate(lim)) == pytest.approx(0.15, rel=0.15)
    assert np.std(grav) == pytest.approx(0.4, rel=0.25)
    # The cube falls with the randomized gravity vector.
    free_cube(sim)
    np.testing.assert_allclose(cube_accel(sim), m.opt.gravity, atol=1e-6)


@pytest.mark.parametrize("hand", ["shadow", "leap"])
def test_randomized_physics_leaves_a_resting_cube_at_rest(hand):
    """Hand holding still, cube settling onto the palm: no physics draw may fling it. (With the
    Newton line search capped at 10 iterations the elliptic-cone solve sometimes failed here
    and flung the cube: 0.16-2.4 m/s in 9 of 10 LEAP episodes under gravity tilt alone.)"""
    s = HandCubeSim(hand, render=False)
    r = DomainRandomizer(s, {"physics"})
    v = s.idx.cube_qvel
    for seed in range(12):
        s.reset(seed)
        r.apply(r.sample(np.random.default_rng(seed)))
        speed = 0.0
        for _ in range(3):
            s.step_control()
            speed = max(speed, float(np.linalg.norm(s.data.qvel[v:v + 3])))
        assert speed < 0.15, f"seed {seed}: cube reached {speed:.2f} m/s"
    s.close()


def test_cube_size_changes_resting_height(sim):
    """The randomized collision box (incl. its broad-phase bounds) is what collides: a cube
    dropped on the floor rests with its centre half an edge (x scale) above it."""
    z = {}
    floor = sim.model.geom_pos[mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")]
    for s in (0.95, 1.05):
        fresh(sim, {"cube_size_scale"}, seed=4, ranges={"cube_size_scale": (s, s)})
        a = sim.idx.cube_qpos
        sim.data.qpos[a:a + 7] = [0.3, 0.3, floor[2] + 0.04, 1, 0, 0, 0]
        for _ in range(8):
            sim.step_control()
        z[s] = sim.cube_pose()[0][2] - floor[2]
        assert z[s] == pytest.approx(0.0275 * s, abs=1.5e-3)  # minus soft-contact penetration
    # 2.75 mm taller, less the extra penetration of the heavier (x s^3) cube.
    assert z[1.05] - z[0.95] == pytest.approx(0.00275, abs=8e-4)


@pytest.mark.parametrize("name,lo,hi,faster,nstep,ratio", [
    ("actuator_kp_scale", 0.75, 1.5, "hi", 5, 1.8), ("joint_damping_scale", 0.3, 3.0, "lo", 40, 2.0)])
def test_gain_and_damping_change_step_response(sim, name, lo, hi, faster, nstep, ratio):
    """After a small step command on FFJ3 (0.05 rad: below the actuator's force limit, so the
    force is kp x error), higher kp / lower damping has moved further: at 10 ms the travel is
    ~proportional to kp (2x here); at 80 ms (at speed) damping 10x lower moves >2x further."""
    j = sim.spec.joint_names.index("FFJ3")
    a = sim.spec.actuator_names.index("FFJ3")
    moved = {}
    for tag, v in (("lo", lo), ("hi", hi)):
        fresh(sim, {name}, seed=1, ranges={name: (v, v)})
        q0 = sim.joint_positions()[j]
        t = sim.actuator_targets()
        t[a] += 0.05
        sim.set_targets(t)
        mujoco.mj_step(sim.model, sim.data, nstep=nstep)
        moved[tag] = sim.joint_positions()[j] - q0
    other = "lo" if faster == "hi" else "hi"
    assert moved[other] > 0
    assert moved[faster] > ratio * moved[other]


def test_disabling_restores_nominal(sim):
    r, _ = fresh(sim, True, seed=3)
    m = sim.model
    assert not np.array_equal(m.geom_friction, r.nominal["geom_friction"])
    r.restore_nominal()
    assert {"body_mass", "geom_friction", "actuator_gainprm", "opt.gravity"} <= set(r.nominal)
    for field in r.nominal:  # every array a row writes
        np.testing.assert_array_equal(rz.model_array(m, field), r.nominal[field], err_msg=field)
    # An empty set draws nothing and hooks are identities.
    r0, d0 = fresh(sim, set(), seed=3)
    assert all(v is None for v in d0.values.values())
    t = sim.actuator_targets()
    assert r0.act(t, np.random.default_rng(0)) is t
    assert r0.step_time(np.random.default_rng(0)) == 0.0


# ---- observation noise (D Table 7) ---------------------------------------------------------
def test_observation_noise_sigmas(sim):
    tips, pos = sim.fingertip_positions().copy(), sim.cube_pose()[0]
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    r, _ = fresh(sim, {"obs_fingertip_noise_step", "obs_cube_pos_noise_step",
                       "obs_cube_rot_noise_step"})
    rng = np.random.default_rng(0)
    dt, dp, ang = [], [], []
    for _ in range(3000):
        t, p, q = r.observe(tips, pos, quat, rng)
        dt.append(t - tips)
        dp.append(p - pos)
        ang.append(rotation_distance(q, quat))
    assert np.std(dt) == pytest.approx(0.002, rel=0.05)
    assert np.std(dp) == pytest.approx(0.001, rel=0.05)
    # angle ~ |N(0, 0.1)|: RMS = 0.1
    assert np.sqrt(np.mean(np.square(ang))) == pytest.approx(0.1, rel=0.05)
    # Per-episode (correlated): constant within an episode, sd across episodes.
    offs, angs = [], []
    for seed in range(300):
        r, _ = fresh(sim, {"obs_cube_pos_noise_episode", "obs_cube_rot_noise_episode"}, seed)
        _, p1, q1 = r.observe(tips, pos, quat, rng)
        _, p2, q2 = r.observe(tips, pos, quat, rng)
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(q1, q2)
        offs.append(p1 - pos)
        angs.append(rotation_distance(q1, quat))
    assert np.std(offs) == pytest.approx(0.005, rel=0.1)
    assert np.sqrt(np.mean(np.square(angs))) == pytest.approx(0.1, rel=0.1)


def test_dropout_freezes_cube_reading(sim):
    r, _ = fresh(sim, {"obs_cube_dropout"}, ranges={"obs_cube_dropout": (3.0, 1.0)})
    rng = np.random.default_rng(1)
    tips, quat = sim.fingertip_positions().copy(), np.array([1.0, 0, 0, 0])
    readings, frozen_runs, run = [], [], 1
    for k in range(400):
        pos = np.array([0.0, 0.0, 0.001 * k])  # the true pose moves every step
        _, p, q = r.observe(tips, pos, quat, rng)
        if readings and p[2] == readings[-1]:
            run += 1
        else:
            if run > 1:
                frozen_runs.append(run)
            run = 1
        readings.append(p[2])
    assert frozen_runs, "no dropout at 3 events/s"
    # 1 s / 80 ms = 12 control steps frozen (a new dropout may chain onto the end of one).
    assert min(frozen_runs) >= 12 and 12 in frozen_runs
    # Outside dropouts the reading follows the truth.
    assert sum(frozen_runs) < 400 * 0.95


# ---- actions (D Table 8) -------------------------------------------------------------------
def test_action_noise(sim):
    r, _ = fresh(sim, {"action_noise_step"})
    mid, half = r.act_mid, r.act_half
    rng = np.random.default_rng(0)
    dev = np.array([(r.act(mid, rng) - mid) / half for _ in range(2000)])
    assert np.std(dev) == pytest.approx(0.05, rel=0.05)
    corr, mult = [], []
    far = mid + 0.5 * half
    for seed in range(200):
        r, _ = fresh(sim, {"action_noise_episode", "action_noise_mult"}, seed)
        a1, a2 = r.act(mid, rng), r.act(mid, rng)
        np.testing.assert_array_equal(a1, a2)  # correlated: fixed for the episode
        corr.append((a1 - mid) / half)
        mult.append((r.act(far, rng) - a1) / (far - mid) - 1.0)
    assert np.std(corr) == pytest.approx(0.015, rel=0.1)
    assert np.std(mult) == pytest.approx(0.015, rel=0.1)


def test_action_delay_delays_motion(sim):
    j = sim.spec.joint_names.index("FFJ3")
    a = sim.spec.actuator_names.index("FFJ3")
    moved = {}
    for p in (0.0, 1.0):
        r, d = fresh(sim, {"action_delay"}, seed=2, ranges={"action_delay": (p, p)})
        assert d["action_delay"].all() == bool(p)
        t0 = sim.actuator_targets()
        t = t0.copy()
        t[a] += 0.6
        q0 = sim.joint_positions()[j]
        sim.set_targets(r.act(t, np.random.default_rng(0)))
        sim.step_control()
        moved[p] = sim.joint_positions()[j] - q0
        if p:  # the next step applies the delayed command
            np.testing.assert_allclose(r.act(t, np.random.default_rng(0)), t)
    assert moved[0.0] > 0.1 and abs(moved[1.0]) < 0.2 * moved[0.0]
    # Default p = 0.5 per actuator per episode.
    frac = np.mean([fresh(sim, {"action_delay"}, s)[1]["action_delay"] for s in range(50)])
    assert frac == pytest.approx(0.5, abs=0.06)


def test_backlash_dead_band(sim):
    r, _ = fresh(sim, {"backlash"}, ranges={"backlash": (0.02, 0.02)})
    rng = np.random.default_rng(0)
    t0 = r.act_mid.copy()
    r.effects.play[0] = t0  # start centred in the band
    assert np.array_equal(r.act(t0 + 0.009, rng), t0)  # inside the ±0.01 band: no motion
    np.testing.assert_allclose(r.act(t0 + 0.05, rng), t0 + 0.04)  # drags the band: lags 0.01
    # Reversal: the first 0.02 of travel back is lost.
    np.testing.assert_allclose(r.act(t0 + 0.035, rng), t0 + 0.04)
    np.testing.assert_allclose(r.act(t0 + 0.0, rng), t0 + 0.01)


# ---- unmodeled effects (D Table 8) ---------------------------------------------------------
def test_random_force_accelerates_cube(sim):
    r, _ = fresh(sim, {"random_force_prob"}, ranges={"random_force_prob": (1.0, 1.0)})
    rng = np.random.default_rng(0)
    mass = sim.model.body_mass[r.cube_body]
    forces = []
    for _ in range(60):
        free_cube(sim)
        r.perturb(rng)
        f = sim.data.xfrc_applied[r.cube_body, :3].copy()
        np.testing.assert_allclose(cube_accel(sim) - sim.model.opt.gravity, f / mass, atol=1e-6)
        forces.append(f / mass)
    assert np.std(forces) == pytest.approx(1.0, rel=0.2)  # sigma = 1 m/s^2 x mass
    # Decay 0.99 per control step between events.
    r2, _ = fresh(sim, {"random_force_prob"}, ranges={"random_force_prob": (1e-12, 1e-12)})
    r2.effects.force[0] = [1.0, 0.0, 0.0]
    r2.perturb(rng)
    assert sim.data.xfrc_applied[r2.cube_body, 0] == pytest.approx(0.99)
    probs = [fresh(sim, {"random_force_prob"}, s)[1]["random_force_prob"] for s in range(40)]
    assert min(probs) >= 0.001 and max(probs) <= 0.1 and np.median(probs) < 0.03  # log-uniform


def test_timing_jitter_stretches_control_steps(sim):
    r, d = fresh(sim, {"timing_rate"}, ranges={"timing_rate": (1250.0, 1250.0)})
    rng = np.random.default_rng(0)
    extra = [r.step_time(rng) for _ in range(20000)]
    assert np.mean(extra) == pytest.approx(1 / 1250, rel=0.03)  # Exp(lambda) mean
    assert np.std(extra) == pytest.approx(1 / 1250, rel=0.05)
    dts, phys = [], []
    for _ in range(100):
        t0, p0 = sim.time_ns, sim.data.time
        sim.step_control(r.step_time(rng))
        dts.append((sim.time_ns - t0) * 1e-9)
        phys.append(sim.data.time - p0)
    dts = np.array(dts)
    assert np.all(dts >= sim.control_period) and np.all(np.diff([0, *np.cumsum(dts)]) > 0)
    assert np.mean(dts) - sim.control_period == pytest.approx(1 / 1250, rel=0.35)
    np.testing.assert_allclose(phys, dts, atol=1e-9)  # physics really ran that long
    assert sim.model.opt.timestep == sim.spec.timestep  # restored after each step
    r.restore_nominal()
    t0 = sim.time_ns
    sim.step_control(r.step_time(rng))
    assert sim.time_ns - t0 == round(sim.control_period * 1e9)  # off: exact registry period


# ---- env integration -----------------------------------------------------------------------
def test_env_full_randomization_is_deterministic_and_value_obs_is_true():
    task = TaskConfig(randomize=True)
    actions = np.random.default_rng(0).integers(3, 8, size=(25, 20))

    def run(seed):
        env = DexCubeEnv(seed=seed, task=task)
        o, info = env.reset(seed=seed)
        obs, rew, vobs = [o], [], [info["value_obs"]]
        for a in actions:
            o, rw, te, tr, info = env.step(a)
            obs.append(o)
            rew.append(rw)
            vobs.append(info["value_obs"])
            if te or tr:
                o, info = env.reset()
        # The value obs is built from the TRUE state; the policy obs is noisy.
        s = env.sim
        true = policy_observation(env.kin.fingertips(s.joint_positions()), *s.cube_pose(),
                                  env.tracker.goal)
        np.testing.assert_array_equal(info["value_obs"][:22], true)
        assert np.abs(obs[-1] - true).max() > 1e-4
        env.close()
        return np.array(obs), np.array(rew), np.array(vobs)

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_env_reset_ranges_override_and_default_off():
    env = DexCubeEnv(seed=0, task=TaskConfig(randomize={"cube_size_scale"}))
    env.reset(seed=1, options={"ranges": {"cube_size_scale": (1.05, 1.05)}})
    r = env.randomizer
    g = r.cube_geoms
    np.testing.assert_allclose(env.sim.model.geom_size[g], r.nominal["geom_size"][g] * 1.05)
    env.set_ranges({"cube_size_scale": (0.95, 0.95)})
    env.reset(seed=1)
    np.testing.assert_allclose(env.sim.model.geom_size[g], r.nominal["geom_size"][g] * 0.95)
    with pytest.raises(ValueError, match="lo must be <= hi"):
        env.set_ranges({"cube_size_scale": (1.1, 0.9)})
    # Per-episode overrides as lists work too; a bad one is refused (also after a good one).
    env.reset(seed=1, options={"ranges": {"cube_size_scale": [1.02, 1.02]}})
    np.testing.assert_allclose(env.sim.model.geom_size[g], r.nominal["geom_size"][g] * 1.02)
    with pytest.raises(ValueError, match="lo must be <= hi"):
        env.reset(seed=1, options={"ranges": {"cube_size_scale": (1.1, 0.9)}})
    env.close()
    assert DexCubeEnv(seed=0).randomizer is None  # randomization is opt-in


def test_bad_configuration_is_refused(sim):
    with pytest.raises(ValueError, match="unknown randomization"):
        DomainRandomizer(sim, {"friction_scale", "wobble"})
    with pytest.raises(ValueError) as e:
        check_ranges({"friction_scale": (1.3, 0.7), "joint_damping_scale": (0.0, 2.0),
                      "nope": (0, 1), "action_delay": (1.5, 1.5),
                      "gravity_offset": (0.0, -1.0), "backlash": ("a", 1)})
    msg = str(e.value)
    for part in ("friction_scale", "joint_damping_scale", "'nope'", "action_delay",
                 "gravity_offset", "backlash"):
        assert part in msg
    with pytest.raises(ValueError) as e:
        TaskConfig(success_threshold=-1, goals_per_trial=0, bins=1, ema=1.0,
                   discrete="yes", randomize={"bogus"}, ranges={"friction_scale": (2, 1)})
    msg = str(e.value)
    for part in ("success_threshold", "goals_per_trial", "bins", "ema", "discrete", "bogus",
                 "friction_scale"):
        assert part in msg
