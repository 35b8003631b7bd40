"""Evaluate a policy model in the training env (state mode): ``dex-policy-eval --trials N``.

Runs ``PolicyRuntime`` (the node's runtime) in ``DexCubeEnv`` for N trials with seeds
``seed + trial`` (the node uses the same seeds), prints a per-trial table and mean ± sd / median
consecutive successes, and writes the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dex_policy.runtime import PolicyRuntime, default_model_path
from dex_sim.env import DexCubeEnv


def run_trial(env: DexCubeEnv, runtime: PolicyRuntime, seed: int) -> dict[str, Any]:
    obs, info = env.reset(seed=seed)
    runtime.reset(env.current_actuator_positions())
    steps = 0
    while True:
        obs, _, term, trunc, info = env.step_targets(runtime.act(obs))
        steps += 1
        if term or trunc:
            return {"seed": seed, "successes": info["successes"],
                    "end_reason": info["end_reason"], "steps": steps}


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    s = np.array([r["successes"] for r in rows], float)
    return {"trials": len(rows), "mean": float(s.mean()) if len(s) else float("nan"),
            "sd": float(s.std()) if len(s) else float("nan"),
            "median": float(np.median(s)) if len(s) else float("nan"),
            "drops": sum(r["end_reason"] == "dropped" for r in rows),
            "timeouts": sum(r["end_reason"] == "timeout" for r in rows),
            "completed": sum(r["end_reason"] == "completed" for r in rows)}


def evaluate(model_path: str | Path, hand: str = "shadow", trials: int = 10, seed: int = 0,
             progress: bool = True, env: DexCubeEnv | None = None) -> dict[str, Any]:
    """Run ``trials`` trials; returns {"rows": [...], "summary": {...}, ...}."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1; got {trials}")
    runtime = PolicyRuntime(model_path, hand)
    env = env or DexCubeEnv(hand)
    rows = []
    t0 = time.perf_counter()
    for i in tqdm(range(trials), desc="eval", unit="trial", disable=not progress):
        rows.append({"trial": i, **run_trial(env, runtime, seed + i)})
    wall = time.perf_counter() - t0
    return {"model": str(model_path), "model_sha256": runtime.sha256, "hand": hand,
            "mode": "state", "seed": seed, "rows": rows, "summary": summarize(rows),
            "wall_s": round(wall, 2), "steps_per_s": round(sum(r["steps"] for r in rows) / wall, 1),
            "inference": runtime.infer_stats.summary()}


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'trial':>5} {'seed':>6} {'successes':>9} {'end reason':>10} {'steps':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['trial']:>5} {r['seed']:>6} {r['successes']:>9} "
                     f"{r['end_reason']:>10} {r['steps']:>6}")
    s = result["summary"]
    lines.append(f"consecutive successes: mean {s['mean']:.2f} ± {s['sd']:.2f} (sd), median "
                 f"{s['median']:.1f} over {s['trials']} trials; drops {s['drops']}, "
                 f"timeouts {s['timeouts']}, completed {s['completed']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="", help="ONNX policy ('' = the package default)")
    p.add_argument("--hand", default="shadow")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="policy_eval.json", help="where to write the result")
    a = p.parse_args(argv)
    model = a.model or default_model_path(a.hand)
    try:
        result = evaluate(model, a.hand, a.trials, a.seed)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # contract errors included
        print(f"dex-policy-eval: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    Path(a.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
