"""``dex-sim-bench``: how close the training env runs to the physics ceiling, and how it compares
with gymnasium-robotics' HandManipulateBlock-v1 — all measured in ONE run, printed as ratios.

A benchmark script, not a timed test: every number is a rate measured now, on this machine, and
every verdict is a ratio against a reference measured in the same run. Each measurement runs
``--repeats`` times for ``--seconds``; best and median are printed (the machine may be shared:
the load average at the start is printed too).

What is measured (rates are steps per second of wall time, one process unless stated):
1. raw physics: ``mj_step(m, d, nstep=substeps)`` on HandCubeSim's model, default targets held,
   state restored every episode (``gymrob_probe.raw_physics_rate``, the same code the probe runs
   on gymnasium-robotics' model). Control ceiling = raw / substeps (registry: 40).
2. env: ``DexCubeEnv.step`` with auto-reset (resets counted), action "hold" (every bin = the
   middle one: targets unchanged, the same physics as 1.) and "random" (uniform bins, pre-drawn);
   without randomization and with ``TaskConfig(randomize=True)`` (every randomization). Also
   the share of env time spent inside ``HandCubeSim.step_control`` (measured in-run).
   Same-work ceiling (``dex_bringup.benchmarks.ceiling``; the goal verdict): the resting hand is the
   cheapest state the scene has, and randomized episodes (forces, drops, other masses) make
   every mj_step dearer, so each env configuration is also compared with bare ``mj_step``
   replayed from every state that configuration's run recorded (bit-exact replay checked),
   env and replay alternating every 25 control steps: env steps/s and ceiling steps/s (best of
   the repeats) and their ratio (median over the repeats, wall and CPU time). The same for the
   trainer's ``VecDexCubeEnv`` of ``VEC_ENVS`` members with full randomization.
3. vs gymnasium-robotics at EQUAL substeps (20 x 2 ms = 40 ms per env step, theirs): OUR
   ``DexCubeEnv`` with ``env.sim.substeps = 20`` — the full step path unchanged (action decode,
   mj_step x 20, mj_kinematics, trial judge/reward, policy and value observations, info) —
   against THEIR ``gym.make("HandManipulateBlock-v1")`` (TimeLimit 100 steps), run by
   ``gymrob_probe.py`` in its own venv (``scripts/bench_gym_robotics.sh``); one run of each
   side in turn per repeat, so machine-speed drift does not favour either. Hold vs their zero
   action (fixed posture), random vs random. Both raw ceilings printed: the two scenes differ
   (our hand model vs theirs), so physics cost differs too.
4. scaling: N processes (``--procs``, default cpu count) each stepping its own env (hold, no
   randomization) vs 1 process, and ``mujoco.rollout`` with N threads vs 1 (physics only).
5. ``--scene-variants``: the env of 3. on edited copies of our scene (``SCENE_VARIANTS``):
   gymnasium-robotics' pyramidal friction cones, then also its Euler integrator — what a
   cheaper contact model would buy against the same reference (not shipped: each changes the
   contact physics the default models were trained on) —, and the scene with one shipped
   speed choice undone (dense constraint Jacobian; broad-phase contacts instead of pairs);
   also the LEAP env on its shipped scene vs each of its shipped choices undone (sparse
   Jacobian, constraint islands off).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from dex_bringup.benchmarks.ceiling import same_work_ratio
from dex_bringup.benchmarks.gymrob_probe import raw_physics_rate, summarize

GOALS = {"env_vs_ceiling": 0.95, "vs_gymrob": 3.0, "scaling": 1.8}
GYMROB_SUBSTEPS = 20  # HandManipulateBlock-v1: n_substeps 20 x 2 ms = 40 ms per env step


def repeat(fn: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Run ``fn`` ``repeats`` times and summarize its ``rate`` (wall) and ``cpu_rate`` (per
    CPU-second of the measuring thread; absent for multi-thread work); the other fields of the
    best run are kept."""
    return summarize_runs([fn() for _ in range(max(1, repeats))])


