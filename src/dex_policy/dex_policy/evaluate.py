"""Evaluate a controller in the training env (state mode): ``dex-policy-eval --trials N``.

Controllers: the ONNX policy (``--controller onnx``, the node's runtime; default), the sampling-MPC
teacher (``mpc``), and the floors ``zero`` (hold) and ``random``. Trials use seeds
``seed + trial`` (the node uses the same seeds). Prints Dactyl's Table-3 format — consecutive
successes mean ± sd, median, and the sorted per-trial counts — with the trial rules stated (goal
rule, success threshold, randomization), plus the per-trial table; writes the result as JSON and
a PNG (histogram, successes per trial).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dex_common.stats import RollingStats
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
from dex_policy.mpc import MPCConfig, add_mpc_options, mpc_config_of
from dex_sim.env import DexCubeEnv, TaskConfig

CONTROLLERS = ("onnx", "mpc", "mpc-measured", "zero", "random")


def run_trial(env: DexCubeEnv, controller: Controller, seed: int,
              max_steps: int | None = None) -> dict[str, Any]:
    """One trial from ``env.reset(seed)`` until it ends (or ``max_steps``, reported as 'cap')."""
    obs, info = env.reset(seed=seed)
    controller.reset(env)
    steps = 0
    while True:
        obs, _, term, trunc, info = controller.step(env, obs)
        steps += 1
        if term or trunc or (max_steps is not None and steps >= max_steps):
            return {"seed": seed, "successes": info["successes"],
                    "end_reason": info["end_reason"] or "cap", "steps": steps}


def evaluate(controller: Controller | str | Path, hand: str = "shadow", trials: int = 10,
             seed: int = 0, progress: bool = True, env: DexCubeEnv | None = None,
             task: TaskConfig | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Run ``trials`` trials of ``controller`` (a Controller, or an ONNX model path); returns
    {"rows": [...], "summary": {...}, "rules": {...}, ...}."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    env = env or DexCubeEnv(hand, task=task)
    if isinstance(controller, (str, Path)):
        controller = OnnxPolicyController(controller, hand)
    rows = []
    t0 = time.perf_counter()
    bar = tqdm(range(trials), desc=f"eval {controller.name}", unit="trial", disable=not progress)
    for i in bar:
        rows.append({"trial": i, **run_trial(env, controller, seed + i, max_steps)})
        _progress(bar, rows)
    return _result(controller.describe(), controller.timing, env, hand, seed, max_steps, rows,
                   time.perf_counter() - t0)


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
                      ray_address: str | None = None) -> dict[str, Any]:
    """``evaluate`` with the trials spread over ``workers`` Ray workers (one planning thread
    each; a local runtime, or the cluster at ``ray_address``): trials are independent and
    seeded, so the rows are the serial run's."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    env = DexCubeEnv(hand, task=task)  # the rules for the result
    timing = RollingStats(window=10_000_000)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    jobs = [(i, seed + i, max_steps) for i in range(trials)]
    with WorkerPool(min(workers, trials), _worker_init, (spec, hand, task),
                    address=ray_address) as pool, \
            tqdm(total=trials, desc=f"eval {spec.name} ({workers} workers)", unit="trial",
                 disable=not progress) as bar:
        describe = pool.call(_worker_describe)  # as the workers run it (one thread)
        for row, times in pool.imap_unordered(_worker_trial, jobs):
            rows.append(row)
            for t in times:
                timing.add(t)
            bar.update()
            _progress(bar, rows)
    rows.sort(key=lambda r: r["trial"])
    return _result({**describe, "workers": workers}, timing, env, hand, seed, max_steps, rows,
                   time.perf_counter() - t0)


def _progress(bar: tqdm, rows: list[dict[str, Any]]) -> None:
    s = np.array([r["successes"] for r in rows])
    bar.set_postfix(mean=f"{s.mean():.1f}", median=f"{np.median(s):.1f}")


def _result(described: dict[str, Any], timing: RollingStats, env: DexCubeEnv, hand: str,
            seed: int, max_steps: int | None, rows: list[dict[str, Any]],
            wall: float) -> dict[str, Any]:
    steps = sum(r["steps"] for r in rows)
    t = env.task
    tc = env.tracker.config
    return {**described, "hand": hand, "mode": "state", "seed": seed,
            "rules": {"goal_rule": tc.goal_rule, "success_threshold_rad": tc.success_threshold,
                      "goals_per_trial": tc.goals_per_trial, "goal_timeout_s": tc.goal_timeout_s,
                      "randomize": sorted(t.enabled), "max_steps": max_steps},
            "rows": rows, "summary": summarize(rows), "wall_s": round(wall, 2),
            "steps_per_s": round(steps / wall, 2),
            # with workers: simulated time over wall time of the whole run, all workers
            "real_time_factor": round(steps * env.hand_spec.control_period / wall, 3),
            # None for the floors, which decide nothing worth timing
            "decision_time": {"p50_ms": round(timing.p50_ms, 2),
                              "p99_ms": round(timing.p99_ms, 2),
                              "mean_ms": round(timing.mean_ms, 2)}
            if len(timing) else None}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'trial':>5} {'seed':>6} {'successes':>9} {'end reason':>10} {'steps':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['trial']:>5} {r['seed']:>6} {r['successes']:>9} "
                     f"{r['end_reason']:>10} {r['steps']:>6}")
    s, ru = result["summary"], result.get("rules", {})
    lines.append(
        f"{result.get('controller', 'onnx')} on {result['hand']}, goals {ru.get('goal_rule')}, "
        f"success < {ru.get('success_threshold_rad')} rad, randomization "
        f"{', '.join(ru.get('randomize') or []) or 'none'}")
    lines.append(f"consecutive successes: mean {s['mean']:.2f} ± {s['sd']:.2f} (sd), median "
                 f"{s['median']:.1f} over {s['trials']} trials; drops {s['drops']}, "
                 f"timeouts {s['timeouts']}, completed {s['completed']}"
                 + (f", capped {s['capped']}" if s.get("capped") else ""))
    lines.append(f"sorted: {s['sorted']}")
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
    p.add_argument("--max-steps", type=int, default=0, help="cap each trial (0 = no cap)")
    add_mpc_options(p)
    p.add_argument("--workers", type=int, default=1,
                   help="run trials on this many Ray workers, one planning thread each")
    p.add_argument("--ray-address", default=None, help=ADDRESS_HELP)
    p.add_argument("--json", default="policy_eval.json", help="where to write the result")
    p.add_argument("--png", default="", help="plot (default: the JSON path with .png)")
    a = p.parse_args(argv)
    try:
        rand: bool | set[str] = (True if a.randomize == "all" else
                                 {x.strip() for x in a.randomize.split(",") if x.strip()})
        task = TaskConfig(goal_rule=a.goal_rule, success_threshold=a.threshold,
                          randomize=rand or False)
        mpc = mpc_config_of(a)
        if a.workers > 1:
            result = evaluate_parallel(ControllerSpec(a.controller, a.model, a.seed, mpc),
                                       a.hand, a.trials, a.seed, a.workers, task,
                                       a.max_steps or None, ray_address=a.ray_address)
        else:
            env = DexCubeEnv(a.hand, task=task)
            ctrl = build_controller(a.controller, env, a.model, a.seed, mpc)
            result = evaluate(ctrl, a.hand, a.trials, a.seed, env=env,
                              max_steps=a.max_steps or None)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # contract errors included
        print(f"dex-policy-eval: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    Path(a.json).write_text(json.dumps(result, indent=1))
    png = plot(result, a.png or Path(a.json).with_suffix(".png"))
    print(f"wrote {a.json} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
