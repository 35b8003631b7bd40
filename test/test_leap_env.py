"""LEAP end to end in the training stack: env (16 actuators, 19-float obs), full randomization,
a tiny PPO run on LEAP exported with a LEAP contract, and the runtime refusing it for Shadow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dex_common.contract import ModelContractError, read_contract
from dex_common.observations import obs_dim, obs_slices, policy_obs_layout
from dex_description.registry import get_hand
from dex_policy import train
from dex_policy.runtime import PolicyRuntime
from dex_sim.env import DexCubeEnv, TaskConfig, VecDexCubeEnv, value_obs_dim

LEAP = get_hand("leap")


def test_leap_env_reset_and_step() -> None:
    env = DexCubeEnv("leap", seed=0)
    assert "DexCubeEnv" in repr(env)  # hand spec no longer shadows gymnasium's Env.spec
    assert env.hand_spec is LEAP or env.hand_spec.name == LEAP.name
    assert env.n_actuators == LEAP.n_actuators == 16
    assert list(env.action_space.nvec) == [11] * 16
    assert env.obs_dim == obs_dim("leap") == 19 and env.observation_space.shape == (19,)
    assert env.obs_layout == policy_obs_layout("leap")
    obs, info = env.reset(seed=3)
    assert obs.shape == (19,) and info["value_obs"].shape == (value_obs_dim("leap"),)
    # The first 12 floats are the 4 fingertips (registry order) computed from the joint angles.
    tips = env.kin.fingertips(env.sim.joint_positions())
    np.testing.assert_allclose(obs[obs_slices("leap")["fingertip_pos"]], tips.reshape(-1),
                               atol=1e-6)
    np.testing.assert_allclose(obs[12:15], env.sim.cube_pose()[0], atol=1e-6)
    start = env.current_actuator_positions().copy()
    for _ in range(5):
        obs, r, term, trunc, info = env.step(np.full(16, 10))  # the largest positive delta
        assert obs.shape == (19,) and np.all(np.isfinite(obs)) and np.isfinite(r)
    assert not np.allclose(env.current_actuator_positions(), start)  # the hand moved
    with pytest.raises(ValueError):
        env.step(np.full(20, 5))  # a Shadow-sized action is refused
    env.close()


def test_leap_full_randomization() -> None:
    env = DexCubeEnv("leap", seed=1, task=TaskConfig(randomize=True))
    obs, _ = env.reset(seed=7)
    draw = env.last_draw
    assert np.asarray(draw["obs_fingertip_noise_episode"]).shape == (12,)  # 4 tips x 3
    assert np.asarray(draw["actuator_kp_scale"]).shape == (16,)
    rng = np.random.default_rng(0)
    noisy = 0
    for _ in range(15):
        obs, _, term, trunc, info = env.step(rng.integers(3, 8, 16))
        assert obs.shape == (19,) and np.all(np.isfinite(obs))
        noisy += not np.allclose(obs, info["value_obs"][:19])  # value obs holds the true state
        if term or trunc:
            break
    assert noisy > 0
    # reset(seed) reproduces the episode's draws.
    first = np.asarray(env.last_draw["obs_fingertip_noise_episode"]).copy()
    env.reset(seed=7)
    np.testing.assert_array_equal(env.last_draw["obs_fingertip_noise_episode"], first)
    env.close()
    venv = VecDexCubeEnv(2, hand="leap", seed=2, task=TaskConfig(randomize=True))
    o, v = venv.reset()
    assert o.shape == (2, 19) and v.shape == (2, value_obs_dim("leap"))
    venv.close()


@pytest.fixture(scope="module")
def leap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("leap")
    assert train.main(["--steps", "40", "--out", str(out), "--hand", "leap", "--envs", "2",
                       "--rollout", "10", "--dense", "32", "--lstm", "16", "--eval-trials",
                       "1", "--goal-timeout", "0.8", "--seed", "2"]) == 0
    return out / "policy_dex_leap.onnx"


def test_leap_ppo_export_contract(leap_model: Path) -> None:
    meta = read_contract(leap_model)
    assert meta["dex.hand"] == "dex_leap" == LEAP.name
    assert meta["dex.hand_facts_hash"] == LEAP.facts_hash()
    layout = json.loads(meta["dex.obs_layout"])
    assert layout == [[n, s] for n, s in policy_obs_layout("leap")]
    assert sum(s for _, s in layout) == 19
    assert json.loads(meta["dex.action"])["actuators"] == LEAP.actuator_names
    assert json.loads(meta["dex.eval"])["trials"] == 1


def test_leap_runtime_loads_and_shadow_refuses(leap_model: Path) -> None:
    rt = PolicyRuntime(leap_model, "leap")
    assert rt.obs_size == 19
    env = DexCubeEnv("leap", seed=0)
    obs, _ = env.reset(seed=1)
    rt.reset(env.current_actuator_positions())
    targets = rt.act(obs)
    assert targets.shape == (16,) and np.all(np.isfinite(targets))
    env.step_targets(targets)
    with pytest.raises(ValueError):
        rt.act(np.zeros(22, np.float32))
    env.close()
    with pytest.raises(ModelContractError) as e:
        PolicyRuntime(leap_model, "shadow")
    msg = str(e.value)
    assert "dex_leap" in msg and "obs layout" in msg and "hand facts hash" in msg
