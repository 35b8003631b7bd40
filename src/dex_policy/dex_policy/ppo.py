"""PPO with LSTM policy and value nets (Dactyl Table 10 hyper-parameters), CPU rollouts.

Rollout: ``n_envs`` envs stepped together (``DexCubeVectorEnv``), ``rollout_steps`` per env per
iteration. Update: truncated BPTT over chunks of ``chunk`` transitions; each chunk starts from the
LSTM state stored during the rollout, and the state is zeroed where an episode starts inside a
chunk (``starts`` mask), exactly as during the rollout. Timeouts (truncation) bootstrap V(final).

Domain randomization: ``randomize`` turns on every Dactyl randomization at its static range;
``adr`` (implies ``randomize``) runs DeXtreme-style vectorised ADR (``dex_sim.adr.VectorADR``):
before every env reset the ADR learns the finished episode's successes and hands the new episode
its ranges (the vector env's reset hook). The ADR state and its rng are checkpointed.

Overlap (``overlap``, the default): the update of one batch runs in a second thread beside the
rollout of the next, as Dactyl's optimizer ran beside its rollout workers. The rollout acts with
a copy of the nets that is synced after each update, so a batch is collected by the policy one
update behind the learner (PPO's clipped ratio is taken against the policy that acted, whose
log-probabilities the batch stores). The vector env steps on one core, so on two cores the
update nearly disappears from the iteration time. The batch awaiting its update is part of the
checkpoint: a resumed run continues bit for bit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import Categorical

from dex_common.actions import BINS, LEGACY_MAX_DELTA
from dex_common.checkpoints import load_checkpoint, save_checkpoint
from dex_common.observations import obs_dim
from dex_common.trial import TrialConfig
from dex_description.registry import get_hand
from dex_policy.net import PolicyNet, ValueNet
from dex_sim.adr import VectorADR, default_adr_params
from dex_sim.env import DexCubeVectorEnv, TaskConfig, value_obs_dim


@dataclass
class PPOConfig:
    hand: str = "shadow"
    seed: int = 0
    n_envs: int = 16  # inference per step costs about the same for 4 envs as for 16: batch it
    rollout_steps: int = 80  # per env per iteration; a multiple of chunk
    chunk: int = 10  # BPTT length (Dactyl: chunks of 10 transitions)
    gamma: float = 0.998
    lam: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 1.0
    lr: float = 3e-4
    epochs: int = 3
    # Big minibatches: a minibatch's cost is mostly fixed (BPTT's per-step weight gradients),
    # 64 chunks cost ~2x 16 chunks here, so 4x fewer, larger steps halve the update time.
    minibatch_chunks: int = 64
    max_grad_norm: float = 1.0
    bins: int = BINS
    hold_prior: float = 0.9  # initial probability of the zero-delta bin per actuator (0 = uniform)
    dense: int = 1024
    lstm_hidden: int = 512
    torch_threads: int = 1  # during the rollout, where MuJoCo shares the cores
    update_threads: int = 0  # during the update, where nothing else runs (0 = every core)
    overlap: bool = True  # update batch k beside the rollout of batch k+1 (both on torch_threads)
    # The update's arithmetic: "bf16" (autocast through oneDNN; weights, optimizer and losses
    # stay fp32), "fp32", or "auto": bf16 where the CPU does bf16 natively (AMX / AVX512-BF16),
    # elsewhere fp32 (emulated bf16 would be slower). Rollouts always act in fp32.
    update_precision: str = "auto"
    goal_timeout_s: float = TrialConfig.goal_timeout_s  # task: s of sim time per goal
    max_delta: float = 0.0  # action scale, rad per step at the extreme bin; 0 = the hand's
    randomize: bool = False  # all Dactyl randomizations at their static ranges
    adr: bool = False  # vectorised ADR over the adr=True ranges (implies randomize)
    adr_t_high: float = 20.0  # mean successes at a boundary to widen it (DeXtreme)
    adr_t_low: float = 5.0  # ... below which it narrows
    adr_queue: int = 256  # boundary results per decision
    adr_boundary_fraction: float = 0.4  # env slots that evaluate boundaries

    def validate(self) -> None:
        if self.rollout_steps % self.chunk:
            raise ValueError(f"rollout_steps ({self.rollout_steps}) must be a multiple of chunk "
                             f"({self.chunk})")
        if self.update_precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"update_precision must be auto, bf16 or fp32; got "
                             f"{self.update_precision!r}")
        if self.n_envs < 1 or self.epochs < 1 or self.minibatch_chunks < 1:
            raise ValueError("n_envs, epochs and minibatch_chunks must be >= 1")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1 and self.lr > 0):
            raise ValueError("need 0 < gamma <= 1, 0 <= lam <= 1, lr > 0")
        if self.adr and not (self.adr_t_low < self.adr_t_high and self.adr_queue >= 1
                             and 0.0 <= self.adr_boundary_fraction <= 1.0):
            raise ValueError("ADR needs adr_t_low < adr_t_high, adr_queue >= 1 and "
                             "0 <= adr_boundary_fraction <= 1")

    @property
    def randomized(self) -> bool:
        return self.randomize or self.adr

    def hash(self) -> str:
        # Fields added since the first models (task, randomization, threads) are left out at
        # their defaults: older configs keep their hash.
        d = {k: v for k, v in asdict(self).items()
             if not (k in _RAND_FIELDS and v == _RAND_FIELDS[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_RAND_FIELDS = {k: getattr(PPOConfig, k) for k in
                ("goal_timeout_s", "max_delta", "randomize", "adr", "adr_t_high", "adr_t_low",
                 "adr_queue",
                 "adr_boundary_fraction", "update_threads", "overlap", "update_precision")}


_UPDATE_STATS = ("pi_loss", "v_loss", "entropy", "clip_frac", "approx_kl")


def _tensors(buf: dict[str, Any] | None) -> dict[str, Any] | None:
    """A rollout batch for the checkpoint (its numpy arrays as tensors: the restricted
    unpickler loads tensors and plain data only)."""
    if buf is None:
        return None
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in buf.items()}


def _arrays(buf: dict[str, Any]) -> dict[str, Any]:
    """``_tensors`` undone (the h0 states stay tensors, as ``collect`` made them)."""
    return {k: v.numpy() if isinstance(v, torch.Tensor) and k not in ("ph", "pc", "vh", "vc")
            else v for k, v in buf.items()}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16) and torch has oneDNN
    (torch's own CPU capability probes)."""
    return torch.backends.mkldnn.is_available() and (
        torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def _keep(starts: np.ndarray | torch.Tensor) -> torch.Tensor:
    return (1.0 - torch.as_tensor(starts, dtype=torch.float32)).view(1, -1, 1)


class PPOTrainer:
    """Owns the nets, the optimiser, the envs and the running rollout state."""

    def __init__(self, cfg: PPOConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        # Small-batch fp32 LSTMs on CPU: oneDNN is 3-5x slower than the native kernels (and one
        # thread beats two when the rollout, MuJoCo, shares the cores). A bf16 update needs it:
        # its LSTM takes half the fp32 time there (without it, bf16 falls to slow reference
        # kernels); the rollout's cell_step does not go through it.
        self.bf16 = cfg.update_precision == "bf16" or (cfg.update_precision == "auto"
                                                        and cpu_has_native_bf16())
        torch.backends.mkldnn.enabled = self.bf16
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.spec = get_hand(cfg.hand)
        self.n_act = self.spec.n_actuators
        self.policy = PolicyNet(obs_dim(self.spec), self.n_act, cfg.bins, hold_prior=cfg.hold_prior,
                                dense=cfg.dense, hidden=cfg.lstm_hidden)
        self.value = ValueNet(value_obs_dim(self.spec), dense=cfg.dense, hidden=cfg.lstm_hidden)
        # The nets the rollout acts with: the learner's own, or (overlap) copies synced after
        # every update, so the update thread never changes weights the rollout is reading.
        self.act_policy, self.act_value = ((copy.deepcopy(self.policy), copy.deepcopy(self.value))
                                           if cfg.overlap else (self.policy, self.value))
        self._pending: dict[str, Any] | None = None  # (overlap) the batch awaiting its update
        self.opt = torch.optim.Adam([*self.policy.parameters(), *self.value.parameters()],
                                    lr=cfg.lr)
        self.iteration = 0
        self.total_steps = 0
        self.envs: DexCubeVectorEnv | None = None
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self.task = TaskConfig(bins=cfg.bins, goal_timeout_s=cfg.goal_timeout_s,
                               max_delta=cfg.max_delta or None, randomize=cfg.randomized)
        self.adr: VectorADR | None = None
        if cfg.adr:
            self.adr = VectorADR(default_adr_params(), cfg.n_envs,
                                 boundary_fraction=cfg.adr_boundary_fraction,
                                 queue_size=cfg.adr_queue, t_high=cfg.adr_t_high,
                                 t_low=cfg.adr_t_low)
        # ADR's own rng: boundary choices do not shift the torch / env streams.
        self.adr_rng = np.random.default_rng(cfg.seed + 1)

    # ---- rollout state -------------------------------------------------------------------------
    def _make_envs(self) -> DexCubeVectorEnv:
        self.envs = DexCubeVectorEnv(
            self.cfg.n_envs, self.cfg.hand, seed=self.cfg.seed + 7919 * self.iteration,
            task=self.task, reset_hook=self._adr_hook if self.adr is not None else None)
        return self.envs

    def _start_envs(self) -> None:
        n = self.cfg.n_envs
        self.obs, infos = self._make_envs().reset()
        self.vobs = infos["value_obs"]
        self.pstate = self.policy.initial_state(n)
        self.vstate = self.value.initial_state(n)
        self.starts = np.ones(n, dtype=np.float32)

    def _adr_hook(self, i: int, finished: dict | None) -> dict:
        """Env i is about to reset: report the finished episode (None on the first reset),
        then give the new episode its ADR ranges (one boundary pinned on evaluator slots)."""
        assert self.adr is not None
        succ = None if finished is None else float(finished["successes"])
        ranges, _, _ = self.adr.advance(i, self.adr_rng, succ)
        return {"ranges": ranges}

    @torch.no_grad()
    def collect(self) -> dict[str, Any]:
        """Run ``rollout_steps`` steps in each env; returns the batch (numpy/torch arrays)."""
        if self.envs is None:
            self._start_envs()
        cfg, n, t_len = self.cfg, self.cfg.n_envs, self.cfg.rollout_steps
        n_chunks = t_len // cfg.chunk
        buf = {
            "obs": np.zeros((t_len, n, self.obs.shape[1]), np.float32),
            "vobs": np.zeros((t_len, n, self.vobs.shape[1]), np.float32),
            "act": np.zeros((t_len, n, self.n_act), np.int64),
            "logp": np.zeros((t_len, n), np.float32),
            "val": np.zeros((t_len, n), np.float32),
            "rew": np.zeros((t_len, n), np.float32),
            "done": np.zeros((t_len, n), np.float32),
            "starts": np.zeros((t_len, n), np.float32),
        }
        h0 = {k: torch.zeros(n_chunks, 1, n, cfg.lstm_hidden) for k in ("ph", "pc", "vh", "vc")}
        ep_successes: list[int] = []
        ep_reasons: list[str] = []
        for t in range(t_len):
            if t % cfg.chunk == 0:
                i = t // cfg.chunk
                h0["ph"][i], h0["pc"][i] = self.pstate
                h0["vh"][i], h0["vc"][i] = self.vstate
            keep = _keep(self.starts)
            ps = (self.pstate[0] * keep, self.pstate[1] * keep)
            vs = (self.vstate[0] * keep, self.vstate[1] * keep)
            flat, self.pstate = self.act_policy.cell_step(torch.from_numpy(self.obs), ps)
            dist = Categorical(logits=self.act_policy.logits(flat))
            act = dist.sample()
            v, self.vstate = self.act_value.cell_step(torch.from_numpy(self.vobs), vs)
            buf["obs"][t], buf["vobs"][t], buf["starts"][t] = self.obs, self.vobs, self.starts
            buf["act"][t] = act.numpy()
            buf["logp"][t] = dist.log_prob(act).sum(-1).numpy()
            buf["val"][t] = v[:, 0].numpy()
            obs, rew, term, trunc, infos = self.envs.step(act.numpy())
            vobs = infos["value_obs"]
            ended = term | trunc
            if trunc.any():  # bootstrap V(final state) on timeouts
                fv = np.where(ended[:, None], infos["final_info"]["value_obs"], vobs)
                vf, _ = self.act_value.cell_step(torch.from_numpy(fv), self.vstate)
                rew = rew + cfg.gamma * vf[:, 0].numpy() * trunc
            done = ended.astype(np.float32)
            buf["rew"][t], buf["done"][t] = rew, done
            for i in np.flatnonzero(ended):
                ep_successes.append(int(infos["final_info"]["successes"][i]))
                ep_reasons.append(str(infos["final_info"]["end_reason"][i]))
            self.obs, self.vobs, self.starts = obs, vobs, done
        keep = _keep(self.starts)
        v_last, _ = self.act_value.cell_step(torch.from_numpy(self.vobs),
                                    (self.vstate[0] * keep, self.vstate[1] * keep))
        adv = self._gae(buf["rew"], buf["val"], buf["done"], v_last[:, 0].numpy())
        buf["adv"], buf["ret"] = adv, adv + buf["val"]
        buf.update(h0)
        buf["episodes"] = ep_successes
        buf["end_reasons"] = ep_reasons
        self.total_steps += t_len * n
        return buf

    def _gae(self, rew: np.ndarray, val: np.ndarray, done: np.ndarray,
             v_last: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        adv = np.zeros_like(rew)
        last = np.zeros(rew.shape[1], np.float32)
        for t in reversed(range(rew.shape[0])):
            v_next = v_last if t == rew.shape[0] - 1 else val[t + 1]
            nonterm = 1.0 - done[t]
            delta = rew[t] + cfg.gamma * v_next * nonterm - val[t]
            last = delta + cfg.gamma * cfg.lam * nonterm * last
            adv[t] = last
        return adv

    # ---- update --------------------------------------------------------------------------------
    def update(self, buf: dict[str, Any]) -> dict[str, float]:
        """PPO epochs over minibatches of chunks; then refresh the input normalisers."""
        cfg = self.cfg
        t_len, n = buf["rew"].shape
        c, n_chunks = cfg.chunk, t_len // cfg.chunk

        def chunked(a: np.ndarray) -> torch.Tensor:  # [T, n, ...] -> [c, n_chunks*n, ...]
            x = torch.as_tensor(a).reshape(n_chunks, c, n, *a.shape[2:])
            return x.transpose(0, 1).reshape(c, n_chunks * n, *a.shape[2:])

        data = {k: chunked(buf[k]) for k in
                ("obs", "vobs", "act", "logp", "adv", "ret", "starts")}
        h0 = {k: buf[k].permute(1, 0, 2, 3).reshape(1, n_chunks * n, cfg.lstm_hidden)
              for k in ("ph", "pc", "vh", "vc")}
        total = n_chunks * n
        stats: dict[str, list[float]] = {k: [] for k in _UPDATE_STATS}
        for _ in range(cfg.epochs):
            perm = torch.randperm(total, generator=self._gen)
            for s in range(0, total, cfg.minibatch_chunks):
                idx = perm[s:s + cfg.minibatch_chunks]
                mb = {k: v[:, idx] for k, v in data.items()}
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    flat = self.policy.sequence(mb["obs"], (h0["ph"][:, idx], h0["pc"][:, idx]),
                                                mb["starts"])
                    logits = self.policy.logits(flat)
                    v = self.value.sequence(mb["vobs"], (h0["vh"][:, idx], h0["vc"][:, idx]),
                                            mb["starts"])[..., 0]
                dist = Categorical(logits=logits.float())  # the losses in fp32
                logp = dist.log_prob(mb["act"]).sum(-1)
                ent = dist.entropy().sum(-1).mean()
                v = v.float()
                adv = mb["adv"]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = torch.exp(logp - mb["logp"])
                pi_loss = -torch.min(ratio * adv,
                                     torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv).mean()
                v_loss = 0.5 * (v - mb["ret"]).square().mean()
                loss = pi_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [*self.policy.parameters(), *self.value.parameters()], cfg.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    stats["pi_loss"].append(float(pi_loss))
                    stats["v_loss"].append(float(v_loss))
                    stats["entropy"].append(float(ent))
                    stats["clip_frac"].append(float(((ratio - 1).abs() > cfg.clip).float().mean()))
                    log_r = logp - mb["logp"]  # k3 estimator: >= 0, low variance
                    stats["approx_kl"].append(float((torch.exp(log_r) - 1 - log_r).mean()))
        # New statistics apply from the next rollout on (logp of this batch stays consistent).
        self.policy.norm.update(torch.from_numpy(buf["obs"]))
        self.value.norm.update(torch.from_numpy(buf["vobs"]))
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def iterate(self) -> dict[str, Any]:
        """One rollout + update (with ``overlap``: this rollout beside the previous batch's
        update); returns the per-iteration log record. Update statistics are nan in an
        iteration that updated nothing (the first with ``overlap``)."""
        t0 = time.perf_counter()
        if self.cfg.overlap:
            buf, stats, t1 = self._collect_beside_update()
        else:
            buf = self.collect()
            t1 = time.perf_counter()
            torch.set_num_threads(self.cfg.update_threads or os.cpu_count() or 1)
            try:
                stats = self.update(buf)
            finally:
                torch.set_num_threads(self.cfg.torch_threads)
        t2 = time.perf_counter()
        self.iteration += 1
        eps = buf["episodes"]
        n_steps = buf["rew"].size
        adr = self.adr.stats() if self.adr is not None else {}
        return {
            "iteration": self.iteration,
            "total_steps": self.total_steps,
            "mean_reward": float(buf["rew"].mean()),
            "episodes": len(eps),
            "successes_per_episode": float(np.mean(eps)) if eps else float("nan"),
            "drops": sum(r == "dropped" for r in buf["end_reasons"]),
            "steps_per_s": n_steps / (t2 - t0),
            "rollout_steps_per_s": n_steps / (t1 - t0),
            **stats,
            **adr,
        }

    def _collect_beside_update(self) -> tuple[dict[str, Any], dict[str, float], float]:
        """(this rollout's batch, the statistics of the previous batch's update, when the
        rollout ended). The update runs in a thread while this one steps the envs; torch and
        MuJoCo release the GIL in their heavy calls."""
        pending, self._pending = self._pending, None
        out: dict[str, Any] = {}

        def run_update() -> None:
            try:
                out["stats"] = self.update(pending)
            except BaseException as e:  # re-raised in the caller's thread
                out["error"] = e

        worker = threading.Thread(target=run_update, name="ppo-update", daemon=True)
        if pending is not None:
            worker.start()
        try:
            buf = self.collect()
            t_rollout = time.perf_counter()
        finally:
            if pending is not None:
                worker.join()
        if "error" in out:
            self._pending = pending  # not consumed: a caller that recovers can retry
            raise out["error"]
        self._sync_acting_nets()
        self._pending = buf
        stats = out.get("stats") or dict.fromkeys(_UPDATE_STATS, float("nan"))
        return buf, stats, t_rollout

    def _sync_acting_nets(self) -> None:
        if self.act_policy is not self.policy:
            self.act_policy.load_state_dict(self.policy.state_dict())
            self.act_value.load_state_dict(self.value.state_dict())

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        save_checkpoint({"config": asdict(self.cfg), "policy": self.policy.state_dict(),
                         "value": self.value.state_dict(), "opt": self.opt.state_dict(),
                         "iteration": self.iteration, "total_steps": self.total_steps,
                         "gen": self._gen.get_state(), "torch_rng": torch.get_rng_state(),
                         "adr": None if self.adr is None else self.adr.state_dict(),
                         "adr_rng": self.adr_rng.bit_generator.state,
                         "rollout": self._rollout_state(),
                         "pending": _tensors(self._pending)}, path)

    def _rollout_state(self) -> dict[str, Any] | None:
        """The envs mid-episode and what the rollout carries between iterations (a resumed run
        continues bit for bit)."""
        if self.envs is None:
            return None
        return {"envs": self.envs.state_dict(), "obs": torch.from_numpy(self.obs.copy()),
                "vobs": torch.from_numpy(self.vobs.copy()),
                "starts": torch.from_numpy(self.starts.copy()),
                "pstate": self.pstate, "vstate": self.vstate}

    def _restore_rollout(self, r: dict[str, Any]) -> None:
        """Replay the saved episodes (no reset hook runs: ADR stays as loaded)."""
        try:
            obs, vobs = self._make_envs().load_state_dict(r["envs"])
            why = "" if (np.array_equal(obs, r["obs"].numpy())
                         and np.array_equal(vobs, r["vobs"].numpy())) else (
                "the replayed episodes are not the saved ones (another MuJoCo version?)")
        except (ValueError, KeyError) as e:  # e.g. resumed with another --envs
            why = str(e)
        if why:
            warnings.warn(f"continuing with fresh episodes, the run is no longer bit-exact: "
                          f"{why}", stacklevel=3)
            self._start_envs()
            return
        self.obs, self.vobs, self.starts = obs, vobs, r["starts"].numpy().copy()
        self.pstate, self.vstate = tuple(r["pstate"]), tuple(r["vstate"])

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> PPOTrainer:
        ck = load_checkpoint(path)  # tensors and plain data only: never runs code
        # checkpoints from before the per-hand action scale trained every hand at 0.15
        cfg = PPOConfig(**{"max_delta": LEGACY_MAX_DELTA, **ck["config"], **overrides})
        tr = cls(cfg)
        tr.policy.load_state_dict(ck["policy"])
        tr.value.load_state_dict(ck["value"])
        tr.opt.load_state_dict(ck["opt"])
        tr.iteration, tr.total_steps = int(ck["iteration"]), int(ck["total_steps"])
        tr._gen.set_state(ck["gen"])
        if "torch_rng" in ck:
            torch.set_rng_state(ck["torch_rng"])
        if tr.adr is not None and ck.get("adr") is not None:
            tr.adr.load_state_dict(ck["adr"])
        if "adr_rng" in ck:
            tr.adr_rng.bit_generator.state = ck["adr_rng"]
        if ck.get("rollout") is not None:  # older checkpoints: fresh episodes
            tr._restore_rollout(ck["rollout"])
        tr._sync_acting_nets()
        if cfg.overlap and ck.get("pending") is not None:
            tr._pending = _arrays(ck["pending"])
        return tr
