"""The sampling-MPC teacher: its model of the action decoder and of the physics is the env's,
it plans within the student's action space, and it turns the cube towards a goal where holding
still does not; the evaluator prints Table-3 results for every controller."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from dex_common.actions import ActionDecoder
from dex_common.rotations import axis_angle_to_quat, quat_mul, rotation_distance
from dex_policy import evaluate as ev
from dex_policy.controllers import HoldController, MPCController, bins_of
from dex_policy.mpc import (
    MPCConfig,
    SamplingPlanner,
    _interp_matrix,
    add_mpc_options,
    mpc_config_of,
)
from dex_sim.env import DexCubeEnv, TaskConfig


@pytest.mark.parametrize("mode", ["linear", "zero"])
def test_interpolation_rows_are_convex_and_hit_the_knots(mode: str) -> None:
    w = _interp_matrix(4, 9, mode)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w >= 0).all()
    assert w[0, 0] == 1.0 and w[-1, -1] == 1.0  # first step = first knot, last = last knot
    assert _interp_matrix(1, 5, mode).tolist() == [[1.0]] * 5


def _planner(env: DexCubeEnv, **kw) -> SamplingPlanner:
    sim = env.sim
    return SamplingPlanner(env.hand_spec, sim.model, sim.idx.actuator_ids, sim.idx.cube_qpos,
                           sim.idx.cube_qvel, env.task.max_delta, env.task.ema,
                           MPCConfig(**kw))


@pytest.mark.parametrize("space", ["relative", "targets"])
def test_planned_targets_follow_the_decoder_arithmetic(space: str) -> None:
    # Both action spaces the student can reproduce go through ActionDecoder's own arithmetic:
    # "relative" knots are its deltas, "targets" knots are destinations reached by its deltas.
    env = DexCubeEnv("leap")
    env.reset(seed=3)
    pl = _planner(env, n_samples=4, horizon=6, knots=3, plan_timestep=0.0, threads=1,
                  action_space=space)
    rng = np.random.default_rng(0)
    lo, hi = env.hand_spec.actuator_limits()
    knots = (rng.uniform(-0.15, 0.15, (4, 3, env.n_actuators)) if space == "relative"
             else rng.uniform(lo, hi, (4, 3, env.n_actuators)))
    t0 = env.decoder.targets
    s0 = rng.uniform(-0.05, 0.05, env.n_actuators)
    got = pl.targets_of(knots, t0, s0)
    steps = np.einsum("hk,skn->shn", pl._interp, knots)
    moved = 0.0
    for i in range(4):  # the decoder, one step at a time
        dec = ActionDecoder(env.hand_spec, max_delta=0.15, ema=0.3)
        dec.reset(t0)
        dec._smoothed = s0.copy()
        for h in range(6):
            d = steps[i, h]
            if space == "targets":
                d = np.clip((d - dec.targets - 0.3 * dec._smoothed) / 0.7, -0.15, 0.15)
                assert np.all(np.abs(d) <= 0.15)
            before = dec.targets
            dec.step_state(dec._smoothed, dec._targets, d)
            moved = max(moved, float(np.abs(dec.targets - before).max()))
            np.testing.assert_allclose(got[i, h], dec.targets, atol=1e-12)
    assert moved > 0.1  # the plans really move the targets


def test_rollout_of_a_plan_reproduces_the_env_when_models_agree() -> None:
    # Planning at the sim's own timestep: the predicted cube pose after each control step of a
    # bin-exact plan is the env's, bit for bit (same model, same controls, same integrator).
    env = DexCubeEnv("leap")
    env.reset(seed=11)
    pl = _planner(env, n_samples=2, horizon=5, knots=5, plan_timestep=0.0, threads=1,
                  action_space="relative")
    bins = np.random.default_rng(1).integers(0, env.bins, (5, env.n_actuators))
    knots = env.decoder.bin_values[bins][None]
    state = np.empty(pl._nstate)
    import mujoco
    mujoco.mj_getState(pl.model, env.sim.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    tg = pl.targets_of(knots, env.decoder.targets, env.decoder.smoothed_delta)
    ends = pl.rollout_ends(state, tg, env.sim.data.ctrl, env.sim.data.qacc_warmstart)
    pos, quat, _ = pl.cube_of(ends[0])
    for h in range(5):
        env.step(bins[h])
        p, q = env.sim.cube_pose()
        np.testing.assert_array_equal(pos[h], p)
        np.testing.assert_allclose(quat[h] / np.linalg.norm(quat[h]), q, atol=1e-15)


def test_plans_stay_in_the_action_space_and_are_seeded() -> None:
    env = DexCubeEnv("leap")
    env.reset(seed=2)
    outs = []
    for _ in range(2):
        pl = _planner(env, n_samples=8, horizon=4, knots=2, seed=5, threads=1)
        d = pl.plan(env.sim.data, env.decoder.targets, env.decoder.smoothed_delta,
                    env.tracker.goal)
        assert d.shape == (env.n_actuators,) and np.all(np.abs(d) <= 0.15 + 1e-12)
        assert math.isfinite(pl.last_cost) and pl.last_plan_s > 0
        outs.append(d)
    np.testing.assert_array_equal(outs[0], outs[1])
    b = bins_of(env, outs[0])
    assert b.dtype == np.int64 and b.min() >= 0 and b.max() < env.bins
    with pytest.raises(ValueError, match="planner"):
        MPCConfig(planner="ilqr").validate()
    with pytest.raises(ValueError, match="knots"):
        MPCConfig(knots=9, horizon=8).validate()


def _turn_to_nearby_goal(controller, env: DexCubeEnv, steps: int) -> float:
    env.reset(seed=4)
    _, q = env.sim.cube_pose()
    goal = quat_mul(axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), 0.9), q)  # 0.9 rad yaw
    env.tracker._set_goal(goal)  # one fixed goal (the tracker's own would be random)
    controller.reset(env)
    obs, best = None, math.inf
    for _ in range(steps):
        obs, *_ = controller.step(env, obs)
        best = min(best, rotation_distance(env.sim.cube_pose()[1], goal))
    return best


def test_the_teacher_turns_the_cube_where_holding_does_not() -> None:
    env = DexCubeEnv("leap", task=TaskConfig(goal_timeout_s=100.0, success_threshold=0.05))
    hold = _turn_to_nearby_goal(HoldController(), env, 25)
    mpc = _turn_to_nearby_goal(
        MPCController(env, MPCConfig(n_samples=24, horizon=6, knots=3, seed=0)), env, 25)
    assert hold > 0.8  # holding still leaves the cube ~0.9 rad away
    assert mpc < hold - 0.3, (mpc, hold)


@pytest.mark.parametrize("controller", ["zero", "mpc"])
def test_eval_cli_prints_table3_and_writes_json_and_png(controller, tmp_path, capsys) -> None:
    out = tmp_path / "r.json"
    rc = ev.main(["--controller", controller, "--hand", "leap", "--trials", "2",
                  "--max-steps", "3", "--goal-rule", "far90", "--mpc-samples", "4",
                  "--mpc-horizon", "4", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "consecutive successes: mean" in text and "sorted: [" in text
    assert "goals far90" in text and "real-time factor" in text
    assert ("decision time" in text) == (controller == "mpc")  # the floors decide nothing
    res = json.loads(out.read_text())
    assert res["controller"] == controller and res["rules"]["goal_rule"] == "far90"
    assert [r["steps"] for r in res["rows"]] == [3, 3]
    assert out.with_suffix(".png").stat().st_size > 5000
    assert ev.main(["--controller", "mpc", "--hand", "leap", "--mpc-horizon", "2"]) == 2


def test_a_trial_of_the_teacher_is_reproducible_whatever_ran_before() -> None:
    env = DexCubeEnv("leap")
    ctrl = MPCController(env, MPCConfig(n_samples=6, horizon=4, knots=2, threads=2))

    def trial(seed: int) -> list[list[int]]:
        env.reset(seed=seed)
        ctrl.reset(env)
        out = []
        for _ in range(3):
            ctrl.step(env, None)
            out.append(ctrl.last_bins.tolist())
        return out

    first = trial(5)
    trial(6)
    assert trial(5) == first  # noise restarts per episode; two rollout threads change nothing


def test_sparse_noise_effort_and_mppi() -> None:
    env = DexCubeEnv("leap")
    env.reset(seed=4)
    targets, smoothed = env.decoder.targets, env.decoder.smoothed_delta
    # noise_fraction: each sample moves only some actuators; the rest keep the warm start.
    pl = _planner(env, n_samples=200, threads=1, noise_fraction=0.25)
    pl.plan_knots = np.tile(targets, (pl.cfg.knots, 1))
    knots = pl._sample(pl.plan_knots, None, targets)
    moved = (np.abs(knots[2:] - pl.plan_knots).max(axis=1) > 0).mean()
    assert 0.15 < moved < 0.35, moved
    # effort: a plan that moves the targets costs more than holding them, by effort x the
    # mean squared per-step change of the targets.
    state = np.empty(pl._nstate)
    import mujoco
    mujoco.mj_getState(pl.model, env.sim.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    base = pl._evaluate(state, knots[:3], targets, smoothed, env.tracker.goal, env.sim.data)
    pl.cfg.cost.effort = 10.0
    with_effort = pl._evaluate(state, knots[:3], targets, smoothed, env.tracker.goal,
                               env.sim.data)
    tg = pl.targets_of(knots[:3], targets, smoothed)
    moves = np.diff(tg, axis=1, prepend=np.broadcast_to(targets, tg[:, :1].shape))
    np.testing.assert_allclose(with_effort - base, 10.0 * np.mean(moves ** 2, axis=(1, 2)),
                               atol=1e-12)
    assert with_effort[1] == base[1]  # sample 1 holds the targets: no effort
    # nominal: the mean squared distance of the planned targets from the relaxed pose.
    from dex_description.pose import default_actuator_targets

    pl.cfg.cost.effort, pl.cfg.cost.nominal = 0.0, 2.0
    with_nominal = pl._evaluate(state, knots[:3], targets, smoothed, env.tracker.goal,
                                env.sim.data)
    relaxed = default_actuator_targets(env.hand_spec)
    np.testing.assert_allclose(with_nominal - base,
                               2.0 * np.mean((tg - relaxed) ** 2, axis=(1, 2)), atol=1e-12)
    pl.cfg.cost.nominal = 0.0
    # MPPI: the plan is the cost-weighted mean of the samples, weights from elite_weights.
    from dex_policy.mpc import elite_weights

    idx, w = elite_weights(np.array([3.0, 1.0, np.inf, 2.0]), 4, 2)
    assert idx.tolist() == [1, 3, 0, 2] and w[-1] == 0.0
    np.testing.assert_allclose(w.sum(), 1.0)
    np.testing.assert_allclose(w[1] / w[0], math.exp(-1.0))  # tau = gap to the 2nd best
    pm = _planner(env, planner="mppi", n_samples=8, cem_elites=3, threads=1)
    pm.plan(env.sim.data, targets, smoothed, env.tracker.goal)
    k, c = pm.last_samples
    i, wm = elite_weights(c, len(c), 3)
    np.testing.assert_allclose(pm.plan_knots, np.einsum("s,skn->kn", wm, k[i]))


def test_a_student_prior_breaks_ties_towards_the_student() -> None:
    env = DexCubeEnv("leap")
    env.reset(seed=4)
    targets, smoothed = env.decoder.targets, env.decoder.smoothed_delta
    bins, n = env.bins, env.n_actuators
    # A student's action: each actuator's bin drawn at random.
    want = np.random.default_rng(0).integers(0, bins, n)
    student = env.decoder.bin_values[want]
    free = _planner(env, n_samples=16, threads=1, seed=3)
    free_bins = bins_of(env, free.plan(env.sim.data, targets, smoothed, env.tracker.goal))
    # Without the cost term, a quarter of the samples still start with the student's action.
    pl = _planner(env, n_samples=16, threads=1, seed=3)
    pl.plan(env.sim.data, targets, smoothed, env.tracker.goal, student)
    knots, _ = pl.last_samples
    first = pl.delta_towards(knots[:, 0], targets, smoothed)
    assert (bins_of(env, first[2:6]) == want).all() and not (bins_of(env, first[6:]) == want).all()
    # A heavy student term: the teacher takes the student's action (clipped at the limits the
    # targets can reach), which it did not choose alone.
    pl = _planner(env, n_samples=16, threads=1, seed=3)
    pl.cfg.cost.student = 100.0
    got = bins_of(env, pl.plan(env.sim.data, targets, smoothed, env.tracker.goal, student))
    assert (got == want).mean() > 0.9 and (free_bins == want).mean() < 0.5


def test_the_planning_model_takes_its_own_timestep_solver_and_cone() -> None:
    """The planning model may differ from the sim's for speed (timestep, solver iterations,
    friction cone); the sim's model is left as it was, and bad choices are refused."""
    import mujoco

    env = DexCubeEnv("leap")
    env.reset(seed=3)
    sim_opt = env.sim.model.opt
    before = (sim_opt.timestep, sim_opt.iterations, sim_opt.cone)
    pl = _planner(env, n_samples=2, horizon=2, knots=2, threads=1, plan_timestep=0.008,
                  plan_iterations=5, plan_cone="pyramidal")
    assert pl.substeps == 10 and pl.model.opt.timestep == pytest.approx(0.008)
    assert pl.model.opt.iterations == 5 and pl.model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert (sim_opt.timestep, sim_opt.iterations, sim_opt.cone) == before
    same = _planner(env, n_samples=2, horizon=2, knots=2, threads=1, plan_timestep=0.0)
    assert (same.model.opt.timestep, same.model.opt.iterations, same.model.opt.cone) == before
    for bad in (dict(plan_iterations=-1), dict(plan_cone="round")):
        with pytest.raises(ValueError, match="plan_"):
            MPCConfig(**bad).validate()
    p = argparse.ArgumentParser()
    add_mpc_options(p)
    cfg = mpc_config_of(p.parse_args(["--mpc-plan-timestep", "0.002", "--mpc-plan-iterations",
                                      "8", "--mpc-plan-cone", "elliptic"]))
    assert (cfg.plan_timestep, cfg.plan_iterations, cfg.plan_cone) == (0.002, 8, "elliptic")


