"""Teacher → student: DAgger from the sampling-MPC teacher into the LSTM policy the node runs.

``dex-policy-dagger --out runs/dagger --hand leap`` repeats, per iteration ``i``:
1. **collect**: ``episodes`` episodes in ``DexCubeEnv`` (the task's randomization on: the student
   sees noisy, delayed, dropped-out observations; the teacher plans from the true state with the
   episode's own model). Every step the teacher labels the state (its bins and its continuous
   delta); the action executed is the teacher's with probability ``beta_i = beta0 * decay**i``
   (iteration 0 = behavioural cloning), else the student's (argmax). Each episode is one shard
   ``shards/it{i:03d}_ep{k:03d}.npz``, written atomically: a killed run loses at most the episode
   in flight, and ``--resume`` collects only the missing shards.
2. **train**: the student (Dense 1024 → LSTM 512, the ONNX contract the node loads) on every
   shard so far (the DAgger aggregate), whole episodes from a zero LSTM state, soft labels (the
   teacher's continuous delta split between its two nearest bins), Adam; checkpoint after each
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dex_common.checkpoints import load_checkpoint, save_checkpoint
from dex_policy.controllers import MPCController
from dex_policy.mpc import MPCConfig
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
    # Gradient steps per iteration = epochs × the batches in one iteration's new episodes, each
    # batch drawn from the whole aggregate: the cost per iteration stays constant as data grows.
    epochs: int = 6
    batch: int = 16  # episodes per gradient step
    lr: float = 1e-3
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


def soft_labels(deltas: np.ndarray, bins: int, max_delta: float) -> np.ndarray:
    """[..., n] continuous deltas → [..., n, bins] probabilities on the two nearest bins."""
    x = (np.clip(deltas, -max_delta, max_delta) + max_delta) / (2 * max_delta) * (bins - 1)
    lo = np.floor(x).astype(np.int64).clip(0, bins - 2)
    w = (x - lo)[..., None]
    out = np.zeros((*deltas.shape, bins), np.float32)
    np.put_along_axis(out, lo[..., None], 1.0 - w, axis=-1)
    np.put_along_axis(out, lo[..., None] + 1, w, axis=-1)
    return out


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


def collect_episode(env: DexCubeEnv, teacher: MPCController, student: Student | None,
                    beta: float, seed: int, max_steps: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One episode; every step labelled by the teacher, executed by teacher (p = beta) or student."""
    obs, _ = env.reset(seed=seed)
    teacher.reset(env)
    if student is not None:
        student.reset()
    o, lab, dl, by_teacher = [], [], [], []
    info: dict = {}
    for _ in range(max_steps):
        t_bins = teacher.act(env)
        d = teacher.last_delta
        use_teacher = student is None or rng.random() < beta
        s_bins = None if student is None else student.act(obs)  # keeps the LSTM state current
        o.append(np.asarray(obs, np.float32))
        lab.append(t_bins)
        dl.append(d.astype(np.float32))
        by_teacher.append(use_teacher)
        obs, _, term, trunc, info = env.step(t_bins if use_teacher else s_bins)
        if term or trunc:
            break
    return {"obs": np.stack(o), "bins": np.stack(lab).astype(np.int8), "deltas": np.stack(dl),
            "by_teacher": np.array(by_teacher), "seed": np.array(seed),
            "successes": np.array(info.get("successes", 0)),
            "end_reason": np.array(info.get("end_reason", "") or "cap")}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_shards(root: Path) -> list[dict[str, np.ndarray]]:
    out = []
    for p in sorted((root / "shards").glob("it*_ep*.npz")):
        with np.load(p, allow_pickle=False) as z:
            out.append({k: z[k] for k in z.files})
    return out


