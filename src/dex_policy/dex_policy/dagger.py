"""Teacher → student: DAgger from the sampling-MPC teacher into the LSTM policy the node runs.

``dex-policy-dagger --out runs/dagger --hand leap`` repeats, per iteration ``i``:
1. **collect**: ``episodes`` episodes in ``DexCubeEnv`` (the task's randomization on: the student
   sees noisy, delayed, dropped-out observations; the teacher plans from the true state with the
   episode's own model). Every step the teacher labels the state (its bins and its continuous
   delta); the action executed is the teacher's with probability ``beta_i = beta0 * decay**i``
   (iteration 0 = behavioural cloning), else the student's (argmax). Each episode is one shard
   ``shards/it{i:03d}_ep{k:03d}.npz``, written atomically: a killed run loses at most the episode
   in flight, and ``--resume`` collects only the missing shards. ``--workers N`` collects in N
   Ray workers, one planning thread each (the same shards: episodes are seeded by run seed,
   iteration and index); a local Ray runtime by default, a cluster with ``--ray-address``.
2. **train**: the student (Dense 1024 → LSTM 512, the ONNX contract the node loads) on every
   shard so far (the DAgger aggregate) by truncated BPTT: ``updates`` Adam steps per iteration,
   each on ``batch`` windows of ``window`` steps cut at random from random episodes (a third of
   them from the episode's start, where the LSTM state is truly zero; the others start from a
   zero state mid-episode, which teaches the net to pick up from any state), soft labels (the
   teacher's bin distribution over its plan's elite samples, ``label_probs``; with
   ``elite_labels=False`` or shards that lack it, its executed delta split between the two
   nearest bins). Every tenth episode is held
   out and scored (bin agreement with the teacher) so over-fitting shows. Checkpoint after each
   iteration (``student.pt``, tensors and plain data only).
3. log one JSON line per iteration (``log.jsonl``): labels so far, beta, teacher/student
   successes per collected episode, loss, bin accuracy, wall time.
``--export`` writes the ONNX student with its contract at the end (``dex-policy-eval`` runs it);
``--resume --iterations N`` extends a run, or, with N no more than it has done, only exports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dex_common.actions import soft_labels
from dex_common.checkpoints import load_checkpoint, save_checkpoint
from dex_common.config_cli import Options, add_config_options, config_kwargs, this_machine
from dex_common.stats import RollingStats
from dex_common.workers import (
    ADDRESS_HELP,
    WorkerPool,
    default_workers,
    start_runtime,
    stop_runtime,
)
from dex_policy.controllers import MPCController
from dex_policy.mpc import MPCConfig, add_mpc_options, mpc_config_of
from dex_policy.net import PolicyNet
from dex_sim.env import DexCubeEnv, TaskConfig


@dataclass
class DaggerConfig:
    hand: str = "leap"
    randomize: bool | list[str] = False
    goal_rule: str = "uniform"
    iterations: int = 8
    episodes: int = 6  # collected per iteration
    episode_steps: int = 150  # cap per collected episode (more seeds, more diverse starts)
    beta0: float = 1.0
    beta_decay: float = 0.5
    # Gradient steps per iteration, each on ``batch`` windows of ``window`` control steps drawn
    # from the whole aggregate: the cost per iteration stays constant as the data grows.
    updates: int = 400
    batch: int = 16
    window: int = 64
    lr: float = 5e-4
    # Imitate the teacher's bin distribution over its plan's elite samples (shards written
    # since it was recorded); False: its executed delta split between the two nearest bins.
    elite_labels: bool = True
    # After each iteration the student drives alone for this many trials (seeds 0.., never
    # collected on) of at most ``eval_steps`` steps; 0: no evaluation.
    eval_trials: int = 0
    eval_steps: int = 300
    seed: int = 0
    threads: int = 2
    mpc: MPCConfig = field(default_factory=MPCConfig)

    def beta(self, iteration: int) -> float:
        return self.beta0 * self.beta_decay ** iteration

    def task(self) -> TaskConfig:
        r = self.randomize if isinstance(self.randomize, bool) else set(self.randomize)
        return TaskConfig(goal_rule=self.goal_rule, randomize=r)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        """Stable short hash of the config (the model contract's ``dex.config_hash``)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DaggerConfig:
        from dex_policy.mpc import CostWeights

        d = dict(d)
        m = dict(d.pop("mpc"))
        m["cost"] = CostWeights(**m["cost"])
        m["sigmas"] = tuple(m["sigmas"])
        return cls(mpc=MPCConfig(**m), **d)


class Student:
    """The LSTM policy in torch, stepping one env at a time (argmax bins)."""

    def __init__(self, net: PolicyNet) -> None:
        self.net = net

    def reset(self) -> None:
        self.state = self.net.initial_state(1)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        flat, self.state = self.net.step(torch.as_tensor(obs, dtype=torch.float32)[None],
                                         self.state)
        return self.net.logits(flat)[0].argmax(-1).numpy()


class StudentController:
    """The torch student as an evaluation controller (``dex_policy.evaluate``)."""

    name = "student"

    def __init__(self, net: PolicyNet) -> None:
        self.student = Student(net)
        self.timing = RollingStats()

    def reset(self, env: DexCubeEnv) -> None:
        self.student.reset()

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> tuple:
        return env.step(self.student.act(obs))

    def describe(self) -> dict:
        return {"controller": self.name}


def collect_episode(env: DexCubeEnv, teacher: MPCController, student: Student | None,
                    beta: float, seed: int, max_steps: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One episode; every step labelled by the teacher, executed by teacher (p = beta) or student."""
    obs, _ = env.reset(seed=seed)
    teacher.reset(env)
    if student is not None:
        student.reset()
    teacher.label_distribution = True
    o, lab, dl, probs, by_teacher = [], [], [], [], []
    info: dict = {}
    biased = student is not None and teacher.planner.cfg.cost.student > 0
    for _ in range(max_steps):
        s_bins = None if student is None else student.act(obs)  # keeps the LSTM state current
        t_bins = teacher.act(env, s_bins if biased else None)
        d = teacher.last_delta
        use_teacher = student is None or rng.random() < beta
        o.append(np.asarray(obs, np.float32))
        lab.append(t_bins)
        dl.append(d.astype(np.float32))
        probs.append(teacher.last_label_probs.astype(np.float16))
        by_teacher.append(use_teacher)
        obs, _, term, trunc, info = env.step(t_bins if use_teacher else s_bins)
        if term or trunc:
            break
    return {"obs": np.stack(o), "bins": np.stack(lab).astype(np.int8), "deltas": np.stack(dl),
            "label_probs": np.stack(probs),
            "by_teacher": np.array(by_teacher), "seed": np.array(seed),
            "successes": np.array(info.get("successes", 0)),
            "end_reason": np.array(info.get("end_reason", "") or "cap")}


def episode_seed(cfg: DaggerConfig, iteration: int, k: int) -> int:
    """The env seed of collected episode ``k`` of ``iteration`` (distinct across runs' seeds)."""
    return 1_000_000 * (cfg.seed + 1) + 1000 * iteration + k


def shard_path(out: Path, iteration: int, k: int) -> Path:
    return out / "shards" / f"it{iteration:03d}_ep{k:03d}.npz"


class Collector:
    """One env + teacher (+ the student of iteration > 0, from plain arrays) that collects
    episodes into shards: in this process, or one per worker process."""

    def __init__(self, cfg: DaggerConfig, net_state: dict[str, np.ndarray] | None,
                 planning_threads: int) -> None:
        self.cfg = cfg
        self.env = DexCubeEnv(cfg.hand, task=cfg.task())
        self.teacher = MPCController(self.env, replace(cfg.mpc, threads=planning_threads))
        self.student = None
        if net_state is not None:
            net = PolicyNet(self.env.obs_dim, self.env.n_actuators, self.env.bins)
            # torch.tensor copies: arrays from Ray's object store are read-only.
            net.load_state_dict({k: torch.tensor(v) for k, v in net_state.items()})
            self.student = Student(net)

    def collect(self, iteration: int, k: int, shard: Path) -> dict[str, Any]:
        cfg = self.cfg
        ep = collect_episode(self.env, self.teacher, self.student, cfg.beta(iteration),
                             episode_seed(cfg, iteration, k), cfg.episode_steps,
                             np.random.default_rng([cfg.seed, iteration, k]))
        _save_npz(shard, ep)
        return {"succ": int(ep["successes"]), "end": str(ep["end_reason"]),
                "plan_ms": f"{self.teacher.timing.p50_ms:.0f}"}


_WORKER: Collector | None = None  # the collector of a worker process


def _worker_init(cfg: dict[str, Any], net_state: dict[str, np.ndarray] | None) -> None:
    global _WORKER
    _WORKER = Collector(DaggerConfig.from_dict(cfg), net_state, planning_threads=1)


def _worker_collect(job: tuple[int, int, Path]) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER.collect(*job)


def collect_iteration(out: Path, cfg: DaggerConfig, iteration: int,
                      net_state: dict[str, np.ndarray] | None, workers: int = 1,
                      deadline: float = math.inf, progress: bool = False,
                      ray_address: str | None = None) -> bool:
    """Collect the iteration's missing shards; False if ``deadline`` (monotonic s) came first.
    ``workers`` > 1: that many Ray workers (local, or the cluster at ``ray_address``), each
    planning on one thread (episodes are independent, so this scales with cores where
    multi-threaded rollouts of one plan do not);
    at the deadline the episodes in flight are dropped, as if the run had been killed."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    jobs = [(iteration, k, shard_path(out, iteration, k)) for k in range(cfg.episodes)]
    jobs = [j for j in jobs if not j[2].exists()]
    bar = tqdm(total=cfg.episodes, initial=cfg.episodes - len(jobs), disable=not progress,
               desc=f"it {iteration} collect (beta {cfg.beta(iteration):.2f})")
    with bar:
        if workers <= 1:
            collector = Collector(cfg, net_state, cfg.mpc.threads)
            for job in jobs:
                if time.monotonic() > deadline:
                    return False
                bar.set_postfix(collector.collect(*job))
                bar.update()
            return True
        with WorkerPool(min(workers, len(jobs)), _worker_init, (cfg.to_dict(), net_state),
                        address=ray_address) as pool:
            try:
                for result in pool.imap_unordered(
                        _worker_collect, jobs, None if deadline == math.inf else deadline):
                    bar.set_postfix(result)
                    bar.update()
            except TimeoutError:
                return False  # the pool's close kills the episodes in flight
    return True


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_shards(root: Path, prefix: str = "it") -> tuple[list[dict], list[dict]]:
    """(training episodes, held-out episodes) of the run's shards whose names start with
    ``prefix``."""
    train, held = [], []
    for p in sorted((root / "shards").glob(f"{prefix}*_ep*.npz")):
        with np.load(p, allow_pickle=False) as z:
            (held if is_held_out(p) else train).append({k: z[k] for k in z.files})
    return train, held


def is_held_out(shard: Path) -> bool:
    """Every tenth collected episode (by its index in the iteration) is validation only."""
    return shard.stem.endswith("9")


def labels_of(e: dict, seg: slice, bins: int, max_delta: float, elite: bool) -> np.ndarray:
    """Soft labels [t, n, bins] of an episode's steps: the teacher's elite-sample bin
    distribution (``elite`` and the shard has it), else its delta split between two bins."""
    if elite and "label_probs" in e:
        return e["label_probs"][seg].astype(np.float32)
    return soft_labels(e["deltas"][seg], bins, max_delta)


def _windows(episodes: list[dict], n: int, length: int, bins: int, max_delta: float,
             rng: np.random.Generator, elite: bool = True) -> tuple[torch.Tensor, ...]:
    """``n`` windows [length, n, ...]: observations, soft labels, hard labels, mask."""
    n_act = episodes[0]["deltas"].shape[1]
    x = torch.zeros(length, n, episodes[0]["obs"].shape[1])
    y = torch.zeros(length, n, n_act, bins)
    hard = torch.zeros(length, n, n_act, dtype=torch.long)
    mask = torch.zeros(length, n)
    for j, i in enumerate(rng.integers(0, len(episodes), n)):
        e = episodes[i]
        t_len = len(e["obs"])
        s = 0 if rng.random() < 1 / 3 else int(rng.integers(0, max(1, t_len - length // 2)))
        seg = slice(s, min(t_len, s + length))
        k = seg.stop - seg.start
        x[:k, j] = torch.from_numpy(e["obs"][seg])
        y[:k, j] = torch.from_numpy(labels_of(e, seg, bins, max_delta, elite))
        hard[:k, j] = torch.from_numpy(e["bins"][seg].astype(np.int64))
        mask[:k, j] = 1.0
    return x, y, hard, mask


@torch.no_grad()
def bin_agreement(net: PolicyNet, episodes: list[dict]) -> float:
    """Fraction of (step, actuator) where the student's argmax bin is the teacher's, each
    episode run whole from a zero LSTM state (as deployed)."""
    hit = total = 0
    for e in episodes:
        x = torch.from_numpy(e["obs"])[:, None]
        starts = torch.zeros(len(x), 1)
        starts[0] = 1.0
        logits = net.logits(net.sequence(x, net.initial_state(1), starts))[:, 0]
        hard = torch.from_numpy(e["bins"].astype(np.int64))
        hit += int((logits.argmax(-1) == hard).sum())
        total += hard.numel()
    return hit / max(total, 1)


def train_student(net: PolicyNet, opt: torch.optim.Optimizer, episodes: list[dict],
                  cfg: DaggerConfig, bins: int, max_delta: float,
                  rng: np.random.Generator, held_out: list[dict] | None = None,
                  progress: bool = False) -> dict[str, float]:
    """``cfg.updates`` truncated-BPTT steps on random windows of the aggregate (see module
    docstring); returns the loss and bin agreement of the last quarter of the updates, and the
    held-out agreement."""
    net.norm.update(torch.from_numpy(np.concatenate([e["obs"] for e in episodes])))
    losses, accs = [], []
    bar = tqdm(range(cfg.updates), desc="train", disable=not progress, leave=False)
    for _ in bar:
        x, y, hard, mask = _windows(episodes, cfg.batch, cfg.window, bins, max_delta, rng,
                                    cfg.elite_labels)
        starts = torch.zeros(cfg.window, cfg.batch)
        starts[0] = 1.0
        logits = net.logits(net.sequence(x, net.initial_state(cfg.batch), starts))
        ce = -(y * torch.log_softmax(logits, -1)).sum(-1).mean(-1)  # [T, B]
        loss = (ce * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            acc = ((logits.argmax(-1) == hard).float().mean(-1) * mask).sum() / mask.sum()
        losses.append(loss.item())
        accs.append(acc.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", agree=f"{accs[-1]:.3f}")
    last = max(1, cfg.updates // 4)  # the last quarter of the updates
    out = {"loss": float(np.mean(losses[-last:])), "bin_accuracy": float(np.mean(accs[-last:]))}
    if held_out:
        out["held_out_bin_accuracy"] = bin_agreement(net, held_out)
    return out


def run(out: Path, cfg: DaggerConfig, resume: bool = False, max_minutes: float | None = None,
        progress: bool = True, workers: int = 1,
        ray_address: str | None = None) -> dict[str, Any]:
    """``workers`` > 1: collect on Ray (one runtime for the whole run)."""
    started = workers > 1 and start_runtime(workers, ray_address)
    try:
        return _run(out, cfg, resume, max_minutes, progress, workers, ray_address)
    finally:
        if started:
            stop_runtime()


def _run(out: Path, cfg: DaggerConfig, resume: bool, max_minutes: float | None,
         progress: bool, workers: int, ray_address: str | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    ck_path = out / "student.pt"
    torch.set_num_threads(cfg.threads)
    env = DexCubeEnv(cfg.hand, task=cfg.task())
    torch.manual_seed(cfg.seed)
    net = PolicyNet(env.obs_dim, env.n_actuators, env.bins)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start_it = 0
    if resume and ck_path.is_file():
        ck = load_checkpoint(ck_path)
        saved = DaggerConfig.from_dict(ck["config"])
        saved.iterations = cfg.iterations  # a run may be extended (or exported early)
        if saved != cfg:
            raise ValueError(f"{ck_path} was written with another config: "
                             f"{ck['config']} (resume with the same arguments)")
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        start_it = int(ck["iteration"]) + 1
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
    t_run = time.perf_counter()
    log = open(out / "log.jsonl", "a")
    rec: dict[str, Any] = {}
    for it in range(start_it, cfg.iterations):
        beta = cfg.beta(it)
        net_state = None if it == 0 else {k: v.numpy().copy()
                                           for k, v in net.state_dict().items()}
        if not collect_iteration(out, cfg, it, net_state, workers, deadline, progress,
                                 ray_address):
            log.close()
            return {"stopped": "max_minutes", "iteration": it}
        episodes, held_out = load_shards(out)
        this_it = [e for part in load_shards(out, f"it{it:03d}") for e in part]
        t0 = time.perf_counter()
        stats = train_student(net, opt, episodes, cfg, env.bins, env.task.max_delta,
                              np.random.default_rng([cfg.seed, it, 1]), held_out, progress)
        save_checkpoint({"config": cfg.to_dict(), "net": net.state_dict(),
                         "opt": opt.state_dict(), "iteration": it}, ck_path)
        rec = {"iteration": it, "beta": beta, "episodes": len(episodes),
               "labels": int(sum(len(e["obs"]) for e in episodes)),
               "held_out_labels": int(sum(len(e["obs"]) for e in held_out)),
               "successes_per_episode": float(np.mean([int(e["successes"]) for e in this_it])),
               "student_step_fraction": float(np.mean(np.concatenate(
                   [~e["by_teacher"] for e in this_it]))),
               **stats, "train_s": round(time.perf_counter() - t0, 1),
               **student_eval(net, env, cfg),
               "wall_s": round(time.perf_counter() - t_run, 1),
               "workers": workers}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        tqdm.write(json.dumps(rec))
    log.close()
    return {"stopped": "done", **rec, "net": net}


def student_eval(net: PolicyNet, env: DexCubeEnv, cfg: DaggerConfig) -> dict[str, Any]:
    """The student driving alone on ``cfg.eval_trials`` seeds it never trained on (collected
    episodes use seeds >= 1,000,000): the summary's mean, median and sorted successes."""
    if not cfg.eval_trials:
        return {}
    from dex_policy.evaluate import evaluate

    s = evaluate(StudentController(net), cfg.hand, cfg.eval_trials, seed=0, progress=False,
                 env=env, max_steps=cfg.eval_steps)["summary"]
    return {"student_eval": {k: s[k] for k in ("mean", "median", "sorted", "drops")}}


def export_student(net: PolicyNet, cfg: DaggerConfig, path: Path, producer: str,
                   compute: str) -> float:
    """ONNX with the node's contract; returns ORT-vs-torch max |diff| (checked)."""
    from dex_common.actions import ActionDecoder
    from dex_policy.export import check_ort_matches_torch, export_onnx, policy_contract

    env_task = cfg.task()
    decoder = ActionDecoder(cfg.hand, bins=env_task.bins, max_delta=env_task.max_delta,
                            ema=env_task.ema)
    meta = policy_contract(cfg.hand, decoder, net.hidden, producer, cfg.hash(), {}, compute)
    export_onnx(net.eval(), path, meta)
    return check_ort_matches_torch(net, path)


# The DaggerConfig fields this CLI exposes; types and defaults come from DaggerConfig.
DAGGER_OPTIONS: Options = {
    "hand": ("--hand", "hand profile in dex_description.registry"),
    "iterations": ("--iterations", "DAgger iterations (the first is behavioural cloning)"),
    "episodes": ("--episodes", "collected per iteration"),
    "episode_steps": ("--episode-steps", "cap per collected episode"),
    "updates": ("--updates", "gradient steps per iteration (truncated BPTT windows)"),
    "beta0": ("--beta0", "probability the teacher executes a step, iteration 0"),
    "beta_decay": ("--beta-decay", "beta's factor per iteration (1: the teacher always "
                                   "executes, PLATO-style with --mpc-student)"),
    "goal_rule": ("--goal-rule", "uniform | far90"),
    "randomize": ("--randomize", "every Dactyl randomization on"),
    "eval_trials": ("--eval-trials", "after each iteration, trials the student drives alone "
                                     "(seeds 0.., never collected on)"),
    "eval_steps": ("--eval-steps", "step cap of those trials"),
    "seed": ("--seed", ""),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (shards, checkpoint, log)")
    add_config_options(p, DaggerConfig, DAGGER_OPTIONS)
    add_mpc_options(p)
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="collect episodes on this many Ray workers, one planning thread each "
                        "(default: one per core; 1: in this process, rollouts on every core)")
    p.add_argument("--ray-address", default=None, help=ADDRESS_HELP)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None, help="stop collecting after this")
    p.add_argument("--export", default="", help="write the ONNX student here at the end")
    a = p.parse_args(argv)
    try:
        cfg = DaggerConfig(**config_kwargs(a, DAGGER_OPTIONS), mpc=mpc_config_of(a))
        res = run(Path(a.out), cfg, resume=a.resume, max_minutes=a.max_minutes,
                  workers=a.workers, ray_address=a.ray_address)
    except (ValueError, RuntimeError) as e:
        print(f"dex-policy-dagger: {e}", file=sys.stderr)
        return 2
    if a.export and "net" in res:
        diff = export_student(res["net"], cfg, Path(a.export),
                              "dex-policy-dagger " + shlex.join(argv or sys.argv[1:]),
                              this_machine())
        print(f"exported {a.export} (ORT vs torch max |diff| {diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
