"""Smoke test of `dex-sim-bench` (dex_bringup.benchmarks.env_speed / gymrob_probe): every bench function runs a
handful of steps and returns sane structures. No timing assertions: speed is judged by the
benchmark script itself, as ratios measured in one run."""

import json
import math

import numpy as np
import pytest

from dex_bringup.benchmarks import env_speed as bench_env
from dex_bringup.benchmarks.gymrob_probe import raw_physics_rate, summarize

T = 0.05  # seconds per measurement: just enough for a few steps


def _rate_ok(v: float) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_summarize_best_median():
    s = summarize([1.0, 3.0, 2.0], [4.0, 5.0, 6.0])
    assert s["best"] == 3.0 and s["median"] == 2.0 and s["cpu_best"] == 6.0
    assert "cpu_best" not in summarize([1.0])


def test_raw_rate_and_state_restored():
    r = bench_env.raw_rate(T)
    assert r["substeps"] == 40 and _rate_ok(r["rate"]) and _rate_ok(r["cpu_rate"])
    assert bench_env.raw_rate(T, substeps=20)["substeps"] == 20
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim(render=False)
    q0, ctrl0 = sim.data.qpos.copy(), sim.data.ctrl.copy()
    wall, cpu = raw_physics_rate(sim.model, sim.data, 5, 2, T)
    assert _rate_ok(wall) and _rate_ok(cpu)
    np.testing.assert_array_equal(sim.data.qpos, q0)  # the probe leaves the state as found
    np.testing.assert_array_equal(sim.data.ctrl, ctrl0)


@pytest.mark.parametrize("action", ["hold", "random"])
def test_env_rate(action):
    env = bench_env.make_env()
    try:
        r = bench_env.env_rate(env, T, action)
        assert _rate_ok(r["rate"]) and r["steps"] >= 1 and 0.0 < r["physics_share"] <= 1.0
        assert "step_control" not in vars(env.sim)  # the timing hook is removed again
    finally:
        env.close()
    with pytest.raises(ValueError):
        bench_env._actions(env, "nonsense")


