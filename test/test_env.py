"""The minimal training env: gymnasium API shapes, determinism, trial rules (drop, timeout)."""

import functools

import numpy as np
import pytest

from dex_common.observations import obs_dim
from dex_common.trial import DROP_PENALTY
from dex_description.registry import get_hand
from dex_sim.env import (
    DexCubeEnv,
    DexCubeVectorEnv,
    TaskConfig,
    VecDexCubeEnv,
    value_obs_dim,
)

SPEC = get_hand("shadow")
NOOP = np.full(SPEC.n_actuators, 5)  # the middle of 11 bins = no change


@pytest.fixture(scope="module")
def env():
    e = DexCubeEnv("shadow", seed=0)
    yield e
    e.close()


def test_shapes_and_spaces(env):
    obs, info = env.reset(seed=1)
    assert obs.shape == (obs_dim(),) == (22,) and obs.dtype == np.float32
    assert info["value_obs"].shape == (value_obs_dim(SPEC),) == (22 + 4 + 4 + 24 + 24 + 6,)
    assert np.all(np.isfinite(info["value_obs"]))
    action = np.random.default_rng(0).integers(0, 11, SPEC.n_actuators)
    obs2, reward, terminated, truncated, info = env.step(action)
    assert obs2.shape == (22,) and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert info["state"] in ("running", "success", "dropped", "timeout", "completed")
    # The relative goal quaternion is a unit quaternion with w >= 0.
    rel = obs2[18:22]
    assert abs(np.linalg.norm(rel) - 1) < 1e-5 and rel[0] >= 0
    with pytest.raises(ValueError):
        env.step(np.full(SPEC.n_actuators, 11))  # bin out of range


def test_gymnasium_spaces(env):
    import gymnasium as gym

    assert isinstance(env, gym.Env)
    assert env.action_space.shape == (SPEC.n_actuators,)
    assert np.all(env.action_space.nvec == 11)
    assert env.observation_space.shape == (22,)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space.contains(env.action_space.sample())


def test_seed_determinism():
    a, b = DexCubeEnv(seed=0), DexCubeEnv(seed=99)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 11, size=(15, SPEC.n_actuators))
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    np.testing.assert_array_equal(oa, ob)
    for act in actions:
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_array_equal(ra[0], rb[0])
        assert ra[1] == rb[1] and ra[2] == rb[2]
    oc, _ = a.reset(seed=6)
    od, _ = a.reset(seed=5)
    assert not np.allclose(oc, od)  # another seed: other cube placement / goal
    np.testing.assert_array_equal(od, oa)


def test_drop_terminates_with_penalty(env):
    env.reset(seed=2)
    sim = env.sim
    a = sim.idx.cube_qpos
    sim.data.qpos[a:a + 3] = [0.3, 0.3, 0.0]  # off the hand, below the drop height
    sim.data.qvel[sim.idx.cube_qvel:sim.idx.cube_qvel + 6] = 0.0
    _, reward, terminated, truncated, info = env.step(NOOP)
    assert terminated and not truncated
    assert info["end_reason"] == "dropped" and info["state"] == "dropped"
    assert reward <= DROP_PENALTY + np.pi  # −20 plus a shaping term of at most pi


def test_noop_times_out_and_rewards_are_shaping(env):
    env.reset(seed=3)
    total, steps = 0.0, 0
    cfg = env.tracker.config
    while True:
        _, r, term, trunc, info = env.step(NOOP)
        total += r
        steps += 1
        if term or trunc:
            break
    assert trunc and not term and info["end_reason"] == "timeout"
    assert steps == cfg.steps_per_goal  # 8 s / 80 ms
    # Shaping telescopes: the sum equals d_first - d_last (small, the cube barely moves).
    assert abs(total) < 0.5


