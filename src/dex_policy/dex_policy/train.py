"""Train the LSTM policy with PPO and export it to ONNX: ``dex-policy-train --steps N --out DIR``.

Writes ``DIR/checkpoint.pt`` (every iteration, atomically; ``--resume`` continues from it),
``DIR/log.jsonl`` (one record per iteration) and the ONNX model (``--export``, default
``DIR/policy_<hand>.onnx``) with its contract; a short evaluation fills ``dex.eval``.

``--randomize`` trains under every Dactyl randomization (static ranges); ``--adr`` under
vectorised ADR (``--adr-t-high/--adr-t-low/--adr-queue``), writing ``DIR/adr_state.json`` at the
end. ``dex.eval`` records ``train_randomize``, ``train_adr`` and the final ADR entropy (nats per
dimension); the evaluation itself runs without randomization.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from tqdm import tqdm

from dex_common.actions import ActionDecoder
from dex_common.checkpoints import CheckpointError
from dex_common.config_cli import Options, add_config_options, config_kwargs
from dex_description.registry import get_hand
from dex_policy.evaluate import evaluate, format_table
from dex_policy.export import check_ort_matches_torch, export_onnx, policy_contract, write_metadata
from dex_policy.ppo import PPOConfig, PPOTrainer

# The PPOConfig fields this CLI exposes; types and defaults come from PPOConfig.
TRAIN_OPTIONS: Options = {
    "hand": ("--hand", "hand profile in dex_description.registry"),
    "seed": ("--seed", ""),
    "n_envs": ("--envs", "parallel envs"),
    "rollout_steps": ("--rollout", "steps per env per iteration"),
    "epochs": ("--epochs", "PPO epochs per iteration"),
    "minibatch_chunks": ("--minibatch-chunks", "chunks per minibatch"),
    "torch_threads": ("--threads", "torch threads"),
    "update_precision": ("--update-precision",
                         "the update's arithmetic: auto (bf16 where the CPU has it), bf16, fp32"),
    "hold_prior": ("--hold-prior",
                   "initial probability of each actuator's zero-delta bin (0 = uniform)"),
    "dense": ("--dense", "width of the dense layer"),
    "lstm_hidden": ("--lstm", "LSTM width"),
    "goal_timeout_s": ("--goal-timeout",
                       "training task: s of sim time per goal before the episode times out"),
    "max_delta": ("--max-delta", "action scale, rad per step at the extreme bin; 0 = the "
                  "hand's (0.15, Shadow 0.3)"),
    "randomize": ("--randomize", "all Dactyl domain randomizations at their static ranges"),
    "adr": ("--adr", "automatic domain randomization (vectorised ADR; implies --randomize)"),
    "adr_t_high": ("--adr-t-high", "ADR: mean successes at a boundary to widen it"),
    "adr_t_low": ("--adr-t-low", "ADR: mean successes below which a boundary narrows"),
    "adr_queue": ("--adr-queue", "ADR: results per decision"),
    "adr_boundary_fraction": ("--adr-boundary-fraction",
                              "ADR: fraction of envs evaluating boundaries"),
}


def producer_command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["dex-policy-train", *args])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, required=True, help="total env steps (all envs)")
    p.add_argument("--out", required=True, help="run directory (checkpoint, log)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--export", default="", help="ONNX path (default OUT/policy_<hand>.onnx)")
    add_config_options(p, PPOConfig, TRAIN_OPTIONS)
    p.add_argument("--eval-trials", type=int, default=3, help="trials for dex.eval (0 = none)")
    p.add_argument("--compute", default="",
                   help="what ran the training, for the model's provenance (default: this machine)")
    a = p.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / "checkpoint.pt"
    if a.resume:
        if not ck.is_file():
            p.error(f"--resume: no checkpoint at {ck}")
        try:
            trainer = PPOTrainer.load(ck)
        except CheckpointError as e:
            p.error(f"--resume: {e}")
        print(f"resumed from {ck}: iteration {trainer.iteration}, {trainer.total_steps} steps")
    else:
        cfg = PPOConfig(**config_kwargs(a, TRAIN_OPTIONS))
        try:
            trainer = PPOTrainer(cfg)
        except ValueError as e:
            p.error(str(e))
    cfg = trainer.cfg

    t0 = time.perf_counter()
    log = (out / "log.jsonl").open("a")
    with tqdm(total=a.steps, initial=min(trainer.total_steps, a.steps), unit="step",
              desc="ppo") as bar:
        while trainer.total_steps < a.steps:
            before = trainer.total_steps
            rec = trainer.iterate()
            rec["wall_s"] = round(time.perf_counter() - t0, 1)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            trainer.save(ck)
            bar.update(min(trainer.total_steps, a.steps) - min(before, a.steps))
            tqdm.write(f"it {rec['iteration']:4d} steps {rec['total_steps']:7d} "
                       f"rew/step {rec['mean_reward']:+.4f} eps {rec['episodes']:2d} "
                       f"succ/ep {rec['successes_per_episode']:.2f} drops {rec['drops']} "
                       f"ent {rec['entropy']:.2f} kl {rec['approx_kl']:.4f} "
                       f"{rec['steps_per_s']:.0f} steps/s"
                       + (f" adr H {rec['adr_entropy']:.2f} nats/dim "
                          f"({rec['adr_n_active']} active)" if cfg.adr else ""))
    log.close()
    train_wall = time.perf_counter() - t0

    # ---- export + verify + short evaluation --------------------------------------------------
    spec = get_hand(cfg.hand)
    path = Path(a.export) if a.export else out / f"policy_{spec.name}.onnx"
    decoder = ActionDecoder(spec, bins=cfg.bins, max_delta=cfg.max_delta or None)
    meta = policy_contract(cfg.hand, decoder, cfg.lstm_hidden, producer_command(argv),
                           cfg.hash(), {}, a.compute)
    export_onnx(trainer.policy, path, meta)
    diff = check_ort_matches_torch(trainer.policy, path)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB); ORT vs torch max |diff| "
          f"{diff:.2e}")
    summary = {"train_steps": trainer.total_steps, "train_wall_s": round(train_wall, 1),
               "iterations": trainer.iteration, "train_randomize": cfg.randomized, "train_adr": cfg.adr}
    if trainer.adr is not None:
        st = trainer.adr.stats()
        summary.update(adr_entropy=st["adr_entropy"], adr_n_active=st["adr_n_active"],
                       adr_expansions=st["adr_expansions"], adr_shrinks=st["adr_shrinks"],
                       adr_t_high=cfg.adr_t_high, adr_t_low=cfg.adr_t_low,
                       adr_queue=cfg.adr_queue)
        (out / "adr_state.json").write_text(json.dumps(trainer.adr.state_dict()))
    if a.eval_trials > 0:
        res = evaluate(path, cfg.hand, a.eval_trials, seed=10_000)
        print(format_table(res))
        ev = {"mode": "state", "trials": a.eval_trials, "seed": 10_000, **res["summary"],
              **summary}
        write_metadata(path, {"dex.eval": json.dumps(ev)})
        (out / "eval.json").write_text(json.dumps(res, indent=1))
    else:
        write_metadata(path, {"dex.eval": json.dumps(summary)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
