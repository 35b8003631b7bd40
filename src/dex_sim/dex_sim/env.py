"""Minimal training env (gymnasium API) on the SAME cores the ROS graph runs.

``DexCubeEnv`` steps ``HandCubeSim`` (render=False), judges with ``TrialTracker``, decodes actions
with ``ActionDecoder`` and builds observations with ``policy_observation_values`` (what
``policy_observation`` computes) — the code the sim node and the policy node use. Fingertips are
the sim's fingertip sites, which equal what the policy node's ``HandKinematics`` computes from
the joint angles bit for bit (tested). The step itself runs in ``dex_sim.phases`` (commands,
physics, outcomes), for one env or for all members of a ``VecDexCubeEnv`` at once.

``TaskConfig`` holds the task (Dactyl defaults) and opts into domain randomization
(``dex_sim.randomization``; off by default, so ``DexCubeEnv()`` behaves as before). With it on,
the policy observation carries the noise and the value observation the TRUE state.

Action: one bin index per actuator (MultiDiscrete 11; Shadow 20, LEAP 16) or, with
``TaskConfig(discrete=False)``, floats in [-1, 1] (x max_delta rad, same EMA). Observation: the
policy observation (``policy_obs_layout(hand)``: Shadow 22 floats, LEAP 19) (+ the cube
quaternion with ``obs_cube_orientation``); ``info["value_obs"]`` holds the asymmetric value
observation (``value_obs_layout``). Episode = one trial: terminated on drop / 50 goals, truncated
on the goal timeout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dex_common.actions import BINS, EMA, ActionDecoder, max_delta_of
from dex_common.observations import policy_obs_layout
from dex_common.trial import GOAL_RULES, TrialConfig, TrialTracker
from dex_description.kinematics import HandKinematics
from dex_description.registry import HandSpec, get_hand
from dex_sim.phases import PhasedStep
from dex_sim.physics import HandCubeSim
from dex_sim.randomization import DomainRandomizer, check_ranges, resolve_enabled


def value_obs_layout(hand: HandSpec) -> list[tuple[str, int]]:
    """Asymmetric critic input (Dactyl): policy obs + privileged state."""
    return [*policy_obs_layout(hand), ("cube_quat", 4), ("goal_quat", 4),
            ("joint_pos", hand.n_joints), ("joint_vel", hand.n_joints),
            ("cube_linvel", 3), ("cube_angvel", 3)]


def value_obs_dim(hand: HandSpec | str = "shadow") -> int:
    spec = get_hand(hand) if isinstance(hand, str) else hand
    return sum(n for _, n in value_obs_layout(spec))


@dataclass
class TaskConfig:
    """The task (Dactyl defaults) and which randomizations are on.

    ``randomize``: False (default: none), True (all of ``RANDOMIZATIONS``) or a set of parameter
    and/or group names (``physics``, ``observation``, ``action``, ``unmodeled``, ``timing``).
    ``ranges``: static ``{name: (lo, hi)}`` overrides (ADR passes its own per episode).
    """

    success_threshold: float = TrialConfig.success_threshold  # rad
    goals_per_trial: int = TrialConfig.goals_per_trial
    goal_timeout_s: float = TrialConfig.goal_timeout_s  # s of sim time per goal
    goal_rule: str = TrialConfig.goal_rule  # GOAL_RULES ("far90": >= 90 deg from the last)
    drop_height: float | None = None  # m, cube centre z; None = from the registry cube
    discrete: bool = True  # False: continuous actions in [-1, 1]
    bins: int = BINS
    # rad per step at the extreme bin / action 1; None = the hand's (``max_delta_of``: 0.15,
    # Shadow 0.3). The env's own ``task`` always holds the number.
    max_delta: float | None = None
    ema: float = EMA  # weight of the previous smoothed delta (ActionDecoder convention)
    obs_cube_orientation: bool = False  # add the (noisy) cube quaternion to the policy obs
    randomize: bool | frozenset[str] | set[str] = False
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming every bad field."""
        errs = []

        def number(name: str, lo: float, hi: float, lo_open: bool = True) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)):
                errs.append(f"{name} must be a finite number; got {v!r}")
            elif (v <= lo if lo_open else v < lo) or v > hi:
                errs.append(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}]; got {v!r}")

        number("success_threshold", 0.0, math.pi)
        number("goal_timeout_s", 0.0, 1e6)
        if self.goal_rule not in GOAL_RULES:
            errs.append(f"goal_rule must be one of {', '.join(GOAL_RULES)}; got {self.goal_rule!r}")
        if self.max_delta is not None:
            number("max_delta", 0.0, math.pi)
        number("ema", 0.0, 0.999999, lo_open=False)
        if self.drop_height is not None:
            number("drop_height", -10.0, 10.0)
        for name in ("goals_per_trial", "bins"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (
                    1 if name == "goals_per_trial" else 2):
                errs.append(f"{name} must be an integer >= "
                            f"{1 if name == 'goals_per_trial' else 2}; got {v!r}")
        for name in ("discrete", "obs_cube_orientation"):
            if not isinstance(getattr(self, name), bool):
                errs.append(f"{name} must be True or False; got {getattr(self, name)!r}")
        try:
            if not isinstance(self.randomize, (bool, set, frozenset, list, tuple)):
                raise ValueError(f"randomize must be a bool or a set of names; got "
                                 f"{self.randomize!r}")
            resolve_enabled(self.randomize)
        except ValueError as e:
            errs.append(str(e))
        try:
            check_ranges(self.ranges)
        except (ValueError, AttributeError) as e:
            errs.append(str(e))
        if errs:
            raise ValueError("invalid TaskConfig: " + "; ".join(errs))

    def trial_config(self, spec: HandSpec) -> TrialConfig:
        kw: dict[str, Any] = {"success_threshold": float(self.success_threshold),
                              "goals_per_trial": int(self.goals_per_trial),
                              "goal_timeout_s": float(self.goal_timeout_s),
                              "goal_rule": self.goal_rule}
        if self.drop_height is not None:
            kw["drop_height"] = float(self.drop_height)
        return TrialConfig.for_hand(spec, **kw)

    @property
    def enabled(self) -> frozenset[str]:
        return resolve_enabled(self.randomize)


class ContinuousActionDecoder(ActionDecoder):
    """``ActionDecoder`` with continuous actions: a in [-1, 1] -> delta = a * max_delta (rad),
    then the same EMA and clipping (``decode`` is inherited, so the conventions are shared)."""

    def deltas(self, action: np.ndarray, rows: int | None = None) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        shape = (self.n,) if rows is None else (rows, self.n)
        if a.shape != shape:
            raise ValueError(f"action must have shape {shape}; got {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 1.0):
            raise ValueError(f"continuous actions must be finite and in [-1, 1]; got {a.tolist()}")
        return a * self.max_delta

    def describe(self) -> dict:
        return dict(super().describe(), mode="relative_continuous", bins=None)


class DexCubeEnv(gym.Env):
    """One hand + cube; one step = one control period (80 ms)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, hand: str = "shadow", seed: int | None = None,
                 trial_config: TrialConfig | None = None, task: TaskConfig | None = None,
                 randomizer: Callable[[HandCubeSim], DomainRandomizer] | None = None) -> None:
        """``randomizer``: a factory ``sim -> DomainRandomizer`` (default: one built from
        ``task.randomize``; none when that is off). ``trial_config`` overrides the task's
        trial rules (kept for existing callers)."""
        self.hand = hand
        self.hand_spec = get_hand(hand)
        task = task if task is not None else TaskConfig()
        if task.max_delta is None:
            task = replace(task, max_delta=max_delta_of(self.hand_spec))
        self.task = task
        self.task.validate()
        self.sim = HandCubeSim(hand, render=False)
        self.kin = HandKinematics(hand)  # the policy node's FK (tests: == the sim's sites)
        self.tracker = TrialTracker(trial_config or self.task.trial_config(self.hand_spec))
        t = self.task
        dec = ActionDecoder if t.discrete else ContinuousActionDecoder
        self.decoder = dec(self.hand_spec, bins=t.bins, max_delta=t.max_delta, ema=t.ema)
        self._act_matrix = self.hand_spec.actuation_matrix()
        self._rng = np.random.default_rng(seed)
        self._seeds: list[int] = []  # episode seeds not yet used (reset without a seed)
        if randomizer is not None:
            self.randomizer: DomainRandomizer | None = randomizer(self.sim)
        elif t.enabled:
            self.randomizer = DomainRandomizer(self.sim, t.enabled)
        else:
            self.randomizer = None
        self.ranges: dict[str, tuple[float, float]] = dict(t.ranges)  # ADR: set_ranges
        self.episode_rng = np.random.default_rng(0)  # per episode: the reset's generator
        self.last_draw: Any = None
        self.obs_layout = policy_obs_layout(self.hand_spec) + (
            [("cube_quat", 4)] if t.obs_cube_orientation else [])
        self.obs_dim = sum(n for _, n in self.obs_layout)
        self.value_dim = value_obs_dim(self.hand_spec)
        self.n_actuators, self.bins = self.hand_spec.n_actuators, self.decoder.bins
        if t.discrete:
            self.action_space: spaces.Space = spaces.MultiDiscrete(
                [self.bins] * self.n_actuators, seed=seed)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (self.n_actuators,), np.float32, seed=seed)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.episode_seed: int | None = None
        self.last_event: Any = None
        # The step runs in a batch (``dex_sim.phases``): of this env alone, or of all members
        # of a VecDexCubeEnv (which rebinds ``_batch`` / ``_row``).
        self._batch, self._row = PhasedStep([self]), 0

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset physics and the trial with ``seed`` (drawn from the env's rng when None)."""
        if seed is None:
            if not self._seeds:  # drawn 64 at a time: one Generator call per 64 episodes
                self._seeds = self._rng.integers(0, 2**31 - 1, size=64).tolist()[::-1]
            seed = self._seeds.pop()
        self.episode_seed = int(seed)
        rng = self.sim.reset(self.episode_seed)
        if self.randomizer is not None:
            # Randomization draws continue the reset's generator (seeded by the episode seed
            # only): reset(seed) reproduces them.
            self.episode_rng = rng
            ranges = self.ranges
            if options and options.get("ranges"):
                ranges = {**ranges, **options["ranges"]}
            self.last_draw = self.randomizer.sample(self.episode_rng, ranges)
            self.randomizer.apply(self.last_draw)
        # The goal clock starts at the reset state's stamp, which is then judged like every
        # later state (reward 0) — the policy node does exactly the same on a trial's first set.
        self.tracker.start(self.episode_seed, stamp=self.sim.time)
        # Decoder starts from the measured actuator positions, as the policy node does.
        self.decoder.reset(self.current_actuator_positions())
        batch, row = self._batch, self._row
        batch.bind(row)
        obs, _, _, _, _, infos = batch.outcomes(only=row)
        return obs[0], infos[0]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply one bin index per actuator (decoded by ``ActionDecoder``) for one control period."""
        batch = self._solo()
        batch.physics(batch.commands(np.asarray(action)[None]))
        return self._outcome(batch)

    def step_targets(self, targets: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply absolute actuator targets (e.g. from ``PolicyRuntime.act``) for one period;
        they pass the sim's ``CommandGuard`` (bad values are held / clamped) as on the node."""
        batch = self._solo()
        # The guard first, so action noise / backlash / delay never see a NaN command.
        batch.physics(batch.apply(self.sim.guard.check(targets)[1][None]))
        return self._outcome(batch)

    def _solo(self) -> PhasedStep:
        """This env's own batch (a VecDexCubeEnv member is stepped by its vector env, whose
        batch holds the member's decoder and effects state)."""
        if self._batch.n != 1:
            raise RuntimeError("this env is a member of a VecDexCubeEnv: step the vector env")
        if self.episode_seed is None:
            raise RuntimeError("DexCubeEnv.step called before reset()")
        return self._batch

    @staticmethod
    def _outcome(batch: PhasedStep) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, _, rew, term, trunc, infos = batch.outcomes()
        return obs[0], rew[0], term[0], trunc[0], infos[0]

    # ---- helpers -------------------------------------------------------------------------------
    def current_actuator_positions(self) -> np.ndarray:
        """Actuator-space positions (A @ q; coupled J0 = J1 + J2) from the joint angles."""
        return self._act_matrix @ self.sim.joint_positions()

    def seed_stream_state(self) -> dict[str, Any]:
        """Where this env's episode seeds stand (``reset()`` without a seed draws the next):
        plain data, for a checkpoint."""
        return {"rng": self._rng.bit_generator.state, "unused": list(self._seeds),
                "ranges": {k: list(v) for k, v in self.ranges.items()}}

    def set_seed_stream_state(self, state: Mapping[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._seeds = [int(x) for x in state["unused"]]
        self.set_ranges({k: tuple(v) for k, v in state["ranges"].items()})

    def set_ranges(self, ranges: Mapping[str, tuple[float, float]]) -> None:
        """Randomization ranges for the following episodes (ADR); validated now."""
        self.ranges = check_ranges(ranges)

    def close(self) -> None:
        self.sim.close()


ResetHook = Callable[[int, dict | None], dict | None]


class VecDexCubeEnv:
    """The batched engine behind ``DexCubeVectorEnv`` (use that: gymnasium's vector API).
    ``n`` envs stepped together, auto-reset on episode end (the finished episode's last info,
    with ``final=True``, ``final_obs`` and ``final_value_obs``, replaces that env's info).

    Arrays are stacked: obs [n, obs_dim], value_obs [n, V], rewards/terminated/truncated [n].
    Episode seeds come from each env's own rng (env i seeded with ``seed * 1000 + i``).

    ``reset_hook(i, finished_info)`` (optional) is called before EVERY reset of env i — the first
    one (``finished_info`` None) and each automatic one (the finished episode's last info) — and
    its return value is passed as ``env.reset(options=...)``: ADR hands each new episode its
    ranges (``{"ranges": {...}}``) and learns the finished episode's successes."""

    def __init__(self, n: int, hand: str = "shadow", seed: int = 0,
                 task: TaskConfig | None = None, reset_hook: ResetHook | None = None) -> None:
        if n < 1:
            raise ValueError(f"need at least one env; got {n}")
        task = task if task is not None else TaskConfig()
        self.envs = [DexCubeEnv(hand, seed=seed * 1000 + i, task=task) for i in range(n)]
        self.n = n
        self.reset_hook = reset_hook
        self._batch = PhasedStep(self.envs)
        for i, env in enumerate(self.envs):
            env._batch, env._row = self._batch, i
        self._started = False
        # Per member, what replays its episode so far: the reset options and every action since.
        self._options: list[dict | None] = [None] * n
        self._actions: list[list[np.ndarray]] = [[] for _ in range(n)]

    def _reset_one(self, i: int, finished: dict | None, seed: int | None = None
                   ) -> tuple[np.ndarray, dict]:
        opts = self.reset_hook(i, finished) if self.reset_hook is not None else None
        self._options[i], self._actions[i] = opts, []
        return self.envs[i].reset(seed=seed, options=opts)

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything that puts these envs back where they are, as plain data: per member its
        episode's seed, reset options and actions so far (``load_state_dict`` replays them:
        an episode is a function of those), and its seed stream."""
        if not self._started:
            raise RuntimeError("VecDexCubeEnv.state_dict called before reset()")
        return {"n": self.n, "members": [
            {"seed": env.episode_seed, "options": _plain(self._options[i]),
             "actions": [a.tolist() for a in self._actions[i]], **env.seed_stream_state()}
            for i, env in enumerate(self.envs)]}

    def load_state_dict(self, state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Restore ``state_dict``'s envs (replaying each member's episode alone: the bits it
        gets in the batch, tested); returns (obs [n, D], value obs [n, V]) as they were."""
        members = state["members"]
        if state["n"] != self.n or len(members) != self.n:
            raise ValueError(f"env state is for {state['n']} envs; this vector env has {self.n}")
        out = [self._replay(i, m) for i, m in enumerate(members)]
        self._started = True
        return np.stack([o for o, _ in out]), np.stack([info["value_obs"] for _, info in out])

    def _replay(self, i: int, member: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
        env, actions = self.envs[i], member["actions"]
        env.set_seed_stream_state(member)
        solo = PhasedStep([env])
        env._batch, env._row = solo, 0
        try:
            obs, info = env.reset(seed=member["seed"], options=member["options"])
            for k, a in enumerate(actions):
                obs, _, term, trunc, info = env.step(np.asarray(a))
                if (term or trunc) and k < len(actions) - 1:
                    raise ValueError(f"env {i}: the replayed episode ended at step {k + 1} of "
                                     f"{len(actions)}")
        finally:
            env._batch, env._row = self._batch, i
        self._batch.bind(i)  # decoder state and the episode's effect constants ...
        self._batch.effects.copy_row(i, solo.effects)  # ... and where the effects stand
        self._options[i] = member["options"]
        self._actions[i] = [np.asarray(a) for a in actions]
        return obs, info

    def reset(self, seed: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Reset every env: (obs [n, D], value obs [n, V]). ``seed``: episode seeds ``seed + i``
        (an int) or one per env (a sequence); None = each env draws its own."""
        obs, vobs, _ = self.reset_with_infos(seed)
        return obs, vobs

    def reset_with_infos(self, seed: int | Sequence[int] | None = None
                         ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """``reset`` that also returns each env's reset info."""
        seeds = _member_seeds(seed, self.n)
        out = [self._reset_one(i, None, seeds[i]) for i in range(self.n)]
        self._started = True
        infos = [info for _, info in out]
        return np.stack([o for o, _ in out]), np.stack([i["value_obs"] for i in infos]), infos

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, list[dict]]:
        """One control step of every env: each phase (commands, physics, outcomes; see
        ``dex_sim.phases``) across all members in turn. An env whose episode ended is reset and
        its row holds the new episode's first observations. Every member's numbers are the
        bits it gets stepped alone (tested)."""
        if not self._started:
            raise RuntimeError("VecDexCubeEnv.step called before reset()")
        batch = self._batch
        actions = np.array(actions)  # a copy: the replay record keeps each step's actions
        for log, a in zip(self._actions, actions, strict=True):
            log.append(a)
        batch.physics(batch.commands(actions))
        obs, vobs, rew, term, trunc, infos = batch.outcomes()
        for i in range(self.n):
            if term[i] or trunc[i]:
                # Keep the final observations: PPO bootstraps V(final) on truncation (timeout).
                info = infos[i] = dict(infos[i], final=True, final_obs=obs[i].copy(),
                                       final_value_obs=vobs[i].copy())
                obs[i], reset_info = self._reset_one(i, info)
                vobs[i] = info["value_obs"] = reset_info["value_obs"]
        return obs, vobs, np.array(rew, np.float32), np.array(term), np.array(trunc), infos

    def close(self) -> None:
        for e in self.envs:
            e.close()


def _plain(x: Any) -> Any:
    """``x`` with numpy scalars and tuples as Python numbers and lists (checkpoint-safe)."""
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def _member_seeds(seed: int | Sequence[int] | None, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    seeds = [int(x) for x in seed]
    if len(seeds) != n:
        raise ValueError(f"need {n} seeds (one per env); got {len(seeds)}")
    return seeds


class DexCubeVectorEnv(gym.vector.VectorEnv):
    """``VecDexCubeEnv`` (the batched step the trainer uses) behind gymnasium's ``VectorEnv`` API.

    Autoreset is gymnasium's ``SAME_STEP`` mode (``metadata["autoreset_mode"]``): an env whose
    episode ended is reset within the same ``step``, which returns the new episode's first
    observation; the finished episode's last observation and info are in
    ``infos["final_obs"]`` / ``infos["final_info"]`` (masks ``_final_obs`` / ``_final_info``).
    ``infos`` holds per env ``value_obs`` [n, V] (the asymmetric critic input), ``successes``,
    ``state``, ``end_reason`` and ``seed``, each with gymnasium's ``_key`` mask. Env i is the
    DexCubeEnv seeded ``seed * 1000 + i``; ``reset(seed=s)`` starts env i's episode with seed
    ``s + i``. ``reset_hook``: as ``VecDexCubeEnv``'s (ADR gives each new episode its ranges).
    This is the vector env the PPO trainer steps; the same DexCubeEnvs also run in a plain
    gymnasium ``SyncVectorEnv`` (next-step autoreset), stepped one by one (tested)."""

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP,
                                "render_modes": []}
    _KEYS = ("successes", "state", "end_reason", "seed")

    def __init__(self, n: int, hand: str = "shadow", seed: int = 0,
                 task: TaskConfig | None = None, reset_hook: ResetHook | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"need at least one env; got {n!r}")
        self.vec = VecDexCubeEnv(n, hand, seed=seed, task=task, reset_hook=reset_hook)
        e0 = self.vec.envs[0]
        self.num_envs = n
        self.single_observation_space = e0.observation_space
        self.single_action_space = e0.action_space
        self.observation_space = gym.vector.utils.batch_space(e0.observation_space, n)
        self.action_space = gym.vector.utils.batch_space(e0.action_space, n)
        self._all = np.ones(n, dtype=bool)

    @property
    def envs(self) -> list[DexCubeEnv]:
        """The member envs (row i = env i)."""
        return self.vec.envs

    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError("DexCubeVectorEnv.reset takes no options (per-episode randomization "
                             "ranges: VecDexCubeEnv's reset_hook)")
        obs, vobs, infos = self.vec.reset_with_infos(seed)
        return obs, self._infos(vobs, infos)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 dict[str, Any]]:
        obs, vobs, rew, term, trunc, infos = self.vec.step(actions)
        out = self._infos(vobs, infos)
        ended = term | trunc
        if ended.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            final_vobs = np.zeros_like(vobs)
            for i in np.flatnonzero(ended):
                final_obs[i], final_vobs[i] = infos[i]["final_obs"], infos[i]["final_value_obs"]
            out["final_obs"], out["_final_obs"] = final_obs, ended
            out["final_info"] = self._infos(final_vobs, infos, mask=ended)
            out["_final_info"] = ended
        return obs, rew, term, trunc, out

    def _infos(self, vobs: np.ndarray, infos: Sequence[dict],
               mask: np.ndarray | None = None) -> dict[str, Any]:
        """gymnasium's dict-of-arrays infos from the per-env info dicts."""
        m = self._all if mask is None else mask
        out: dict[str, Any] = {"value_obs": vobs, "_value_obs": m}
        for k in self._KEYS:
            out[k] = np.array([inf[k] for inf in infos],
                              dtype=np.int64 if k in ("successes", "seed") else object)
            out["_" + k] = m
        return out

    def state_dict(self) -> dict[str, Any]:
        """``VecDexCubeEnv.state_dict``: plain data that restores every episode exactly."""
        return self.vec.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Restore ``state_dict``; returns (obs [n, D], value obs [n, V]) as they were."""
        return self.vec.load_state_dict(state)

    def close_extras(self, **kwargs: Any) -> None:
        self.vec.close()