def test_env_equal_substeps_and_randomized():
    env = bench_env.make_env(substeps=20)
    assert env.sim.substeps == 20
    t0 = env.sim.time
    env.reset(seed=0)
    env.step(np.full(env.n_actuators, env.bins // 2))
    assert env.sim.time - t0 == pytest.approx(2 * 20 * env.sim.model.opt.timestep)  # reset+step
    env.close()
    env = bench_env.make_env(randomize=True)
    r = bench_env.env_rate(env, T, "random")
    assert _rate_ok(r["rate"])
    env.close()


def test_rollout_rate():
    assert _rate_ok(bench_env.rollout_rate(1, T)["rate"])
    assert _rate_ok(bench_env.rollout_rate(2, T)["rate"])


def test_gymrob_errors_are_reported(tmp_path):
    assert "error" in bench_env.gymrob(T, 1, script=tmp_path / "missing.sh")
    bad = tmp_path / "bad.sh"
    bad.write_text("echo broken >&2; exit 3\n")
    r = bench_env.gymrob(T, 1, script=bad)
    assert r["error"].startswith("exit 3") and "broken" in r["error"]


def test_run_table_and_json(tmp_path, capsys):
    res = bench_env.run(seconds=0.02, repeats=1, procs=1, skip_gymrob=True, skip_scaling=True)
    for key in ("raw", "ceiling", "env_hold", "env_random", "raw20", "env20_hold"):
        assert _rate_ok(res[key]["best"]), key
    assert "ratio_to_ceiling" in res["env_hold"]
    assert res["gymrob"]["error"].startswith("skipped")
    gv = res["gym_vector"]
    assert _rate_ok(gv["DexCubeVectorEnv"]["best"]) and _rate_ok(gv["SyncVectorEnv"]["best"])
    table = bench_env.format_table(res)
    assert "control ceiling" in table and "load average" in table and "skipped" in table
    assert "DexCubeVectorEnv" in table and "vs SyncVectorEnv" in table
    json.dumps(res)  # JSON-able as written by --json
    out = tmp_path / "b.json"
    assert bench_env.main(["--seconds", "0.02", "--repeats", "1", "--skip-gymrob",
                           "--skip-scaling", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["raw"]["substeps"] == 40
    assert "measurement" in capsys.readouterr().out


def test_process_rate_one_worker():
    wall, cpu = bench_env.process_rate(1, T)
    assert _rate_ok(wall) and _rate_ok(cpu)



def test_scene_variants_change_the_model_and_restore_the_loader():
    import mujoco

    from dex_sim import physics

    plain = physics.load_model
    base = physics.HandCubeSim(render=False).model
    with bench_env.scene_variant(*bench_env.SCENE_VARIANTS["pyramidal + Euler"]):
        m = physics.HandCubeSim(render=False).model
    assert physics.load_model is plain
    assert base.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
    assert m.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert m.npair == base.npair  # contacts as shipped
    with bench_env.scene_variant(*bench_env.SCENE_VARIANTS["broad-phase contacts"]):
        auto = physics.HandCubeSim(render=False).model
    assert auto.npair == 0 and base.npair > 0 and auto.opt.jacobian == base.opt.jacobian
    with bench_env.scene_variant(*bench_env.SCENE_VARIANTS["dense Jacobian (MuJoCo's auto)"]):
        dense = physics.HandCubeSim(render=False).model
    assert dense.opt.jacobian == mujoco.mjtJacobian.mjJAC_AUTO
    assert base.opt.jacobian == mujoco.mjtJacobian.mjJAC_SPARSE
    island = mujoco.mjtDisableBit.mjDSBL_ISLAND
    with bench_env.scene_variant(*bench_env.SCENE_VARIANTS["constraint islands (MuJoCo's default)"]):
        assert not physics.HandCubeSim(render=False).model.opt.disableflags & island
    assert base.opt.disableflags & island
    with pytest.raises(ValueError, match="does not match"):
        with bench_env.scene_variant((("no such text", ""),)):
            pass
    assert physics.load_model is plain
    res = bench_env.variant_rates(0.02, 1)
    assert set(res) == set(bench_env.SCENE_VARIANTS)
    assert all(_rate_ok(v[a]["best"]) for v in res.values() for a in ("hold", "random"))


def test_leap_scene_rates_compare_the_shipped_scene_with_each_choice_undone():
    import mujoco

    from dex_sim import physics

    shipped = physics.HandCubeSim("leap", render=False).model
    assert shipped.opt.jacobian == mujoco.mjtJacobian.mjJAC_DENSE
    assert not shipped.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_ISLAND
    with bench_env.scene_variant(bench_env.LEAP_VARIANTS["sparse Jacobian"], hand="leap"):
        m = physics.HandCubeSim("leap", render=False).model
    assert m.opt.jacobian == mujoco.mjtJacobian.mjJAC_SPARSE
    with bench_env.scene_variant(bench_env.LEAP_VARIANTS["islands off"], hand="leap"):
        m = physics.HandCubeSim("leap", render=False).model
    assert m.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_ISLAND
    res = bench_env.leap_scene_rates(0.02, 1)
    assert set(res) == {"shipped", *bench_env.LEAP_VARIANTS}
    assert all(_rate_ok(v[a]["best"]) for v in res.values() for a in ("hold", "random"))
    table = bench_env.format_table({**bench_env.run(0.02, 1, 1, True, True), "leap_scene": res})
    assert "LEAP env, shipped scene, hold" in table and "vs islands off" in table


def test_merge_probes_pools_the_runs():
    def probe(zero: float, raw: float) -> dict:
        return {"env_id": "X", "n_substeps": 20,
                "env_zero": summarize([zero], [zero]), "env_random": summarize([zero / 2]),
                "raw_physics": summarize([raw], [raw])}

    m = bench_env.merge_probes([probe(100.0, 2000.0), probe(300.0, 4000.0), probe(200.0, 3000.0)])
    assert m["env_zero"]["runs"] == [100.0, 300.0, 200.0]
    assert m["env_zero"]["best"] == 300.0 and m["env_zero"]["median"] == 200.0
    assert m["control_ceiling"]["best"] == 200.0 and m["repeats"] == 3
    assert "error" in bench_env.merge_probes([probe(1.0, 1.0), {"error": "exit 1"}])
    assert "error" in bench_env.merge_probes([])


def test_same_work_vec_replays_every_member():
    r = bench_env.same_work_vec("random", True, 12, 1, 3)
    assert r["n_envs"] == 3 and r["mj_step_calls"] == 12  # 4 vector steps x 3 members
    assert r["replay_exact"] == 12 and r["models"] >= 3  # each member its own randomized model
    assert _rate_ok(r["env_rate"]) and _rate_ok(r["ceiling_rate"]) and r["ratio"] > 0