def summarize_runs(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """``repeat``'s summary of runs already made."""
    rates = [float(o["rate"]) for o in outs]
    cpu = [float(o["cpu_rate"]) for o in outs if "cpu_rate" in o]
    best = outs[int(np.argmax(rates))]
    extra = {k: v for k, v in best.items() if k not in ("rate", "cpu_rate")}
    return {**extra, **summarize(rates, cpu or None)}


def _ratio(a: dict[str, Any], b: dict[str, Any], scale: float = 1.0) -> dict[str, float]:
    """a / b for best, median (wall) and cpu_best / cpu_median where both have them."""
    return {q: a[q] / (b[q] * scale) for q in ("best", "median", "cpu_best", "cpu_median")
            if q in a and q in b}


# ---- our scene ---------------------------------------------------------------------------------
def make_env(randomize: bool = False, substeps: int | None = None, seed: int = 0,
             hand: str = "shadow") -> Any:
    """A DexCubeEnv (full Dactyl randomization when ``randomize``); ``substeps`` overrides
    HandCubeSim's per-control-step mj_step count."""
    from dex_sim.env import DexCubeEnv, TaskConfig

    env = DexCubeEnv(hand, seed=seed, task=TaskConfig(randomize=randomize))
    if substeps is not None:
        env.sim.substeps = int(substeps)
    return env


def _actions(env: Any, action: str, seed: int = 0, members: int | None = None) -> np.ndarray:
    """Pre-drawn actions, one row per step (cycled): ``(k, n_actuators)``, or
    ``(k, members, n_actuators)`` for a vector env."""
    n, bins = env.n_actuators, env.bins
    shape = (n,) if members is None else (members, n)
    if action == "hold":
        return np.full((1, *shape), bins // 2)
    if action == "random":
        return np.random.default_rng(seed).integers(0, bins, size=(1024, *shape))
    raise ValueError(f"action must be 'hold' or 'random'; got {action!r}")


def raw_rate(seconds: float, substeps: int | None = None, hand: str = "shadow") -> dict[str, Any]:
    """Physics steps/s of our scene (HandCubeSim model, default targets held)."""
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim(hand, render=False)
    k = int(substeps or sim.substeps)
    sim.reset(0)
    episode = max(1, round(8.0 / (k * sim.model.opt.timestep)))
    wall, cpu = raw_physics_rate(sim.model, sim.data, k, episode, seconds)
    sim.close()
    return {"rate": wall, "cpu_rate": cpu, "substeps": k}


def env_rate(env: Any, seconds: float, action: str = "hold", seed: int = 0) -> dict[str, Any]:
    """Env control steps/s (auto-reset; resets timed) and the share spent in step_control."""
    acts = _actions(env, action, seed)
    sim = env.sim
    inner = type(sim).step_control
    spent = [0.0]

    def timed(*a: Any, **kw: Any) -> None:
        t = time.perf_counter()
        inner(sim, *a, **kw)
        spent[0] += time.perf_counter() - t

    sim.step_control = timed  # instance attribute: this env only
    try:
        env.reset(seed=seed)
        n, k, episodes, ends = 0, len(acts), 0, {}
        c0, t0 = time.thread_time(), time.perf_counter()
        deadline = t0 + seconds
        while True:
            _, _, term, trunc, info = env.step(acts[n % k])
            n += 1
            if term or trunc:
                episodes += 1
                ends[info["end_reason"]] = ends.get(info["end_reason"], 0) + 1
                env.reset()
            if time.perf_counter() >= deadline:
                break
        dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    finally:
        del sim.step_control
    return {"rate": n / dt, "cpu_rate": n / max(cpu, 1e-9), "physics_share": spent[0] / dt,
            "steps": n,
            "episodes_ended": episodes, "end_reasons": ends}


VEC_ENVS = 8  # members of the vector env measured (VecDexCubeEnv: the trainer's env's engine)
SAME_WORK = (("env_hold", "hold", False), ("env_random", "random", False),
             ("env_rand_hold", "hold", True), ("env_rand_random", "random", True))


def same_work(action: str, randomize: bool, steps: int, repeats: int) -> dict[str, Any]:
    """Env control steps/s vs bare mj_step on the same trajectory (``dex_bringup.benchmarks.ceiling``)."""
    probe = make_env(randomize=randomize)
    acts = _actions(probe, action)
    probe.close()
    return same_work_ratio(lambda: make_env(randomize=randomize), acts, steps, repeats=repeats)


class VecAsEnv:
    """``VecDexCubeEnv`` behind the single-env calls ``dex_bringup.benchmarks.ceiling`` makes (``reset``,
    ``step`` -> 5-tuple); it auto-resets its members itself, so ``step`` never reports an end."""

    def __init__(self, n: int, randomize: bool, seed: int = 0) -> None:
        from dex_sim.env import TaskConfig, VecDexCubeEnv

        self.vec = VecDexCubeEnv(n, seed=seed, task=TaskConfig(randomize=randomize))

    def reset(self, seed: int | None = None) -> tuple[None, dict]:
        self.vec.reset()  # member seeds are fixed at construction
        return None, {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, bool, dict]:
        obs, _, rew, _, _, _ = self.vec.step(actions)
        return obs, rew, False, False, {}

    def close(self) -> None:
        self.vec.close()


def same_work_vec(action: str, randomize: bool, steps: int, repeats: int, n: int
                  ) -> dict[str, Any]:
    """``same_work`` for ``VecDexCubeEnv(n)`` (the trainer's env): ``steps`` env steps in all,
    ``steps // n`` vector steps; rates are env steps/s (all members)."""
    probe = make_env()
    acts = _actions(probe, action, members=n)
    probe.close()
    vsteps = max(1, steps // n)
    r = same_work_ratio(lambda: VecAsEnv(n, randomize), acts, vsteps, repeats=repeats)
    return {**r, "n_envs": n, "env_rate": r["env_rate"] * n, "ceiling_rate": r["ceiling_rate"] * n}


def gym_vector_rates(seconds: float, repeats: int, n: int = VEC_ENVS) -> dict[str, Any]:
    """Env steps/s (all members) of ``n`` envs, full randomization, random actions, under
    gymnasium's vector API: ``DexCubeVectorEnv`` (the batched step) vs gymnasium's
    ``SyncVectorEnv`` of the same envs (stepped one by one), runs alternating."""
    import functools

    import gymnasium as gym

    from dex_sim.env import DexCubeEnv, DexCubeVectorEnv, TaskConfig

    task = TaskConfig(randomize=True)
    envs = {"DexCubeVectorEnv": DexCubeVectorEnv(n, task=task),
            "SyncVectorEnv": gym.vector.SyncVectorEnv(
                [functools.partial(DexCubeEnv, seed=i, task=task) for i in range(n)])}
    probe = make_env()
    acts = _actions(probe, "random", members=n)
    probe.close()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in envs}
    try:
        for _ in range(max(1, repeats)):
            for name, v in envs.items():
                v.reset(seed=0)
                i = 0
                c0, t0 = time.thread_time(), time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    v.step(acts[i % len(acts)])
                    i += 1
                dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
                runs[name].append({"rate": i * n / dt, "cpu_rate": i * n / max(cpu, 1e-9)})
    finally:
        for v in envs.values():
            v.close()
    out: dict[str, Any] = {k: summarize_runs(r) for k, r in runs.items()}
    out["n_envs"] = n
    out["speedup"] = _ratio(out["DexCubeVectorEnv"], out["SyncVectorEnv"])
    return out


def our_env(seconds: float, repeats: int, action: str, randomize: bool = False,
            substeps: int | None = None) -> dict[str, Any]:
    env = make_env(randomize=randomize, substeps=substeps)
    try:
        return repeat(lambda: env_rate(env, seconds, action), repeats)
    finally:
        env.close()


# ---- scene variants ----------------------------------------------------------------------------
Edits = tuple[tuple[str, str], ...]
_PYRAMIDAL = ('cone="elliptic"', 'cone="pyramidal"')
_EULER = ('integrator="implicitfast"', 'integrator="Euler"')
_DENSE = (' jacobian="sparse"', "")
_ISLANDS = (' island="disable"', "")
# name -> (MJCF text edits (old, new), each must match; contacts: build_mjcf's mode). The first
# two are gymnasium-robotics' cheaper contact model; the others undo one shipped choice each.
SCENE_VARIANTS: dict[str, tuple[Edits, str]] = {
    "pyramidal cones": ((_PYRAMIDAL,), "pairs"),
    "pyramidal + Euler": ((_PYRAMIDAL, _EULER), "pairs"),
    "dense Jacobian (MuJoCo's auto)": ((_DENSE,), "pairs"),
    "constraint islands (MuJoCo's default)": ((_ISLANDS,), "pairs"),
    "broad-phase contacts": ((), "auto"),
}


@contextlib.contextmanager
def scene_variant(edits: Edits, contacts: str = "pairs", hand: str = "shadow") -> Iterator[None]:
    """HandCubeSims built inside load the generated scene (``build_mjcf(hand, contacts)``; the
    shipped file for "pairs") with ``edits`` applied."""
    from dex_description.generate import build_mjcf
    from dex_description.paths import scene_xml
    from dex_description.registry import get_hand
    from dex_sim import physics

    xml = (Path(scene_xml(hand)).read_text() if contacts == "pairs"
           else build_mjcf(get_hand(hand), contacts))
    for old, new in edits:
        if old not in xml:
            raise ValueError(f"scene variant edit {old!r} does not match the generated MJCF")
        xml = xml.replace(old, new)
    plain = physics.load_model
    physics.load_model = lambda h: mujoco.MjModel.from_xml_string(xml)  # type: ignore[assignment]
    try:
        yield
    finally:
        physics.load_model = plain  # type: ignore[assignment]


def variant_rates(seconds: float, repeats: int) -> dict[str, dict[str, Any]]:
    """Env steps/s at gymnasium-robotics' 20 substeps on each ``SCENE_VARIANTS`` scene."""
    out = {}
    for name, (edits, contacts) in SCENE_VARIANTS.items():
        with scene_variant(edits, contacts=contacts):
            out[name] = {a: our_env(seconds, repeats, a, substeps=GYMROB_SUBSTEPS)
                         for a in ("hold", "random")}
    return out


# The LEAP scene's shipped choices, each undone (``generate.DESCRIPTIONS``: jacobian, islands).
LEAP_VARIANTS: dict[str, Edits] = {
    "sparse Jacobian": ((' jacobian="dense"', ' jacobian="sparse"'),),
    "islands off": (('<flag warmstart="enable"/>', '<flag warmstart="enable" island="disable"/>'),),
}


def leap_scene_rates(seconds: float, repeats: int) -> dict[str, dict[str, Any]]:
    """LEAP env steps/s (registry substeps, no randomization) on its shipped scene and with
    each shipped choice undone (``LEAP_VARIANTS``), runs alternating: the check behind
    ``dex_description.generate.DESCRIPTIONS`` for LEAP (jacobian, islands)."""
    envs = {}
    for name, edits in (("shipped", ()), *LEAP_VARIANTS.items()):
        with scene_variant(edits, hand="leap"):
            envs[name] = make_env(hand="leap")
    runs: dict[str, dict[str, list]] = {n: {"hold": [], "random": []} for n in envs}
    try:
        for _ in range(max(1, repeats)):
            for a in ("hold", "random"):
                for name, env in envs.items():
                    runs[name][a].append(env_rate(env, seconds, a))
    finally:
        for env in envs.values():
            env.close()
    return {n: {a: summarize_runs(r) for a, r in by.items()} for n, by in runs.items()}


# ---- scaling -----------------------------------------------------------------------------------
def _proc_worker(seconds: float, ready: Any, go: Any, out: Any) -> None:
    env = make_env()
    env_rate(env, 0.05)  # warm up
    ready.release()
    go.wait()
    r = env_rate(env, seconds)
    out.put((r["rate"], r["cpu_rate"]))
    env.close()


def process_rate(nproc: int, seconds: float) -> tuple[float, float]:
    """Total env steps/s of ``nproc`` processes, each stepping its own env (hold action): (wall,
    sum of each worker's steps per CPU-second). The second would scale by ``nproc`` even on a
    busy machine if the processes did not slow each other (caches, memory bandwidth)."""
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_proc_worker, args=(seconds, ready, go, out), daemon=True)
             for _ in range(nproc)]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=120):
            raise RuntimeError("a benchmark worker did not start")
    go.set()
    got = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return sum(w for w, _ in got), sum(c for _, c in got)