def train_student(net: PolicyNet, opt: torch.optim.Optimizer, episodes: list[dict],
                  cfg: DaggerConfig, bins: int, max_delta: float,
                  gen: torch.Generator) -> dict[str, float]:
    """Gradient steps on batches of whole episodes drawn from the aggregate (zero initial LSTM
    state, padded + masked)."""
    net.norm.update(torch.from_numpy(np.concatenate([e["obs"] for e in episodes])))
    n_act = net.n_actuators
    losses, accs = [], []
    updates = cfg.epochs * math.ceil(cfg.episodes / cfg.batch)
    for _ in range(updates):
        pick = torch.randint(len(episodes), (min(cfg.batch, len(episodes)),), generator=gen)
        group = [episodes[i] for i in pick.tolist()]
        t_max = max(len(e["obs"]) for e in group)
        x = torch.zeros(t_max, len(group), net.in_size)
        y = torch.zeros(t_max, len(group), n_act, bins)
        hard = torch.zeros(t_max, len(group), n_act, dtype=torch.long)
        mask = torch.zeros(t_max, len(group))
        for j, e in enumerate(group):
            t = len(e["obs"])
            x[:t, j] = torch.from_numpy(e["obs"])
            y[:t, j] = torch.from_numpy(soft_labels(e["deltas"], bins, max_delta))
            hard[:t, j] = torch.from_numpy(e["bins"].astype(np.int64))
            mask[:t, j] = 1.0
        starts = torch.zeros(t_max, len(group))
        starts[0] = 1.0
        flat = net.sequence(x, net.initial_state(len(group)), starts)
        logits = net.logits(flat)  # [T, B, n, bins]
        logp = torch.log_softmax(logits, -1)
        ce = -(y * logp).sum(-1).mean(-1)  # [T, B]
        loss = (ce * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            acc = ((logits.argmax(-1) == hard).float().mean(-1) * mask).sum() / mask.sum()
        losses.append(loss.item())
        accs.append(acc.item())
    last = max(1, updates // 4)  # the last quarter of the updates
    return {"loss": float(np.mean(losses[-last:])), "bin_accuracy": float(np.mean(accs[-last:]))}


def run(out: Path, cfg: DaggerConfig, resume: bool = False, max_minutes: float | None = None,
        progress: bool = True) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    ck_path = out / "student.pt"
    torch.set_num_threads(cfg.threads)
    env = DexCubeEnv(cfg.hand, task=cfg.task())
    teacher = MPCController(env, cfg.mpc)
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
    gen = torch.Generator().manual_seed(cfg.seed + start_it)
    deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
    t_run = time.perf_counter()
    log = open(out / "log.jsonl", "a")
    rec: dict[str, Any] = {}
    for it in range(start_it, cfg.iterations):
        beta = cfg.beta(it)
        student = None if it == 0 else Student(net)
        rng = np.random.default_rng([cfg.seed, it])
        bar = tqdm(range(cfg.episodes), desc=f"it {it} collect (beta {beta:.2f})",
                   disable=not progress)
        for k in bar:
            shard = out / "shards" / f"it{it:03d}_ep{k:03d}.npz"
            if shard.exists():
                continue
            if time.monotonic() > deadline:
                log.close()
                return {"stopped": "max_minutes", "iteration": it}
            ep = collect_episode(env, teacher, student, beta, 1_000_000 * (cfg.seed + 1)
                                 + 1000 * it + k, cfg.episode_steps, rng)
            _save_npz(shard, ep)
            bar.set_postfix(succ=int(ep["successes"]), end=str(ep["end_reason"]),
                            plan_ms=f"{teacher.timing.p50_ms:.0f}")
        episodes = load_shards(out)
        this_it = episodes[-cfg.episodes:]
        t0 = time.perf_counter()
        stats = train_student(net, opt, episodes, cfg, env.bins, env.task.max_delta, gen)
        save_checkpoint({"config": cfg.to_dict(), "net": net.state_dict(),
                         "opt": opt.state_dict(), "iteration": it}, ck_path)
        rec = {"iteration": it, "beta": beta, "episodes": len(episodes),
               "labels": int(sum(len(e["obs"]) for e in episodes)),
               "successes_per_episode": float(np.mean([int(e["successes"]) for e in this_it])),
               "student_step_fraction": float(np.mean(np.concatenate(
                   [~e["by_teacher"] for e in this_it]))),
               **stats, "train_s": round(time.perf_counter() - t0, 1),
               "wall_s": round(time.perf_counter() - t_run, 1),
               "plan_p50_ms": round(teacher.timing.p50_ms, 1)}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        tqdm.write(json.dumps(rec))
    log.close()
    return {"stopped": "done", **rec, "net": net}


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = DaggerConfig()
    p.add_argument("--out", required=True, help="run directory (shards, checkpoint, log)")
    p.add_argument("--hand", default=d.hand)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--episodes", type=int, default=d.episodes, help="collected per iteration")
    p.add_argument("--episode-steps", type=int, default=d.episode_steps)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--goal-rule", default=d.goal_rule)
    p.add_argument("--randomize", action="store_true", help="every Dactyl randomization on")
    p.add_argument("--mpc-samples", type=int, default=MPCConfig.n_samples)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None, help="stop collecting after this")
    p.add_argument("--export", default="", help="write the ONNX student here at the end")
    a = p.parse_args(argv)
    cfg = DaggerConfig(hand=a.hand, iterations=a.iterations, episodes=a.episodes,
                       episode_steps=a.episode_steps, epochs=a.epochs, goal_rule=a.goal_rule,
                       randomize=a.randomize, seed=a.seed,
                       mpc=MPCConfig(n_samples=a.mpc_samples))
    try:
        res = run(Path(a.out), cfg, resume=a.resume, max_minutes=a.max_minutes)
    except (ValueError, RuntimeError) as e:
        print(f"dex-policy-dagger: {e}", file=sys.stderr)
        return 2
    if a.export and "net" in res:
        diff = export_student(res["net"], cfg, Path(a.export),
                              "dex-policy-dagger " + shlex.join(argv or sys.argv[1:]), "cpu x2")
        print(f"exported {a.export} (ORT vs torch max |diff| {diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