def test_eval_resumes_a_killed_run_and_refuses_another_setup(tmp_path, monkeypatch,
                                                             capsys) -> None:
    out = tmp_path / "r.json"
    base = ["--controller", "mpc", "--hand", "leap", "--max-steps", "3", "--mpc-samples", "4",
            "--mpc-horizon", "4", "--goal-timeout", "80", "--json", str(out)]
    assert ev.main(base + ["--trials", "2"]) == 0
    first = json.loads(out.read_text())
    assert first["partial"] is False and first["rules"]["goal_timeout_s"] == 80.0
    assert "80.0 s per goal" in capsys.readouterr().out
    ran: list[int] = []
    real = ev.run_trial

    def counted(env, controller, seed, max_steps=None):
        ran.append(seed)
        return real(env, controller, seed, max_steps)

    monkeypatch.setattr(ev, "run_trial", counted)
    assert ev.main(base + ["--trials", "3", "--resume"]) == 0
    assert ran == [2]  # trials 0 and 1 were kept, only trial 2 ran
    res = json.loads(out.read_text())
    assert res["rows"][:2] == first["rows"] and [r["seed"] for r in res["rows"]] == [0, 1, 2]
    assert res["summary"]["trials"] == 3 and res["decision_time"]["p50_ms"] > 0
    assert out.with_suffix(".timing.npz").exists()
    # another setup in the same file is refused, naming what differs; the file is kept
    assert ev.main(base + ["--trials", "3", "--resume", "--mpc-samples", "8"]) == 2
    assert "differs in config" in capsys.readouterr().err
    assert json.loads(out.read_text())["rows"] == res["rows"]
    # the action scale is part of the setup; a file from before it was recorded ran at 0.15
    assert res["action"] == {"bins": 11, "max_delta": 0.15, "ema": 0.3}
    old = dict(res)
    del old["action"]
    out.write_text(json.dumps(old))
    assert ev.main(base + ["--trials", "3", "--resume"]) == 0
    assert ev.main(base + ["--trials", "3", "--resume", "--max-delta", "0.3"]) == 2
    assert "differs in action" in capsys.readouterr().err