def rollout_rate(nthread: int, seconds: float, hand: str = "shadow") -> dict[str, float]:
    """Physics steps/s of ``mujoco.rollout`` (default targets held) with ``nthread`` threads.

    Work per call: 8 rollouts of 1 s of sim time each (the same for 1 and N threads), from the
    reset state; calls repeat until ``seconds`` pass."""
    from mujoco import rollout

    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim(hand, render=False)
    m, d = sim.model, sim.data
    sim.reset(0)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    s0 = np.empty(mujoco.mj_stateSize(m, spec))
    mujoco.mj_getState(m, d, s0, spec)
    nbatch, nstep = 8, round(1.0 / m.opt.timestep)
    ctrl = np.tile(d.ctrl, (nbatch, 1, 1))
    datas = [mujoco.MjData(m) for _ in range(nthread)]
    state = np.empty((nbatch, nstep, s0.size))
    sens = np.empty((nbatch, nstep, m.nsensordata))
    n = 0
    with rollout.Rollout(nthread=nthread if nthread > 1 else 0) as r:
        t0 = time.perf_counter()
        while True:
            r.rollout([m] * nbatch, datas, np.tile(s0, (nbatch, 1)), ctrl, nstep=nstep,
                      state=state, sensordata=sens)
            n += nbatch * nstep
            if time.perf_counter() - t0 >= seconds:
                break
        dt = time.perf_counter() - t0
    sim.close()
    return {"rate": n / dt}