def test_vector_env_autoreset():
    v = VecDexCubeEnv(2, seed=3)
    obs, vobs = v.reset()
    assert obs.shape == (2, 22) and vobs.shape == (2, value_obs_dim(SPEC))
    e0 = v.envs[0].sim
    a = e0.idx.cube_qpos
    e0.data.qpos[a:a + 3] = [0.3, 0.3, 0.0]
    obs, vobs, rew, term, trunc, infos = v.step(np.full((2, SPEC.n_actuators), 5))
    assert term[0] and not term[1]
    assert infos[0]["final"] and "final_value_obs" in infos[0]
    assert rew[0] < -10
    # env 0 was reset: its cube is back above the palm.
    assert v.envs[0].sim.cube_pose()[0][2] > v.envs[0].tracker.config.drop_height
    v.close()


def test_vector_env_phases_match_envs_stepped_alone():
    """VecDexCubeEnv runs commands, physics and outcomes phase by phase across its envs; with
    full randomization that gives the same bits as stepping each env on its own."""
    task = TaskConfig(randomize=True, goal_timeout_s=1.0)  # episodes end along the way
    v = VecDexCubeEnv(3, seed=2, task=task)
    alone = [DexCubeEnv("shadow", seed=2 * 1000 + i, task=task) for i in range(3)]
    obs, vobs = v.reset()
    for i, e in enumerate(alone):
        o, info = e.reset()
        np.testing.assert_array_equal(obs[i], o)
        np.testing.assert_array_equal(vobs[i], info["value_obs"])
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(40):
        acts = rng.integers(0, 11, size=(3, SPEC.n_actuators))
        obs, vobs, rew, term, trunc, _ = v.step(acts)
        for i, e in enumerate(alone):
            o, r, te, tr, info = e.step(acts[i])
            assert (r, te, tr) == (rew[i], term[i], trunc[i])
            if te or tr:
                ends += 1
                o, info = e.reset()
            np.testing.assert_array_equal(obs[i], o)
            np.testing.assert_array_equal(vobs[i], info["value_obs"])
    assert ends >= 2  # auto-resets happened along the way
    v.close()
    for e in alone:
        e.close()


# Per-member ranges (as ADR hands out): effects on in one member are off or zero in another, so
# rows of one batch carry neutral values next to live ones.
MEMBER_RANGES = {
    "all": (True, [{}, {"obs_cube_dropout": (5.0, 0.4), "random_force_prob": (0.5, 0.5),
                        "backlash": (0.04, 0.05)},
                   {"action_noise_step": (0.0, 0.0), "random_force_prob": (1e-6, 1e-6),
                    "obs_cube_rot_noise_step": (0.0, 0.0)}]),
    # Member 0 ends up with no observation effect at all: its reading is the truth.
    "mixed_obs": ({"obs_cube_pos_noise_step", "obs_cube_dropout", "backlash", "action_delay"},
                  [{"obs_cube_pos_noise_step": (0.0, 0.0), "obs_cube_dropout": (0.0, 1.0)},
                   {"obs_cube_dropout": (4.0, 0.3)}, {"action_delay": (1.0, 1.0)}]),
}


@pytest.mark.parametrize("case", sorted(MEMBER_RANGES))
def test_vector_env_members_with_different_effects_match_envs_alone(case):
    randomize, ranges = MEMBER_RANGES[case]
    task = TaskConfig(randomize=randomize, goal_timeout_s=0.8)
    v = VecDexCubeEnv(3, seed=4, task=task, reset_hook=lambda i, _: {"ranges": ranges[i]})
    alone = [DexCubeEnv("shadow", seed=4 * 1000 + i, task=task) for i in range(3)]
    obs, vobs = v.reset()
    for i, e in enumerate(alone):
        o, info = e.reset(options={"ranges": ranges[i]})
        np.testing.assert_array_equal(obs[i], o)
    if case == "mixed_obs":
        assert v._batch.effects.obs_on == [False, True, True]
    rng = np.random.default_rng(5)
    frozen = ends = 0
    live, truth0, e1 = [False, False], True, v.envs[1]
    for _ in range(60):
        acts = rng.integers(0, 11, size=(3, SPEC.n_actuators))
        obs, vobs, rew, term, trunc, _ = v.step(acts)
        frozen += sum(x > 0 for x in v._batch.effects.drop_left)
        live[0] |= not np.array_equal(e1.sim.actuator_targets(), e1.decoder.targets)
        live[1] |= not np.array_equal(obs[1], vobs[1][:22])
        truth0 &= np.array_equal(obs[0], vobs[0][:22])
        for i, e in enumerate(alone):
            o, r, te, tr, info = e.step(acts[i])
            assert (r, te, tr) == (rew[i], term[i], trunc[i])
            if te or tr:
                ends += 1
                o, info = e.reset(options={"ranges": ranges[i]})
            np.testing.assert_array_equal(obs[i], o)
            np.testing.assert_array_equal(vobs[i], info["value_obs"])
    assert ends >= 3 and frozen > 0  # resets and dropouts happened along the way
    # The effects are live where they are on: member 1's hand got other targets than its
    # decoder's and read a noisy cube; in "mixed_obs" member 0 always read the truth.
    assert live == [True, True] and (case != "mixed_obs" or truth0)
    with pytest.raises(RuntimeError, match="step the vector env"):
        v.envs[0].step(acts[0])
    v.close()
    for e in alone:
        e.close()


