"""dex_bringup.benchmarks.ceiling: the same-work physics ceiling dex-sim-bench judges the env against. The replay
must be the env's physics exactly (else the ratio compares different work)."""

import mujoco
import numpy as np
import pytest

from dex_bringup.benchmarks.ceiling import record_env, replay_rate, same_work_ratio
from dex_sim.env import DexCubeEnv, TaskConfig

ACTIONS = np.random.default_rng(0).integers(0, 11, size=(64, 20))


def make_rand() -> DexCubeEnv:
    # Goals time out after 1 s (12-13 control steps): several episodes in a short run.
    return DexCubeEnv("shadow", seed=3, task=TaskConfig(randomize=True, goal_timeout_s=1.0))


def test_replay_is_the_env_physics_bit_for_bit():
    r = same_work_ratio(make_rand, ACTIONS, steps=40, seed=5, repeats=1)
    assert r["mj_step_calls"] == 40 and r["replay_exact"] == 40
    # Several episodes, each with its own randomized model, all replayed on the right one.
    assert r["models"] >= 2
    assert r["env_rate"] > 0 and r["ceiling_rate"] > 0
    assert r["ratio"] == pytest.approx(r["ratios"][0])  # one repeat: its own ratio
    assert 0 < r["cpu_ratio"] < 10


def test_replay_detects_other_physics():
    rec = record_env(make_rand, ACTIONS, steps=10, seed=5)
    assert replay_rate(rec)["exact"] == 10
    rec.states[4] = rec.states[4].copy()
    rec.states[4][5] += 1e-3  # one coordinate of qpos, before step 4
    rec.timesteps[7] *= 1.5  # step 7 on another timestep
    out = replay_rate(rec)
    assert out["exact"] == 8 and out["calls"] == 10


def test_recording_always_restores_mj_step():
    real = mujoco.mj_step

    class Broken(DexCubeEnv):
        def step(self, action):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        record_env(lambda: Broken("shadow", seed=0), ACTIONS, steps=3, seed=0)
    assert mujoco.mj_step is real