# ---- gymnasium-robotics --------------------------------------------------------------------------
def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def gymrob(seconds: float, repeats: int, script: Path | None = None,
           timeout: float = 900.0) -> dict[str, Any]:
    """Run the probe in the gymnasium-robotics venv (built on first use); ``{"error": why}``
    when it cannot run."""
    script = script or repo_root() / "scripts" / "bench_gym_robotics.sh"
    if not script.exists():
        return {"error": f"{script} not found (installed outside the source tree?)"}
    cmd = ["bash", str(script), "--seconds", str(seconds), "--repeats", str(repeats)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{' '.join(cmd)} timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = [ln for ln in (p.stderr or "").splitlines() if not ln.startswith("WARNING")]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail[-4:])}
    return json.loads(lines[-1])


def merge_probes(probes: list[dict[str, Any]]) -> dict[str, Any]:
    """One probe result from several single-repeat ones: rate summaries over all their runs."""
    bad = [p for p in probes if "error" in p]
    if bad or not probes:
        return bad[0] if bad else {"error": "no probe runs"}
    out = dict(probes[0])
    for key in ("env_zero", "env_random", "raw_physics"):
        runs = [r for p in probes for r in p[key]["runs"]]
        cpu = [r for p in probes for r in p[key].get("cpu_runs", [])]
        out[key] = summarize(runs, cpu or None)
    k = out["n_substeps"]
    out["control_ceiling"] = {q: out["raw_physics"][q] / k
                              for q in ("best", "median", "cpu_best", "cpu_median")}
    out["repeats"] = len(probes)
    return out


