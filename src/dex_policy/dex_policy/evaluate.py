"""Evaluate a controller in the training env (state mode): ``dex-policy-eval --trials N``.

Controllers: the ONNX policy (``--controller onnx``, the node's runtime; default), the sampling-MPC
teacher (``mpc``), and the floors ``zero`` (hold) and ``random``. Trials use seeds
``seed + trial`` (the node uses the same seeds). Prints Dactyl's Table-3 format — consecutive
successes mean ± sd, median, and the sorted per-trial counts — with the trial rules stated (goal
rule, success threshold, goal timeout, randomization), plus the per-trial table; writes the result
as JSON and a PNG (histogram, successes per trial).

Long evaluations resume: the JSON is rewritten after every trial (``"partial": true`` until the
last), with the decision times beside it (``<json>.timing.npz``); ``--resume`` keeps the trials
already in it — when it was written with the same controller, hand, seeds and rules — and runs
only the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dex_common.actions import BINS, EMA, LEGACY_MAX_DELTA
from dex_common.trial import GOAL_RULES
from dex_common.trial_summary import plot, summarize
from dex_common.workers import ADDRESS_HELP, WorkerPool
from dex_policy.controllers import (
    Controller,
    HoldController,
    MeasuredMPCController,
    MPCController,
    OnnxPolicyController,
    RandomController,
)
from dex_policy.mpc import MPCConfig, add_mpc_options, goal_up_axis, mpc_config_of, rotate
from dex_sim.env import DexCubeEnv, TaskConfig

CONTROLLERS = ("onnx", "mpc", "mpc-measured", "zero", "random")


def run_trial(env: DexCubeEnv, controller: Controller, seed: int,
              max_steps: int | None = None) -> dict[str, Any]:
    """One trial from ``env.reset(seed)`` until it ends (or ``max_steps``, reported as 'cap').
    A trial that ends by a timeout or a drop also says how its last goal was missed
    (``last_goal``: the closest the cube came, where it ended, and how much of that is the
    goal's up face off vertical; the rest is a turn about the vertical)."""
    obs, info = env.reset(seed=seed)
    controller.reset(env)
    steps, closest = 0, math.inf
    while True:
        obs, _, term, trunc, info = controller.step(env, obs)
        steps += 1
        ev = env.tracker.last_event
        closest = math.inf if ev.goal_changed else min(closest, ev.rotation_error)
        if term or trunc or (max_steps is not None and steps >= max_steps):
            row = {"seed": seed, "successes": info["successes"],
                   "end_reason": info["end_reason"] or "cap", "steps": steps}
            if ev.end_reason in ("timeout", "dropped"):
                up = rotate(env.sim.cube_pose()[1], goal_up_axis(ev.goal))[2]
                row["last_goal"] = {"closest_rad": round(closest, 4),
                                    "final_rad": round(ev.rotation_error, 4),
                                    "up_face_off_rad": round(math.acos(max(-1.0, min(1.0, up))),
                                                             4)}
            return row


def evaluate(controller: Controller | str | Path, hand: str = "shadow", trials: int = 10,
             seed: int = 0, progress: bool = True, env: DexCubeEnv | None = None,
             task: TaskConfig | None = None, max_steps: int | None = None,
             record: EvalRecord | None = None) -> dict[str, Any]:
    """Run ``trials`` trials of ``controller`` (a Controller, or an ONNX model path); returns
    {"rows": [...], "summary": {...}, "rules": {...}, ...}. ``record``: the resumable result
    file (its trials are not run again; each new one is saved as it ends)."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    env = env or DexCubeEnv(hand, task=task)
    if isinstance(controller, (str, Path)):
        controller = OnnxPolicyController(controller, hand)
    record = record or EvalRecord(None)
    record.begin(_setup(controller.describe(), env, hand, seed, max_steps), trials)
    t0 = time.perf_counter()
    with tqdm(total=trials, initial=len(record.rows), desc=f"eval {controller.name}",
              unit="trial", disable=not progress) as bar:
        for i in record.todo(trials):
            controller.timing.reset()
            row = {"trial": i, **run_trial(env, controller, seed + i, max_steps)}
            record.add(row, controller.timing.values(), time.perf_counter() - t0)
            t0 = time.perf_counter()
            bar.update()
            _progress(bar, record.rows)
    return record.finish()


@dataclass(frozen=True)
class ControllerSpec:
    """How to build a controller in another process (``evaluate_parallel``'s workers)."""

    name: str
    model: str = ""
    seed: int = 0
    mpc: MPCConfig | None = None


_WORKER: tuple[DexCubeEnv, Controller] | None = None  # a worker process's env and controller


def _worker_init(spec: ControllerSpec, hand: str, task: TaskConfig | None) -> None:
    global _WORKER
    env = DexCubeEnv(hand, task=task)
    mpc = replace(spec.mpc or MPCConfig(), threads=1)  # parallel over trials, not rollouts
    _WORKER = (env, build_controller(spec.name, env, spec.model, spec.seed, mpc))


def _worker_describe(_: object = None) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER[1].describe()


def _worker_trial(job: tuple[int, int, int | None]) -> tuple[dict[str, Any], list[float]]:
    assert _WORKER is not None
    env, controller = _WORKER
    i, seed, max_steps = job
    controller.timing.reset()
    row = {"trial": i, **run_trial(env, controller, seed, max_steps)}
    return row, controller.timing.values()


def evaluate_parallel(spec: ControllerSpec, hand: str, trials: int, seed: int = 0,
                      workers: int = 2, task: TaskConfig | None = None,
                      max_steps: int | None = None, progress: bool = True,
                      ray_address: str | None = None,
                      record: EvalRecord | None = None) -> dict[str, Any]:
    """``evaluate`` with the trials spread over ``workers`` Ray workers (one planning thread
    each; a local runtime, or the cluster at ``ray_address``): trials are independent and
    seeded, so the rows are the serial run's."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    env = DexCubeEnv(hand, task=task)  # the rules for the result
    record = record or EvalRecord(None)
    t0 = time.perf_counter()
    with WorkerPool(min(workers, trials), _worker_init, (spec, hand, task),
                    address=ray_address) as pool:
        describe = pool.call(_worker_describe)  # as the workers run it (one thread)
        record.begin(_setup({**describe, "workers": workers}, env, hand, seed, max_steps),
                     trials)
        jobs = [(i, seed + i, max_steps) for i in record.todo(trials)]
        with tqdm(total=trials, initial=len(record.rows), unit="trial",
                  desc=f"eval {spec.name} ({workers} workers)", disable=not progress) as bar:
            for row, times in pool.imap_unordered(_worker_trial, jobs):
                # the wall time since the last trial ended: the sum is the run's wall time
                record.add(row, times, time.perf_counter() - t0)
                t0 = time.perf_counter()
                bar.update()
                _progress(bar, record.rows)
    return record.finish()


def _progress(bar: tqdm, rows: list[dict[str, Any]]) -> None:
    s = np.array([r["successes"] for r in rows])
    bar.set_postfix(mean=f"{s.mean():.1f}", median=f"{np.median(s):.1f}")


def _setup(described: dict[str, Any], env: DexCubeEnv, hand: str, seed: int,
           max_steps: int | None) -> dict[str, Any]:
    """What a result was measured with: the controller, hand, seeds and trial rules."""
    t = env.task
    tc = env.tracker.config
    return {**described, "hand": hand, "mode": "state", "seed": seed,
            "rules": {"goal_rule": tc.goal_rule, "success_threshold_rad": tc.success_threshold,
                      "goals_per_trial": tc.goals_per_trial, "goal_timeout_s": tc.goal_timeout_s,
                      "randomize": sorted(t.enabled), "max_steps": max_steps},
            # a model acts through its own contract's decoder; the rest through the env's
            "action": described.get("action") or env.decoder.scale(),
            "control_period_s": env.hand_spec.control_period}


# Files written before the action scale was recorded ran every hand at these.
_LEGACY_ACTION = {"bins": BINS, "max_delta": LEGACY_MAX_DELTA, "ema": EMA}


# What may differ between the sessions of one resumed evaluation (how it ran, not what).
_RUN_KEYS = ("workers", "threads")


class EvalRecord:
    """An evaluation's result file, rewritten atomically after every trial so a long run
    (e.g. 50 uncapped teacher trials) resumes where it stopped; ``path`` None keeps it in
    memory. The decision times go beside it (``<path>.timing.npz``, one array per trial)."""

    def __init__(self, path: str | Path | None, resume: bool = False) -> None:
        self.path = None if path is None else Path(path)
        self.resume = resume
        self.setup: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []
        self.times: dict[int, np.ndarray] = {}
        self.wall = 0.0
        self.trials = 0

    @property
    def timing_path(self) -> Path | None:
        return None if self.path is None else self.path.with_suffix(".timing.npz")

    def begin(self, setup: dict[str, Any], trials: int) -> None:
        """Start (or, with ``resume``, continue) the run ``setup`` describes; a resumed file
        written with another setup is an error naming what differs."""
        self.setup, self.trials = setup, trials
        if not (self.resume and self.path is not None and self.path.exists()):
            return
        old = json.loads(self.path.read_text())
        old.setdefault("action", _LEGACY_ACTION)
        now = json.loads(json.dumps(setup))  # as it would be written (tuples -> lists)
        differ = sorted(k for k in now if k not in _RUN_KEYS and now[k] != old.get(k))
        if differ:
            raise ValueError(f"--resume: {self.path} was written by another evaluation "
                             f"(differs in {', '.join(differ)}); use another --json")
        self.rows = [r for r in old["rows"] if r["trial"] < trials]
        self.wall = float(old.get("wall_s", 0.0))
        tp = self.timing_path
        if tp is not None and tp.exists():
            with np.load(tp) as z:
                self.times = {int(k[1:]): z[k] for k in z.files}

    def todo(self, trials: int) -> list[int]:
        done = {r["trial"] for r in self.rows}
        return [i for i in range(trials) if i not in done]

    def add(self, row: dict[str, Any], times: list[float], wall: float) -> None:
        self.rows.append(row)
        self.rows.sort(key=lambda r: r["trial"])
        self.times[row["trial"]] = np.asarray(times, float)
        self.wall += wall
        self._save()

    def finish(self) -> dict[str, Any]:
        return self._save()

    def result(self) -> dict[str, Any]:
        rows, s = self.rows, self.setup
        steps = sum(r["steps"] for r in rows)
        times = np.concatenate([np.zeros(0), *self.times.values()]) * 1e3  # ms
        times = times[np.isfinite(times)]
        wall = max(self.wall, 1e-9)
        return {**s, "partial": len(rows) < self.trials,
                "rows": rows, "summary": summarize(rows), "wall_s": round(self.wall, 2),
                "steps_per_s": round(steps / wall, 2),
                # with workers: simulated time over wall time of the whole run, all workers
                "real_time_factor": round(steps * s["control_period_s"] / wall, 3),
                # None for the floors, which decide nothing worth timing
                "decision_time": {"p50_ms": round(float(np.percentile(times, 50)), 2),
                                  "p99_ms": round(float(np.percentile(times, 99)), 2),
                                  "mean_ms": round(float(times.mean()), 2)}
                if len(times) else None}

    def _save(self) -> dict[str, Any]:
        """Writes the result (when there is a path) and returns it."""
        result = self.result()
        if self.path is None:
            return result
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, self.path)
        if self.times:
            tp = self.timing_path
            ttmp = tp.with_name(tp.stem + ".tmp.npz")
            np.savez_compressed(ttmp, **{f"t{i}": v for i, v in self.times.items()})
            os.replace(ttmp, tp)
        return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'trial':>5} {'seed':>6} {'successes':>9} {'end reason':>10} {'steps':>6}"
             "   last goal: closest / final / up face off (rad)"]
    missed = []
    for r in result["rows"]:
        g = r.get("last_goal")
        miss = (f"   {g['closest_rad']:.2f} / {g['final_rad']:.2f} / {g['up_face_off_rad']:.2f}"
                if g else "")
        if g:
            missed.append(g["closest_rad"])
        lines.append(f"{r['trial']:>5} {r['seed']:>6} {r['successes']:>9} "
                     f"{r['end_reason']:>10} {r['steps']:>6}{miss}")
    s, ru = result["summary"], result.get("rules", {})
    lines.append(
        f"{result.get('controller', 'onnx')} on {result['hand']}, goals {ru.get('goal_rule')}, "
        f"success < {ru.get('success_threshold_rad')} rad, {ru.get('goal_timeout_s')} s per goal, "
        f"randomization "
        f"{', '.join(ru.get('randomize') or []) or 'none'}"
        + (f", actions ±{result['action']['max_delta']:g} rad per step"
           if result.get("action") else ""))
    lines.append(f"consecutive successes: mean {s['mean']:.2f} ± {s['sd']:.2f} (sd), median "
                 f"{s['median']:.1f} over {s['trials']} trials; drops {s['drops']}, "
                 f"timeouts {s['timeouts']}, completed {s['completed']}"
                 + (f", capped {s['capped']}" if s.get("capped") else ""))
    lines.append(f"sorted: {s['sorted']}")
    if missed:
        near = sum(c < ru.get("success_threshold_rad", 0.4) + 0.1 for c in missed)
        lines.append(f"last goals missed: closest approach median {np.median(missed):.2f} rad; "
                     f"{near} of {len(missed)} came within 0.1 rad of the threshold")
    d = result.get("decision_time")
    timing = (f"decision time per control step p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} "
              f"ms; " if d else "")
    lines.append(f"{timing}real-time factor {result['real_time_factor']:.2f}")
    return "\n".join(lines)


def build_controller(name: str, env: DexCubeEnv, model: str = "", seed: int = 0,
                     mpc: MPCConfig | None = None) -> Controller:
    if name == "onnx":
        from dex_policy.runtime import default_model_path

        return OnnxPolicyController(model or default_model_path(env.hand), env.hand)
    if name == "mpc":
        return MPCController(env, mpc)
    if name == "mpc-measured":
        return MeasuredMPCController(env, mpc)
    if name == "zero":
        return HoldController()
    if name == "random":
        return RandomController(seed)
    raise ValueError(f"unknown controller {name!r}; one of {', '.join(CONTROLLERS)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controller", default="onnx", choices=CONTROLLERS)
    p.add_argument("--model", default="", help="ONNX policy ('' = the package default)")
    p.add_argument("--hand", default="shadow")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--goal-rule", default="uniform", choices=GOAL_RULES,
                   help="uniform (Dactyl) or far90 (each goal >= 90 deg from the last, DROP)")
    p.add_argument("--threshold", type=float, default=0.4, help="success threshold (rad)")
    p.add_argument("--randomize", default="", help="randomization: '' none, 'all', or names "
                   "and groups separated by commas (physics, observation, action, ...)")
    p.add_argument("--goal-timeout", type=float, default=TaskConfig.goal_timeout_s,
                   help="seconds of sim time per goal (default: Dactyl's %(default)s; DROP's "
                   "real-hand rule: 80)")
    p.add_argument("--max-steps", type=int, default=0, help="cap each trial (0 = no cap)")
    p.add_argument("--max-delta", type=float, default=None,
                   help="action scale, rad per step at the extreme bin, for the MPC and the "
                   "floors (default: the hand's: 0.15, Shadow 0.3); a model uses its own")
    add_mpc_options(p)
    p.add_argument("--workers", type=int, default=1,
                   help="run trials on this many Ray workers, one planning thread each")
    p.add_argument("--ray-address", default=None, help=ADDRESS_HELP)
    p.add_argument("--json", default="policy_eval.json", help="where to write the result")
    p.add_argument("--png", default="", help="plot (default: the JSON path with .png)")
    p.add_argument("--resume", action="store_true",
                   help="keep the trials already in --json (same controller, hand, seeds and "
                   "rules) and run only the rest")
    a = p.parse_args(argv)
    try:
        rand: bool | set[str] = (True if a.randomize == "all" else
                                 {x.strip() for x in a.randomize.split(",") if x.strip()})
        task = TaskConfig(goal_rule=a.goal_rule, success_threshold=a.threshold,
                          goal_timeout_s=a.goal_timeout, randomize=rand or False,
                          max_delta=a.max_delta)
        mpc = mpc_config_of(a)
        record = EvalRecord(a.json, resume=a.resume)
        if a.workers > 1:
            result = evaluate_parallel(ControllerSpec(a.controller, a.model, a.seed, mpc),
                                       a.hand, a.trials, a.seed, a.workers, task,
                                       a.max_steps or None, ray_address=a.ray_address,
                                       record=record)
        else:
            env = DexCubeEnv(a.hand, task=task)
            ctrl = build_controller(a.controller, env, a.model, a.seed, mpc)
            result = evaluate(ctrl, a.hand, a.trials, a.seed, env=env,
                              max_steps=a.max_steps or None, record=record)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # contract errors included
        print(f"dex-policy-eval: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    png = plot(result, a.png or Path(a.json).with_suffix(".png"))
    print(f"wrote {a.json} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
