"""Batched physics throughput: MuJoCo Warp (BatchedHandCube) vs CPU MuJoCo, same run, same scene.

    python -m dex_bringup.benchmarks.batched_speed                      # nworld 1 64 1024 4096 (GPU session)
    python -m dex_bringup.benchmarks.batched_speed --nworld 1 4 --control-steps 2   # CPU device: proves it runs

Reports physics steps/s summed over worlds (one step = one 2 ms mj_step of one world) and control
steps/s. Kernel compilation happens in the constructor, timed separately, never in the figure.
"""

from __future__ import annotations

import argparse
import json
import time

import mujoco
import numpy as np


def bench_cpu(seconds: float = 2.0) -> float:
    """Single-thread CPU MuJoCo mj_step rate on the same scene (steps/s)."""
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim("shadow", render=False)
    sim.reset(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mujoco.mj_step(sim.model, sim.data, nstep=100)
        n += 100
    return n / (time.perf_counter() - t0)


def bench_batched(nworld: int, control_steps: int, device: str | None) -> dict:
    import warp as wp

    from dex_sim.batched import BatchedHandCube

    t0 = time.perf_counter()
    b = BatchedHandCube("shadow", n_envs=nworld, device=device)
    build_s = time.perf_counter() - t0
    b.reset(np.arange(nworld))
    targets = np.tile(b.actuator_targets()[0], (nworld, 1))
    b.set_targets(targets)
    b.step_control()  # first period (graph launch / caches) not timed
    wp.synchronize_device(b.device)
    t0 = time.perf_counter()
    for _ in range(control_steps):
        b.step_control()
    wp.synchronize_device(b.device)
    dt = time.perf_counter() - t0
    b.check_overflow()
    steps = control_steps * b.substeps * nworld
    return {
        "nworld": nworld, "device": str(b.device), "build_s": round(build_s, 2),
        "physics_steps_per_s": steps / dt, "control_steps_per_s": control_steps * nworld / dt,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nworld", type=int, nargs="+", default=[1, 64, 1024, 4096])
    ap.add_argument("--control-steps", type=int, default=20)
    ap.add_argument("--device", default=None, help="warp device (default: cuda:0 if present)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    import warp as wp

    wp.config.quiet = True
    cpu = bench_cpu()
    print(f"CPU MuJoCo mj_step, 1 thread: {cpu:,.0f} steps/s")
    rows = []
    for n in a.nworld:
        r = bench_batched(n, a.control_steps, a.device)
        r["speedup_vs_cpu_1thread"] = r["physics_steps_per_s"] / cpu
        rows.append(r)
        print(f"warp {r['device']} nworld={n:5d}: {r['physics_steps_per_s']:,.0f} steps/s "
              f"({r['control_steps_per_s']:,.1f} control steps/s, x{r['speedup_vs_cpu_1thread']:.2f}"
              f" vs CPU; build {r['build_s']} s)")
    if not any(r["device"].startswith("cuda") for r in rows):
        print("note: Warp ran on its CPU device (no GPU here); this only proves the batched path "
              "runs. The real figure needs a GPU session: python -m dex_bringup.benchmarks.batched_speed")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu_steps_per_s": cpu, "batched": rows}, f, indent=2)


if __name__ == "__main__":
    main()
