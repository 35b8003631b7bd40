"""The physics ceiling of an env run, measured on the SAME work (used by ``dex-sim-bench``).

A resting hand is the cheapest state the scene has; a randomized episode (random forces, a
falling cube, other masses and frictions) makes every ``mj_step`` dearer. Comparing a randomized
env against the resting ceiling therefore mixes two things: env overhead and harder physics.
This module separates them:

1. ``record_env``: step a fresh env (fixed seed and actions, auto-reset) and record, before each
   ``mj_step`` call, the model it ran on (a copy whenever randomization changed it), the full
   integration state (qpos, qvel, warm start, ctrl, applied forces, time) and the timestep in
   effect (timing randomization stretches it);
2. ``Replay``: bare ``mj_step(m, d, nstep=k)`` from recorded states, timing only that, and
   checking that each replayed step lands on the recorded next state bit for bit, so the
   ceiling is measured on exactly the physics the env did;
3. ``same_work_ratio``: step another fresh env built the same way (the same trajectory, bit for
   bit) and replay the same steps, alternating every ``CHUNK`` control steps (~50 ms), so both
   sides run under the same machine conditions — on a shared machine the speed drifts by more
   than the few percent being measured within seconds.

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


CHUNK = 25  # control steps per env / replay turn in same_work_ratio


def _run_steps(env: Any, actions: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    """Env steps ``start``..``stop`` (actions cycled, auto-reset): (wall, thread CPU) seconds."""
    k = len(actions)
    c0, t0 = time.thread_time(), time.perf_counter()
    for i in range(start, stop):
        _, _, term, trunc, _ = env.step(actions[i % k])
        if term or trunc:
            env.reset()
    return time.perf_counter() - t0, time.thread_time() - c0


def record_env(make: Callable[[], Any], actions: np.ndarray, steps: int, seed: int
               ) -> PhysicsRecord:
    """Step a fresh env from ``make`` (reset with ``seed``, ``steps`` steps of ``actions``,
    cycled, auto-reset), recording every ``mj_step`` call."""
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
        env.reset(seed=seed)
        _run_steps(env, actions, 0, steps)
    finally:
        mujoco.mj_step = real_step
        env.close()
    return rec


class Replay:
    """Bare ``mj_step`` over a record's states (one MjData per recorded model)."""

    def __init__(self, rec: PhysicsRecord) -> None:
        self.rec = rec
        self.datas = [mujoco.MjData(m) for m in rec.models]

    def run(self, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Replay calls ``start``..``stop``: seconds inside mj_step only (wall and thread CPU)
        and how many replayed steps reproduced the recorded next qpos exactly."""
        rec = self.rec
        stop = len(rec) if stop is None else stop
        spent = cpu = 0.0
        exact = 0
        for i in range(start, stop):
            j = rec.model_index[i]
            m, d = rec.models[j], self.datas[j]
            m.opt.timestep = rec.timesteps[i]
            mujoco.mj_setState(m, d, rec.states[i], STATE)
            c, t = time.thread_time(), time.perf_counter()
            mujoco.mj_step(m, d, nstep=rec.nsteps[i])
            spent += time.perf_counter() - t
            cpu += time.thread_time() - c
            exact += bool(np.array_equal(d.qpos, rec.qpos_after[i]))
        return {"seconds": spent, "cpu_seconds": cpu, "calls": stop - start, "exact": exact,
                "physics_steps": int(sum(rec.nsteps[start:stop]))}


def replay_rate(rec: PhysicsRecord) -> dict[str, Any]:
    """The whole record replayed once (see ``Replay.run``)."""
    return Replay(rec).run()


def same_work_ratio(make: Callable[[], Any], actions: np.ndarray, steps: int, seed: int = 0,
                    repeats: int = 3) -> dict[str, Any]:
    """Env time vs bare mj_step time on the same trajectory.

    Each repeat steps a fresh env and replays the recorded physics in alternating turns of
    ``CHUNK`` control steps. Returns the best env and ceiling control steps/s, the median over
    repeats of the per-repeat ratio (replay time / env time) in wall time (``ratio``) and in
    thread CPU time (``cpu_ratio``: not inflated by time the thread was descheduled), and the
    replay's exactness."""
    rec = record_env(make, actions, steps, seed)
    n = len(rec)  # mj_step calls: one per env step and env (resets do not step)
    per = n // steps  # a vector env makes one call per member env
    if per < 1 or per * steps != n:
        raise RuntimeError(f"{n} mj_step calls in {steps} steps: not a whole number per step")
    replay = Replay(rec)
    runs = []
    for _ in range(max(1, repeats)):
        env = make()
        tot = np.zeros(4)  # env wall, env cpu, replay wall, replay cpu
        exact = 0
        try:
            env.reset(seed=seed)
            for a in range(0, steps, CHUNK):
                b = min(steps, a + CHUNK)
                tot[:2] += _run_steps(env, actions, a, b)
                r = replay.run(a * per, b * per)
                tot[2:] += (r["seconds"], r["cpu_seconds"])
                exact += r["exact"]
        finally:
            env.close()
        runs.append((tot, exact))
    env_s = min(t[0] for t, _ in runs)
    raw_s = min(t[2] for t, _ in runs)
    return {"steps": steps, "env_rate": steps / env_s, "ceiling_rate": steps / raw_s,
            "ratio": float(np.median([t[2] / t[0] for t, _ in runs])),
            "cpu_ratio": float(np.median([t[3] / max(t[1], 1e-9) for t, _ in runs])),
            "ratios": [float(t[2] / t[0]) for t, _ in runs],
            "mj_step_calls": n, "replay_exact": min(x for _, x in runs),
            "models": len(rec.models),
            "physics_steps_per_s": int(sum(rec.nsteps)) / raw_s}