def test_task_config_defaults_and_errors():
    t = TaskConfig()
    assert (t.success_threshold, t.goals_per_trial, t.goal_timeout_s, t.bins, t.ema) == (
        0.4, 50, 8.0, 11, 0.3)
    assert t.discrete and not t.obs_cube_orientation and t.enabled == frozenset()
    env = DexCubeEnv(seed=0, task=TaskConfig(goal_timeout_s=0.8, success_threshold=0.2))
    assert env.tracker.config.steps_per_goal == 10 and env.tracker.config.success_threshold == 0.2
    # max_delta None = the hand's action scale, resolved in the env's own task and decoder
    assert t.max_delta is None and env.task.max_delta == env.decoder.max_delta == 0.3
    env.close()
    env = DexCubeEnv("leap", seed=0, task=TaskConfig(max_delta=0.2))
    assert env.task.max_delta == env.decoder.max_delta == 0.2
    env.close()
    assert DexCubeEnv("leap", seed=0).decoder.max_delta == 0.15
    for bad, field in ((dict(success_threshold=0.0), "success_threshold"),
                       (dict(goal_timeout_s=float("nan")), "goal_timeout_s"),
                       (dict(bins=1), "bins"), (dict(goals_per_trial=2.5), "goals_per_trial"),
                       (dict(ema=1.0), "ema"), (dict(max_delta=-0.1), "max_delta"),
                       (dict(randomize="physics!"), "randomize"),
                       (dict(randomize={"gravity"}), "gravity"),
                       (dict(ranges={"friction_scale": (1.0,)}), "friction_scale"),
                       (dict(obs_cube_orientation=1), "obs_cube_orientation")):
        with pytest.raises(ValueError, match=field):
            TaskConfig(**bad)


def test_default_task_matches_plain_env():
    """TaskConfig() (randomization off) is the pre-issue-3 env, bit for bit."""
    a, b = DexCubeEnv(seed=3), DexCubeEnv(seed=3, task=TaskConfig(randomize=False))
    oa, ia = a.reset(seed=4)
    ob, ib = b.reset(seed=4)
    np.testing.assert_array_equal(oa, ob)
    for _ in range(5):
        ra, rb = a.step(NOOP), b.step(NOOP)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[4]["value_obs"], rb[4]["value_obs"])
    assert a.sim.time_ns == b.sim.time_ns == a.sim.substeps * 6 * round(SPEC.timestep * 1e9)
    a.close()
    b.close()


