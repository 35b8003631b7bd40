"""The physics ceiling of an env run, measured on the SAME work (used by ``dex-sim-bench``).

A resting hand is the cheapest state the scene has; a randomized episode (random forces, a
falling cube, other masses and frictions) makes every ``mj_step`` dearer. Comparing a randomized
env against the resting ceiling therefore mixes two things: env overhead and harder physics.
This module separates them:

1. ``run_env``: step a fresh env for ``steps`` control steps (fixed actions, auto-reset) and time
   it — nothing else runs in that loop;
2. ``record_env``: step another fresh env built the same way (same seed, same actions: the same
   trajectory, bit for bit) and record, before each ``mj_step`` call, the model it ran on (a
   copy whenever randomization changed it), the full integration state (qpos, qvel, warm start,
   ctrl, applied forces, time) and the timestep in effect (timing randomization stretches it);
3. ``replay_rate``: run bare ``mj_step(m, d, nstep=k)`` from every recorded state and time only
   that. It checks that each replayed step lands on the recorded next state bit for bit, so the
   ceiling is measured on exactly the physics the env did.

ceiling ratio = replay time / env time, on identical physics work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

STATE = mujoco.mjtState.mjSTATE_INTEGRATION  # everything mj_step reads (incl. warm start, ctrl)
# Model fields randomization writes; a change in any of them means a new model snapshot.
_WATCHED = ("body_mass", "body_inertia", "geom_size", "geom_friction", "dof_damping",
            "actuator_gainprm", "actuator_biasprm", "jnt_range")


@dataclass
class PhysicsRecord:
    """Every ``mj_step`` call of an env run: model snapshot index, state before, nstep, and the
    qpos after (to check the replay)."""

    models: list[mujoco.MjModel] = field(default_factory=list)
    model_index: list[int] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    timesteps: list[float] = field(default_factory=list)
    nsteps: list[int] = field(default_factory=list)
    qpos_after: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.states)


def _model_key(m: mujoco.MjModel) -> tuple:
    return tuple(getattr(m, f).tobytes() for f in _WATCHED) + (m.opt.gravity.tobytes(),)


def _drive(env: Any, actions: np.ndarray, steps: int, seed: int) -> float:
    """Reset with ``seed``, then ``steps`` env steps (actions cycled, auto-reset); wall seconds
    of the steps."""
    env.reset(seed=seed)
    k = len(actions)
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(actions[i % k])
        if term or trunc:
            env.reset()
    return time.perf_counter() - t0


def run_env(make: Callable[[], Any], actions: np.ndarray, steps: int, seed: int) -> float:
    """Wall seconds for ``steps`` env steps (actions cycled, auto-reset) on a fresh env."""
    env = make()
    try:
        return _drive(env, actions, steps, seed)
    finally:
        env.close()


def record_env(make: Callable[[], Any], actions: np.ndarray, steps: int, seed: int
               ) -> PhysicsRecord:
    """The same run as ``run_env(make, actions, steps, seed)``, recording every ``mj_step``."""
    rec = PhysicsRecord()
    env = make()
    real_step = mujoco.mj_step
    keys: dict[tuple, int] = {}

    def recording_step(m: mujoco.MjModel, d: mujoco.MjData, nstep: int = 1) -> None:
        key = _model_key(m)
        idx = keys.get(key)
        if idx is None:
            idx = keys[key] = len(rec.models)
            rec.models.append(m.__copy__())
        s = np.empty(mujoco.mj_stateSize(m, STATE))
        mujoco.mj_getState(m, d, s, STATE)
        rec.model_index.append(idx)
        rec.states.append(s)
        rec.timesteps.append(float(m.opt.timestep))
        rec.nsteps.append(int(nstep))
        real_step(m, d, nstep=nstep)
        rec.qpos_after.append(d.qpos.copy())

    try:
        mujoco.mj_step = recording_step  # the sim calls mujoco.mj_step: record every call
        _drive(env, actions, steps, seed)
    finally:
        mujoco.mj_step = real_step
        env.close()
    return rec


def replay_rate(rec: PhysicsRecord) -> dict[str, Any]:
    """Bare ``mj_step`` over the recorded states: seconds inside mj_step only, and how many
    replayed steps reproduced the recorded next qpos exactly."""
    datas = [mujoco.MjData(m) for m in rec.models]
    spent, exact = 0.0, 0
    for i, s in enumerate(rec.states):
        j = rec.model_index[i]
        m, d = rec.models[j], datas[j]
        m.opt.timestep = rec.timesteps[i]
        mujoco.mj_setState(m, d, s, STATE)
        t = time.perf_counter()
        mujoco.mj_step(m, d, nstep=rec.nsteps[i])
        spent += time.perf_counter() - t
        exact += bool(np.array_equal(d.qpos, rec.qpos_after[i]))
    return {"seconds": spent, "calls": len(rec), "exact": exact,
            "physics_steps": int(sum(rec.nsteps))}


def same_work_ratio(make: Callable[[], Any], actions: np.ndarray, steps: int, seed: int = 0,
                    repeats: int = 3) -> dict[str, Any]:
    """Env time vs bare mj_step time on the same trajectory (best of ``repeats`` each).

    Returns env and ceiling control steps/s, their ratio, and the replay's exactness."""
    env_s = min(run_env(make, actions, steps, seed) for _ in range(max(1, repeats)))
    rec = record_env(make, actions, steps, seed)
    reps = [replay_rate(rec) for _ in range(max(1, repeats))]
    raw_s = min(r["seconds"] for r in reps)
    return {"steps": steps, "env_rate": steps / env_s, "ceiling_rate": steps / raw_s,
            "ratio": raw_s / env_s, "mj_step_calls": reps[0]["calls"],
            "replay_exact": reps[0]["exact"], "models": len(rec.models),
            "physics_steps_per_s": reps[0]["physics_steps"] / raw_s}