def test_a_rollout_that_reaches_the_goal_on_the_way_is_preferred_with_the_success_term(
        ) -> None:
    # Three rollouts of 6 steps at rest position, cube yawed from the goal by a profile:
    # A touches 0.30 rad at step 2 then drifts back to 0.55; B stays at 0.42 (never a success);
    # C reaches 0.30 only at the last step.
    env = DexCubeEnv("leap")
    env.reset(seed=3)
    pl = _planner(env, horizon=6, knots=2, threads=1)
    pl.cfg.cost.tilt, pl.cfg.cost.success = 0.0, 0.0
    import mujoco

    state = np.empty(pl._nstate)
    mujoco.mj_getState(pl.model, env.sim.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    goal = np.array([1.0, 0.0, 0.0, 0.0])
    profiles = np.array([[0.8, 0.5, 0.30, 0.4, 0.5, 0.55],
                         [0.8, 0.6, 0.50, 0.45, 0.42, 0.42],
                         [0.8, 0.7, 0.60, 0.5, 0.45, 0.30]])
    ends = np.tile(state, (3, 6, 1))
    a = pl._qpos0 + pl._cube_qpos
    ends[..., a : a + 3] = pl.rest
    ends[..., a + 3 : a + 7] = [[axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), x)
                                 for x in row] for row in profiles]
    ends[..., pl._qvel0 : pl._qvel0 + pl.model.nv] = 0.0  # at rest
    knots = np.zeros((3, 2, pl.n))
    plain = pl.costs(ends, knots, goal)
    assert plain[1] < plain[0]  # without it, B (never a success) looks best
    pl.cfg.cost.success = 2.0
    bonus = pl.costs(ends, knots, goal)
    assert bonus[0] < bonus[2] < bonus[1], bonus  # A: earliest success; B: none
    # A's orientation cost stays at its success step's 0.30 rad: mean 0.5 of the first three,
    # then 0.30 to the end, plus 4 x 0.30, less the bonus at step 2 of 0..5 (2 x (1 - 0.2))
    expect = (0.8 + 0.5 + 0.3 * 4) / 6 + 4 * 0.3 - 2.0 * (1 - 0.5 * 2 / 5)
    assert bonus[0] == pytest.approx(expect, abs=1e-6)
    # A plan that starts "there" (an estimate the judge disagrees with) keeps the plain cost,
    # which still pulls it closer.
    np.testing.assert_allclose(pl.costs(ends, knots, goal, start_angle=0.3), plain)
    np.testing.assert_allclose(pl.costs(ends, knots, goal, start_angle=0.36), bonus)
    pl.success_threshold = 0.2  # a stricter trial: nothing reaches it
    np.testing.assert_allclose(pl.costs(ends, knots, goal), plain)


def test_a_trial_that_times_out_says_how_its_last_goal_was_missed(tmp_path, capsys) -> None:
    out = tmp_path / "z.json"
    assert ev.main(["--controller", "zero", "--hand", "leap", "--trials", "1", "--seed", "5",
                    "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    g = row["last_goal"]
    assert row["end_reason"] == "timeout" and row["steps"] == 100
    assert 0.4 < g["closest_rad"] <= g["final_rad"] <= math.pi  # holding never got there
    assert 0.0 <= g["up_face_off_rad"] <= g["final_rad"] + 1e-6  # part of the rotation left
    assert "last goals missed: closest approach median" in capsys.readouterr().out


def test_the_evaluator_run_as_a_script_spreads_over_workers(tmp_path) -> None:
    # `python -m dex_policy.evaluate` (what the device scripts run): its worker functions
    # belong to __main__, which Ray would pickle by value, each with its own globals.
    import subprocess
    import sys

    out = tmp_path / "w.json"
    run = subprocess.run([sys.executable, "-m", "dex_policy.evaluate", "--controller", "zero",
                          "--hand", "leap", "--trials", "2", "--max-steps", "3", "--workers",
                          "2", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["workers"] == 2 and [r["steps"] for r in res["rows"]] == [3, 3]
