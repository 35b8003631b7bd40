"""The MPC as deployed (``MPCRuntime``): it rebuilds the physics state from what the policy node
receives (joint positions/velocities, the cube pose, stamps), estimates the cube's velocity from
consecutive poses, refuses bad input, and drives the env and the ROS graph through the same
action decoder as the LSTM policy."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, ros_env

from dex_common.rotations import axis_angle_to_quat, quat_mul
from dex_policy.controllers import MeasuredMPCController
from dex_policy.mpc import MPCConfig
from dex_policy.mpc_runtime import Measurement, MPCRuntime
from dex_sim.env import DexCubeEnv

SMALL = MPCConfig(n_samples=6, horizon=4, knots=2, threads=1)


def _measure(env: DexCubeEnv, velocities: bool = True) -> Measurement:
    sim = env.sim
    pos, quat = sim.cube_pose()
    return Measurement(sim.time, sim.joint_positions(), pos, quat,
                       sim.joint_velocities() if velocities else None)


def test_estimate_rebuilds_positions_and_measured_velocities() -> None:
    env = DexCubeEnv("leap")
    env.reset(seed=2)
    for _ in range(3):
        env.step(np.random.default_rng(0).integers(0, env.bins, env.n_actuators))
    rt = MPCRuntime("leap", SMALL)
    rt.reset(env.current_actuator_positions(), seed=2)
    d = rt.estimate(_measure(env))
    sim = env.sim
    np.testing.assert_allclose(d.qpos, sim.data.qpos, atol=1e-12)  # every coordinate is measured
    np.testing.assert_array_equal(d.qvel[sim.idx.qvel_adr], sim.joint_velocities())
    assert rt.stats["velocity_zeroed"] == 1  # no previous pose: the cube's velocity is zero
    np.testing.assert_array_equal(d.qvel[sim.idx.cube_qvel : sim.idx.cube_qvel + 6], 0.0)
    np.testing.assert_array_equal(d.ctrl[sim.idx.actuator_ids], rt.decoder.targets)


def test_cube_velocity_from_consecutive_poses() -> None:
    rt = MPCRuntime("leap", SMALL)
    rt.reset(np.zeros(rt.spec.n_actuators))
    q = np.zeros(rt.spec.n_joints)
    p0, q0 = np.array([0.0, 0.0, 0.1]), axis_angle_to_quat(np.array([0.3, -0.2, 0.5]), 0.7)
    v, w_body, dt = np.array([0.05, -0.02, 0.01]), np.array([1.5, -0.5, 2.0]), 0.08
    rt.estimate(Measurement(10.0, q, p0, q0))
    q1 = quat_mul(q0, axis_angle_to_quat(w_body, float(np.linalg.norm(w_body)) * dt))  # constant body-frame angular velocity
    d = rt.estimate(Measurement(10.0 + dt, q, p0 + v * dt, q1))
    a = rt.idx.cube_qvel
    np.testing.assert_allclose(d.qvel[a : a + 3], v, atol=1e-9)
    np.testing.assert_allclose(d.qvel[a + 3 : a + 6], w_body, atol=1e-9)  # MuJoCo: body frame
    assert rt.stats["velocity_from_positions"] == 1
    # A stamp that does not advance, or a long gap (a reset, an outage): no velocity guessed.
    for stamp in (10.0 + dt, 20.0):
        d = rt.estimate(Measurement(stamp, q, p0, q0))
        np.testing.assert_array_equal(d.qvel, 0.0)
    assert rt.stats["velocity_zeroed"] == 3


@pytest.mark.parametrize("bad", ["nan_joint", "short_joints", "zero_quat", "nan_stamp"])
def test_bad_measurements_are_refused(bad: str) -> None:
    rt = MPCRuntime("leap", SMALL)
    rt.reset(np.zeros(rt.spec.n_actuators))
    q, pos, quat, stamp = np.zeros(rt.spec.n_joints), np.array([0, 0, 0.1]), np.eye(4)[0], 1.0
    if bad == "nan_joint":
        q[3] = math.nan
    elif bad == "short_joints":
        q = q[:-1]
    elif bad == "zero_quat":
        quat = np.zeros(4)
    else:
        stamp = math.nan
    with pytest.raises(ValueError):
        rt.act_measured(Measurement(stamp, q, pos, quat), np.eye(4)[0])


def test_measured_mpc_drives_the_env_within_the_action_space() -> None:
    env = DexCubeEnv("leap")
    ctrl = MeasuredMPCController(env, SMALL)
    obs, _ = env.reset(seed=5)
    ctrl.reset(env)
    lo, hi = env.hand_spec.actuator_limits()
    for _ in range(4):
        obs, _, term, trunc, info = ctrl.step(env, obs)
        t = ctrl.runtime.targets
        assert np.all((t >= lo) & (t <= hi))
        assert ctrl.runtime.last_bins.shape == (env.n_actuators,)
        # The targets it sends are the decoder's: the env's own decoder agrees step by step.
        np.testing.assert_allclose(env.sim.actuator_targets(), t)
    assert ctrl.timing.count == 4 and ctrl.runtime.stats["plans"] == 4


def test_dex_run_with_the_mpc_controller(tmp_path: Path) -> None:
    out = tmp_path / "bags"
    p = subprocess.run(
        [sys.executable, "-m", "dex_bringup.cli", "run", "--hand", "leap", "--source", "state",
         "--controller", "mpc", "--trials", "1", "--seed", "3", "--record", str(out),
         "--goal-rule", "far90",
         "--param", "dex_trial.goal_timeout_s=0.8", "--param", "dex_policy.mpc_samples=8",
         "--param", "dex_policy.mpc_horizon=4"],
        cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=180,
    )
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert "controller: sampling MPC (8 samples, horizon 4" in log, log[-3000:]
    from dex_bringup.bagging import read_bag

    counts, outcome = read_bag(out / "trial_000")
    assert outcome["controller"] == "mpc" and outcome["seed"] == "3"
    assert outcome["goal_rule"] == "far90" and outcome["mode"] == "state"  # the trial node's
    assert len(outcome["policy_model_sha256"]) == 64
    assert counts["/policy/action"] >= 5  # it planned and commanded every step of the trial


def test_graph_names_the_controller_and_refuses_unknown_ones() -> None:
    from dex_bringup.graph import GraphError, hardware_graph, sim_graph

    pol = {n.name: n for n in sim_graph("leap", "realtime", "state", controller="mpc")}
    assert pol["dex_policy"].parameters["controller"] == "mpc"
    assert pol["dex_policy"].parameters["realtime"] is True  # overruns are reported
    hw = {n.name: n for n in hardware_graph("leap")}
    assert hw["dex_policy"].parameters["controller"] == "onnx"
    with pytest.raises(GraphError, match="unknown controller 'lqr'"):
        sim_graph("leap", controller="lqr")
