"""Speed probe for gymnasium-robotics' HandManipulateBlock (the reference `dex-sim-bench` beats).

Runs INSIDE a separate venv (``scripts/bench_gym_robotics.sh`` builds it: gymnasium-robotics'
hand envs need mujoco <= 3.11), so it imports nothing from dex: only the standard library,
numpy, mujoco and (in ``main``) gymnasium / gymnasium_robotics. ``dex_bringup.benchmarks.env_speed`` imports
``raw_physics_rate`` and ``summarize`` from here so both scenes' raw ceilings are measured by the
same code.

Prints ONE JSON object on stdout:
  env_zero / env_random: env steps/s through ``gym.make(env_id)`` (the wrappers a user gets:
      TimeLimit 100 steps, OrderEnforcing, PassiveEnvChecker), auto-reset on episode end, action
      all zeros (a fixed hand posture) or uniformly random (pre-drawn);
  raw_physics: bare ``mj_step(model, data, nstep=n_substeps)`` steps/s on the env's own
      model/data, same action held (zeros) and the state restored every episode;
  control_ceiling = raw_physics / n_substeps (the most env steps/s the physics allows).
Each measurement: ``--repeats`` runs of ``--seconds``; best, median and all runs reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def summarize(runs: list[float], cpu_runs: list[float] | None = None) -> dict[str, Any]:
    """best / median / runs of a list of wall-clock rates (and of the same runs' rates per
    CPU-second of the measuring thread, which other processes on the machine affect less)."""
    out: dict[str, Any] = {"best": max(runs), "median": statistics.median(runs), "runs": runs}
    if cpu_runs:
        out.update(cpu_best=max(cpu_runs), cpu_median=statistics.median(cpu_runs),
                   cpu_runs=cpu_runs)
    return out


def repeat(fn: Callable[[], tuple[float, float]], repeats: int) -> dict[str, Any]:
    """``fn`` returns (wall rate, cpu rate); run it ``repeats`` times and summarize."""
    outs = [fn() for _ in range(max(1, repeats))]
    return summarize([w for w, _ in outs], [c for _, c in outs])


def raw_physics_rate(model: Any, data: Any, substeps: int, episode_steps: int,
                     seconds: float) -> tuple[float, float]:
    """(wall, thread-CPU) physics steps/s of ``mj_step(m, d, nstep=substeps)`` with the current ctrl held.

    The state present on entry (taken with ``mj_getState``, full physics) is restored every
    ``episode_steps`` control steps, as an env resets every episode; restores are timed too.
    """
    import mujoco
    import numpy as np

    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    snap = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, snap, spec)
    ctrl = data.ctrl.copy()
    n = 0
    c0, t0 = time.thread_time(), time.perf_counter()
    deadline = t0 + seconds
    try:
        while True:
            for _ in range(episode_steps):
                mujoco.mj_step(model, data, nstep=substeps)
                n += 1
                if time.perf_counter() >= deadline:
                    return (n * substeps / (time.perf_counter() - t0),
                            n * substeps / max(time.thread_time() - c0, 1e-9))
            mujoco.mj_setState(model, data, snap, spec)
            data.ctrl[:] = ctrl
    finally:
        mujoco.mj_setState(model, data, snap, spec)
        data.ctrl[:] = ctrl


def env_rate(env: Any, actions: Any, seconds: float, seed: int = 0) -> tuple[float, float]:
    """(wall, thread-CPU) env steps/s of a gymnasium env (auto-reset; resets timed)."""
    env.reset(seed=seed)
    n, k = 0, len(actions)
    c0, t0 = time.thread_time(), time.perf_counter()
    deadline = t0 + seconds
    while True:
        _, _, term, trunc, _ = env.step(actions[n % k])
        n += 1
        if term or trunc:
            env.reset()
        if time.perf_counter() >= deadline:
            return n / (time.perf_counter() - t0), n / max(time.thread_time() - c0, 1e-9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env-id", default="HandManipulateBlock-v1")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import gymnasium as gym
    import gymnasium_robotics
    import mujoco
    import numpy as np

    gym.register_envs(gymnasium_robotics)
    env = gym.make(args.env_id)
    u = env.unwrapped
    substeps = int(u.n_substeps)
    timestep = float(u.model.opt.timestep)
    episode_steps = int(env.spec.max_episode_steps or 100)
    rng = np.random.default_rng(0)
    shape = env.action_space.shape
    zero = np.zeros((1, *shape), dtype=np.float32)
    rand = rng.uniform(env.action_space.low, env.action_space.high,
                       size=(1024, *shape)).astype(np.float32)

    out: dict[str, Any] = {
        "env_id": args.env_id,
        "versions": {"gymnasium": gym.__version__,
                     "gymnasium_robotics": getattr(gymnasium_robotics, "__version__", "?"),
                     "mujoco": mujoco.__version__, "numpy": np.__version__,
                     "python": sys.version.split()[0]},
        "pid": os.getpid(),
        "n_substeps": substeps, "timestep": timestep, "control_period": substeps * timestep,
        "episode_steps": episode_steps, "seconds": args.seconds, "repeats": args.repeats,
        "wrappers": "gym.make (TimeLimit, OrderEnforcing, PassiveEnvChecker)",
    }
    out["env_zero"] = repeat(lambda: env_rate(env, zero, args.seconds), args.repeats)
    out["env_random"] = repeat(lambda: env_rate(env, rand, args.seconds), args.repeats)
    # Raw ceiling on the env's own model/data, holding the zero action's ctrl.
    env.reset(seed=0)
    env.step(zero[0])
    out["raw_physics"] = repeat(
        lambda: raw_physics_rate(u.model, u.data, substeps, episode_steps, args.seconds),
        args.repeats)
    out["control_ceiling"] = {k: out["raw_physics"][k] / substeps
                              for k in ("best", "median", "cpu_best", "cpu_median")}
    env.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
