"""PPO throughput against the bare vector env, measured in the same run: ``dex-policy-bench-ppo``.

Prints env steps/s of (1) ``DexCubeVectorEnv`` (the trainer's env) stepped with random bins (the reference: physics,
decoding, observations, trial logic, nothing learned), (2) PPO's rollout alone (the same env
plus batched policy and value inference) and (3) whole PPO iterations (rollout + update) as
the trainer runs them (by default the update of one batch beside the rollout of the next,
``PPOConfig.overlap``), and the ratios (2)/(1) and (3)/(1). The issue's bar: (3) at least half
of (1) on the same cores. ``--sequential`` also measures (4): the update after the rollout, on
every core, for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from dex_description.registry import get_hand
from dex_policy.ppo import PPOConfig, PPOTrainer
from dex_sim.env import DexCubeVectorEnv, TaskConfig


def bare_env_steps_per_s(cfg: PPOConfig, steps: int) -> float:
    env = DexCubeVectorEnv(cfg.n_envs, cfg.hand, seed=cfg.seed, task=TaskConfig(bins=cfg.bins))
    env.reset()
    rng = np.random.default_rng(0)
    n_act = get_hand(cfg.hand).n_actuators
    acts = rng.integers(0, cfg.bins, (steps, cfg.n_envs, n_act))
    t0 = time.perf_counter()
    for a in acts:
        env.step(a)
    return steps * cfg.n_envs / (time.perf_counter() - t0)


def ppo_steps_per_s(cfg: PPOConfig, iterations: int) -> tuple[float, float]:
    """(rollout-only, whole-iteration) env steps/s over ``iterations`` after one warm-up (with
    ``overlap`` the warm-up is also the iteration that has no batch to update yet)."""
    tr = PPOTrainer(cfg)
    tr.iterate()  # warm-up: env start, first allocations
    roll = whole = 0.0
    for _ in range(iterations):
        rec = tr.iterate()
        n = cfg.rollout_steps * cfg.n_envs
        roll += n / rec["rollout_steps_per_s"]
        whole += n / rec["steps_per_s"]
    n_all = iterations * cfg.rollout_steps * cfg.n_envs
    return n_all / roll, n_all / whole


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hand", default="leap")
    p.add_argument("--envs", type=int, default=PPOConfig.n_envs)
    p.add_argument("--iterations", type=int, default=3, help="timed PPO iterations")
    p.add_argument("--minibatch-chunks", type=int, default=PPOConfig.minibatch_chunks)
    p.add_argument("--sequential", action="store_true",
                   help="also measure PPO with the update after the rollout (overlap off)")
    p.add_argument("--json", default="", help="also write the numbers here")
    a = p.parse_args(argv)
    cfg = PPOConfig(hand=a.hand, n_envs=a.envs, minibatch_chunks=a.minibatch_chunks)
    bare = bare_env_steps_per_s(cfg, steps=cfg.rollout_steps * a.iterations)
    rollout, whole = ppo_steps_per_s(cfg, a.iterations)
    res = {"hand": a.hand, "n_envs": a.envs, "rollout_steps": cfg.rollout_steps,
           "minibatch_chunks": cfg.minibatch_chunks, "overlap": cfg.overlap,
           "iterations": a.iterations, "bare_env_steps_per_s": round(bare, 1),
           "ppo_rollout_steps_per_s": round(rollout, 1), "ppo_steps_per_s": round(whole, 1),
           "rollout_vs_bare": round(rollout / bare, 3), "ppo_vs_bare": round(whole / bare, 3)}
    print(f"{a.hand}, {a.envs} envs, minibatches of {cfg.minibatch_chunks} chunks: bare env "
          f"{bare:.0f} steps/s; PPO rollout {rollout:.0f} ({rollout / bare:.2f}x bare); PPO with "
          f"updates {whole:.0f} ({whole / bare:.2f}x bare; target >= 0.5x)")
    if a.sequential:
        _, seq = ppo_steps_per_s(replace(cfg, overlap=False), a.iterations)
        res.update(ppo_sequential_steps_per_s=round(seq, 1),
                   ppo_sequential_vs_bare=round(seq / bare, 3))
        print(f"  the update after the rollout instead of beside it: {seq:.0f} ({seq / bare:.2f}x"
              " bare)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