def equal_substeps_vs_gymrob(seconds: float, repeats: int, skip_gymrob: bool = False
                             ) -> dict[str, Any]:
    """Our env at 20 substeps (hold, random) and the gymnasium-robotics probe, one run of each
    in turn per repeat: the machine's speed drifts on a shared host, and the ratio should not
    depend on which side ran first."""
    env = make_env(substeps=GYMROB_SUBSTEPS)
    hold, rand, probes = [], [], []
    try:
        for _ in range(max(1, repeats)):
            hold.append(env_rate(env, seconds, "hold"))
            rand.append(env_rate(env, seconds, "random"))
            if not skip_gymrob:
                probes.append(gymrob(seconds, 1))
                if "error" in probes[-1]:
                    break
    finally:
        env.close()
    return {"env20_hold": summarize_runs(hold), "env20_random": summarize_runs(rand),
            "gymrob": ({"error": "skipped (--skip-gymrob)"} if skip_gymrob
                       else merge_probes(probes))}


# ---- the whole run ---------------------------------------------------------------------------------
def run(seconds: float = 3.0, repeats: int = 3, procs: int | None = None,
        skip_gymrob: bool = False, skip_scaling: bool = False, scene_variants: bool = False,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    log = log or (lambda s: None)
    procs = procs or os.cpu_count() or 1
    res: dict[str, Any] = {
        "load_average_start": os.getloadavg(), "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0], "mujoco": mujoco.__version__,
        "machine": platform.processor() or platform.machine(),
        "seconds": seconds, "repeats": repeats, "goals": GOALS,
    }
    log("raw physics (registry substeps)")
    raw = repeat(lambda: raw_rate(seconds), repeats)
    k = raw["substeps"]
    res["raw"] = raw
    res["ceiling"] = _ratio(raw, {q: 1.0 for q in raw}, k)

    for name, action, rand in (("env_hold", "hold", False), ("env_random", "random", False),
                               ("env_rand_hold", "hold", True),
                               ("env_rand_random", "random", True)):
        log(f"{name}")
        res[name] = our_env(seconds, repeats, action, randomize=rand)
    for name in ("env_hold", "env_rand_hold"):
        r = res[name]
        if "best" in r:
            r["ratio_to_ceiling"] = _ratio(r, res["ceiling"])
    steps = max(50, round(seconds * 250))
    for name, action, rand in SAME_WORK:
        log(f"{name}: same-work ceiling ({steps} steps, replayed)")
        res[f"{name}_same_work"] = same_work(action, rand, steps, repeats)
    for name, action, rand in SAME_WORK[2:]:
        log(f"vec{VEC_ENVS}_{name[4:]}: same-work ceiling ({steps} env steps, replayed)")
        res[f"vec_{name}_same_work"] = same_work_vec(action, rand, steps, repeats, VEC_ENVS)
    log(f"gymnasium vector API, {VEC_ENVS} envs: DexCubeVectorEnv vs SyncVectorEnv")
    res["gym_vector"] = gym_vector_rates(seconds, repeats)

    log("equal substeps (20)")
    raw20 = repeat(lambda: raw_rate(seconds, GYMROB_SUBSTEPS), repeats)
    res["raw20"] = raw20
    res["ceiling20"] = _ratio(raw20, {q: 1.0 for q in raw20}, GYMROB_SUBSTEPS)
    if not skip_gymrob:
        log("ours vs gymnasium-robotics (own venv), runs alternating")
    res.update(equal_substeps_vs_gymrob(seconds, repeats, skip_gymrob))
    g = res["gymrob"]
    if "error" not in g:
        res["vs_gymrob"] = {
            f"{ours}_vs_{theirs}": _ratio(res[ours], g[theirs])
            for ours, theirs in (("env20_hold", "env_zero"), ("env20_random", "env_random"))}
        res["vs_gymrob"]["raw_physics"] = _ratio(raw20, g["raw_physics"])
    if scene_variants:
        log("scene variants (20 substeps)")
        res["variants"] = variant_rates(seconds, repeats)
        log("LEAP: dense vs sparse constraint Jacobian")
        res["leap_scene"] = leap_scene_rates(seconds, repeats)

    if skip_scaling:
        res["procs"] = res["rollout"] = {"error": "skipped (--skip-scaling)"}
        res["load_average_end"] = os.getloadavg()
        return res
    log(f"scaling: {procs} processes vs 1")
    one: list[tuple[float, float]] = []
    many: list[tuple[float, float]] = []
    for _ in range(max(1, repeats)):  # interleaved, so both see similar machine load
        one.append(process_rate(1, seconds))
        many.append(process_rate(procs, seconds))
    s1 = summarize([w for w, _ in one], [c for _, c in one])
    sn = summarize([w for w, _ in many], [c for _, c in many])
    res["procs"] = {"n": procs, "one": s1, "many": sn, "speedup": _ratio(sn, s1)}
    log(f"scaling: mujoco.rollout {procs} threads vs 1")
    try:
        t1 = repeat(lambda: rollout_rate(1, seconds), repeats)
        tn = repeat(lambda: rollout_rate(procs, seconds), repeats)
        res["rollout"] = {"n": procs, "one": t1, "many": tn,
                          "speedup": _ratio(tn, t1)}
    except Exception as e:  # rollout API differs across mujoco versions
        res["rollout"] = {"error": f"{type(e).__name__}: {e}"}
    res["load_average_end"] = os.getloadavg()
    return res


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def format_table(res: dict[str, Any]) -> str:
    """The human-readable table (rates: best / median wall-clock, best per CPU-second)."""
    rows: list[tuple[str, ...]] = []

    def row(label: str, r: dict[str, Any] | None, note: str = "") -> None:
        if r is None:
            return
        if "error" in r:
            rows.append((label, r["error"]))
            return
        rows.append((label, _fmt(r["best"]), _fmt(r["median"]), _fmt(r.get("cpu_best")), note))

    def ratio(r: dict[str, Any], goal: float | None = None, as_pct: bool = False) -> str:
        f = (lambda v: f"{v:.0%}") if as_pct else (lambda v: f"{v:.2f}x")
        s = f"{f(r['best'])} best / {f(r['median'])} median"
        if "cpu_best" in r:
            s += f" / {f(r['cpu_best'])} cpu"
        if goal is not None:
            s += f" (goal >= {f(goal)})"
        return s

    k = res["raw"]["substeps"]
    row("raw mj_step, physics steps/s", res["raw"])
    row(f"control ceiling = raw / {k}", res["ceiling"], "control steps/s")
    for name, label in (("env_hold", "env, no rand, hold"), ("env_random", "env, no rand, random"),
                        ("env_rand_hold", "env, full rand, hold"),
                        ("env_rand_random", "env, full rand, random")):
        r = res[name]
        note = ""
        if "ratio_to_ceiling" in r:
            note = "of ceiling: " + ratio(r["ratio_to_ceiling"], GOALS["env_vs_ceiling"], True)
        if "physics_share" in r:
            note += ("; " if note else "") + f"{r['physics_share']:.0%} in step_control"
        row(label, r, note)
    rows.append(("-- vs the ceiling on the SAME trajectory: bare mj_step replayed from every "
                 "recorded state --",))
    for name, label in (("env_hold", "env, no rand, hold"),
                        ("env_random", "env, no rand, random"),
                        ("env_rand_hold", "env, full rand, hold"),
                        ("env_rand_random", "env, full rand, random"),
                        ("vec_env_rand_hold", f"{VEC_ENVS} envs (VecDexCubeEnv), full rand, hold"),
                        ("vec_env_rand_random",
                         f"{VEC_ENVS} envs (VecDexCubeEnv), full rand, random")):
        w = res.get(f"{name}_same_work")
        if w is None:
            continue
        rows.append((f"{label}: env | same-work ceiling", _fmt(w["env_rate"]),
                     "", _fmt(w["ceiling_rate"]),
                     f"env = {w['ratio']:.1%} of ceiling ({w['cpu_ratio']:.1%} in CPU time; goal "
                     f">= {GOALS['env_vs_ceiling']:.0%}); "
                     f"replay exact {w['replay_exact']}/{w['mj_step_calls']}, "
                     f"{w['models']} model(s)"))
    gv = res.get("gym_vector")
    if gv:
        label = f"gymnasium vector API, {gv['n_envs']} envs, full rand, random"
        row(f"{label}: DexCubeVectorEnv", gv["DexCubeVectorEnv"],
            "vs SyncVectorEnv " + ratio(gv["speedup"]))
        row(f"{label}: SyncVectorEnv", gv["SyncVectorEnv"])
    rows.append(("-- equal substeps: 20 x 2 ms = 40 ms per env step --",))
    row("ours: raw mj_step, physics steps/s", res["raw20"])
    row("ours: control ceiling = raw / 20", res["ceiling20"])
    for name, label in (("env20_hold", "ours: env (substeps=20), hold"),
                        ("env20_random", "ours: env (substeps=20), random")):
        r = res[name]
        row(label, r, f"{r['physics_share']:.0%} in step_control; of ceiling: "
            + ratio(_ratio(r, res["ceiling20"]), as_pct=True))
    g = res["gymrob"]
    if "error" in g:
        rows.append(("gymnasium-robotics", g["error"]))
    else:
        v = g["versions"]
        row("theirs: raw mj_step, physics steps/s", g["raw_physics"],
            f"mujoco {v['mujoco']}, gymnasium-robotics {v['gymnasium_robotics']}, "
            f"gymnasium {v['gymnasium']}")
        row("theirs: control ceiling = raw / 20", g["control_ceiling"])
        row(f"theirs: {g['env_id']}, zero action", g["env_zero"],
            "of ceiling: " + ratio(_ratio(g["env_zero"], g["control_ceiling"]), as_pct=True))
        row(f"theirs: {g['env_id']}, random", g["env_random"])
        vs = res["vs_gymrob"]
        rows.append(("ours / theirs, env: hold vs zero action", "", "", "",
                     ratio(vs["env20_hold_vs_env_zero"], GOALS["vs_gymrob"])))
        rows.append(("ours / theirs, env: random vs random", "", "", "",
                     ratio(vs["env20_random_vs_env_random"], GOALS["vs_gymrob"])))
        rows.append(("ours / theirs, raw physics (scene cost)", "", "", "",
                     ratio(vs["raw_physics"])))
    for name, v in res.get("variants", {}).items():
        for a, theirs in (("hold", "env_zero"), ("random", "env_random")):
            row(f"ours, variant: {name}, {a}", v[a], "" if "error" in g else
                "vs theirs " + ratio(_ratio(v[a], g[theirs]), GOALS["vs_gymrob"]))
    ls = res.get("leap_scene")
    if ls:
        for a in ("hold", "random"):
            for name, v in ls.items():
                row(f"LEAP env, {name} scene, {a}", v[a], "" if name != "shipped" else
                    "; ".join(f"vs {k} " + ratio(_ratio(v[a], ls[k][a]))
                              for k in ls if k != "shipped"))
    p = res["procs"]
    rows.append((f"-- scaling on {res['cpu_count']} cores --",))
    if "error" in p:
        rows.append(("env processes", p["error"]))
    else:
        row("env, 1 process, steps/s", p["one"])
        row(f"env, {p['n']} processes, total steps/s", p["many"],
            "speed-up " + ratio(p["speedup"], GOALS["scaling"]))
    ro = res["rollout"]
    if "error" in ro:
        rows.append(("mujoco.rollout", ro["error"]))
    else:
        row("mujoco.rollout 1 thread, physics steps/s", ro["one"])
        row(f"mujoco.rollout {ro['n']} threads, physics steps/s", ro["many"],
            "speed-up " + ratio(ro["speedup"], GOALS["scaling"]))

    busy = res["load_average_start"][0]
    if "error" not in p and busy >= 0.5 and res["cpu_count"]:
        rows.append((f"   note: load average {busy:.2f} at start on {res['cpu_count']} cores: "
                     "other jobs share the cores, so the wall speed-up is a lower bound; "
                     "'cpu' = speed-up in steps per CPU-second (no cross-process slowdown "
                     "when ~N)",))
    w = max(len(r[0]) for r in rows if len(r) > 1)
    la = ", ".join(f"{x:.2f}" for x in res["load_average_start"])
    le = ", ".join(f"{x:.2f}" for x in res.get("load_average_end", res["load_average_start"]))
    out = [f"dex-sim-bench: {res['seconds']:g} s x {res['repeats']} per measurement, "
           f"{res['cpu_count']} cpus, mujoco {res['mujoco']}, python {res['python']}",
           f"load average at start: {la}; at end: {le}",
           "rates in steps/s: best and median wall-clock over the repeats; cpu = best per "
           "CPU-second of the measuring thread (less sensitive to other jobs)",
           f"{'measurement':<{w}}  {'best':>9}  {'median':>9}  {'cpu':>9}  note"]
    for r in rows:
        if len(r) == 1:
            out.append(r[0])
        elif len(r) == 2:
            out.append(f"{r[0]:<{w}}  {r[1]}")  # an error / n/a message
        else:
            out.append(f"{r[0]:<{w}}  {r[1]:>9}  {r[2]:>9}  {r[3]:>9}  {r[4]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dex-sim-bench",
                                 description="How close DexCubeEnv runs to its physics ceiling, vs gymnasium-robotics "
                                 "HandManipulateBlock-v1, and how it scales (ratios measured in one run).")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement run (default 3)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (default 3)")
    ap.add_argument("--procs", type=int, default=None, help="processes/threads (default: cpus)")
    ap.add_argument("--skip-gymrob", action="store_true",
                    help="do not build/run the gymnasium-robotics reference")
    ap.add_argument("--skip-scaling", action="store_true",
                    help="skip the multi-process / mujoco.rollout scaling runs")
    ap.add_argument("--scene-variants", action="store_true",
                    help="also time the env on cheaper contact models (SCENE_VARIANTS) at 20 "
                         "substeps against gymnasium-robotics")
    ap.add_argument("--json", type=Path, default=None, help="also write all results here")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        ap.error("--seconds must be > 0 and --repeats >= 1")
    res = run(args.seconds, args.repeats, args.procs, args.skip_gymrob, args.skip_scaling,
              args.scene_variants, log=lambda s: print(f"[dex-sim-bench] {s} ...", file=sys.stderr, flush=True))
    print(format_table(res))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