def test_continuous_actions_and_cube_orientation_obs():
    env = DexCubeEnv(seed=0, task=TaskConfig(discrete=False, obs_cube_orientation=True))
    assert env.action_space.shape == (20,) and env.action_space.low.min() == -1.0
    obs, info = env.reset(seed=1)
    assert obs.shape == (26,) and env.observation_space.shape == (26,)
    np.testing.assert_allclose(obs[22:], env.sim.cube_pose()[1], atol=1e-6)
    assert info["value_obs"].shape == (value_obs_dim(SPEC),)
    t0 = env.decoder.targets
    a = np.zeros(20)
    a[3] = 1.0
    env.step(a)
    d = env.decoder.targets - t0
    # Full action = max_delta (Shadow's 0.3), EMA keeps (1 - 0.3) of it on the first step.
    assert d[3] == pytest.approx(0.3 * 0.7) and np.allclose(np.delete(d, 3), 0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        env.step(np.full(20, 1.5))
    env.close()


def test_gymnasium_sync_vector_env():
    import gymnasium as gym

    task = TaskConfig(randomize=True)
    v = gym.vector.SyncVectorEnv(
        [functools.partial(DexCubeEnv, seed=1000 + i, task=task) for i in range(2)])
    obs, info = v.reset(seed=5)
    assert obs.shape == (2, 22) and info["value_obs"].shape == (2, value_obs_dim(SPEC))
    obs, rew, term, trunc, info = v.step(np.full((2, SPEC.n_actuators), 5))
    assert obs.shape == (2, 22) and rew.shape == (2,) and np.all(np.isfinite(obs))
    assert not np.array_equal(obs[0], obs[1])
    v.close()


def test_gymnasium_vector_env_is_the_batched_step_with_same_step_autoreset():
    import gymnasium as gym

    task = TaskConfig(randomize=True, goal_timeout_s=0.8)
    v = DexCubeVectorEnv(3, seed=2, task=task)
    assert isinstance(v, gym.vector.VectorEnv)
    assert v.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert v.observation_space.shape == (3, 22) and v.action_space.shape == (3, SPEC.n_actuators)
    alone = [DexCubeEnv("shadow", seed=2 * 1000 + i, task=task) for i in range(3)]
    obs, info = v.reset(seed=11)
    for i, e in enumerate(alone):
        o, inf = e.reset(seed=11 + i)
        np.testing.assert_array_equal(obs[i], o)
        np.testing.assert_array_equal(info["value_obs"][i], inf["value_obs"])
        assert info["seed"][i] == 11 + i and info["_seed"][i]
    rng = np.random.default_rng(3)
    ends = 0
    for _ in range(30):
        acts = rng.integers(0, 11, size=(3, SPEC.n_actuators))
        obs, rew, term, trunc, info = v.step(acts)
        assert obs.shape == (3, 22) and rew.dtype == np.float32
        for i, e in enumerate(alone):
            o, r, te, tr, inf = e.step(acts[i])
            assert (r, te, tr) == (rew[i], term[i], trunc[i])
            if te or tr:  # same step: the final obs in infos, the new episode's obs returned
                ends += 1
                assert info["_final_obs"][i] and info["final_info"]["_end_reason"][i]
                np.testing.assert_array_equal(info["final_obs"][i], o)
                np.testing.assert_array_equal(info["final_info"]["value_obs"][i],
                                              inf["value_obs"])
                assert info["final_info"]["end_reason"][i] == inf["end_reason"]
                o, inf = e.reset()
            elif "final_obs" in info:
                assert not info["_final_obs"][i] and info["final_obs"][i] is None
            np.testing.assert_array_equal(obs[i], o)
            np.testing.assert_array_equal(info["value_obs"][i], inf["value_obs"])
    assert ends >= 3
    # reset(seed) reproduces; bad arguments are refused clearly.
    again = DexCubeVectorEnv(3, seed=2, task=task)
    np.testing.assert_array_equal(again.reset(seed=11)[0], v.reset(seed=11)[0])
    with pytest.raises(ValueError, match="options"):
        v.reset(options={"ranges": {}})
    with pytest.raises(ValueError, match="at least one env"):
        DexCubeVectorEnv(0)
    with pytest.raises(ValueError, match="need 3 seeds"):
        v.vec.reset(seed=[1, 2])
    for e in (v, again, *alone):
        e.close()


def test_fingertips_are_the_policy_nodes_forward_kinematics():
    """The env reads fingertips from the sim's sites; the policy node computes them from joint
    angles with HandKinematics. They must agree bit for bit, randomized model included."""
    env = DexCubeEnv("shadow", seed=2, task=TaskConfig(randomize=True))
    env.reset(seed=2)
    rng = np.random.default_rng(2)
    for _ in range(30):
        _, _, te, tr, _ = env.step(rng.integers(0, 11, SPEC.n_actuators))
        s = env.sim
        np.testing.assert_array_equal(s.fingertip_positions(),
                                      env.kin.fingertips(s.joint_positions()))
        if te or tr:
            env.reset()
    env.close()


def test_reset_without_mj_forward_changes_nothing(monkeypatch):
    """HandCubeSim.reset copies a home state and computes kinematics only; a from-scratch reset
    (mj_resetData, then the pose and targets written, then a full mj_forward) gives the same
    trajectory bit for bit (mj_step recomputes everything from the state)."""
    import mujoco

    from dex_sim import physics

    def run():
        env = DexCubeEnv("shadow", seed=0, task=TaskConfig(randomize=True))
        env.reset(seed=0)
        rng, out = np.random.default_rng(0), []
        for _ in range(60):
            o, _, te, tr, info = env.step(rng.integers(0, 11, SPEC.n_actuators))
            out.append(np.concatenate([o, info["value_obs"]]))
            if te or tr:
                env.reset()
        env.close()
        return np.array(out)

    a = run()
    plain = physics.HandCubeSim.reset

    def reset_with_forward(self, seed):
        rng = plain(self, seed)
        m, d, ix = self.model, self.data, self.idx
        qpos = d.qpos.copy()
        mujoco.mj_resetData(m, d)
        d.qpos[:] = qpos
        d.ctrl[ix.actuator_ids] = self._default_targets
        mujoco.mj_forward(m, d)
        return rng

    monkeypatch.setattr(physics.HandCubeSim, "reset", reset_with_forward)
    np.testing.assert_array_equal(a, run())


def test_step_and_guarded_step_targets_agree():
    """step() skips the CommandGuard (the decoder's targets are in range); step_targets() with
    the same targets goes through it and must land on the same state."""
    a, b = DexCubeEnv("shadow", seed=0), DexCubeEnv("shadow", seed=0)
    a.reset(seed=4)
    b.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(10):
        bins = rng.integers(0, 11, SPEC.n_actuators)
        oa, ra, *_ = a.step(bins)
        ob, rb, *_ = b.step_targets(b.decoder.decode(bins))
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
    # A bad command still meets the guard on step_targets: held, not applied.
    held = b.sim.actuator_targets()
    b.step_targets(np.full(SPEC.n_actuators, np.nan))
    np.testing.assert_array_equal(b.sim.actuator_targets(), held)
    a.close()
    b.close()


def test_bad_command_after_decoded_steps_holds_the_last_applied_one():
    """step() applies decoded targets without the guard, yet they become the command a rejected
    step_targets() holds; with randomization the NaN never reaches backlash / delay state."""
    rng = np.random.default_rng(1)
    env = DexCubeEnv("shadow", seed=1)
    env.reset(seed=1)
    for _ in range(5):
        env.step(rng.integers(0, 11, SPEC.n_actuators))
    applied = env.sim.actuator_targets()
    env.step_targets(np.full(SPEC.n_actuators, np.nan))
    np.testing.assert_array_equal(env.sim.actuator_targets(), applied)
    env.close()
    env = DexCubeEnv("shadow", seed=1, task=TaskConfig(randomize={"action"}))
    env.reset(seed=1)
    env.step(rng.integers(0, 11, SPEC.n_actuators))
    env.step_targets(np.full(SPEC.n_actuators, np.nan))
    env.step(rng.integers(0, 11, SPEC.n_actuators))
    fx = env._batch.effects  # the backlash and delay state the env steps with
    assert np.all(np.isfinite(fx.play)) and np.all(np.isfinite(fx.prev))
    assert np.all(np.isfinite(env.sim.actuator_targets()))
    env.close()
