"""Trial rules (Dactyl): goals, success, drop, timeout, reward. Shared by the training env, the
policy node and the evaluator so all three judge a trial identically.

A trial: a sequence of random goal orientations drawn by the config's ``goal_rule``:
- ``uniform`` (Dactyl): each goal uniformly random over SO(3);
- ``far90`` (DROP, arXiv 2409.14562): each new goal uniformly random among orientations at least
  90° from the previous goal (the first goal uniform).
Each ``step`` judges the cube pose:
- **dropped**: cube centre z < ``drop_height`` → trial ends, reward −20 (plus the shaping term);
- **success**: rotation distance to the goal < ``success_threshold`` → +5, next goal (the
  50th success ends the trial as **completed**);
- **timeout**: ``goal_timeout_s`` of stamp time since the current goal was set without reaching it
  → trial ends;
- otherwise **running**. Shaping reward every step: r = d_prev − d_now (rotation distance to the
  goal judged this step).
A drop is checked before success (a falling cube that passes through the goal is still lost).
Goals come only from the tracker's own ``numpy`` Generator seeded by ``start(seed)``, so a seed
gives the same goal sequence in the env, the node and the evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from dex_common.rotations import _finite4, _qnormalize, _rotation_distance, random_quat
from dex_description.registry import SHADOW, HandSpec

SUCCESS_BONUS = 5.0
DROP_PENALTY = -20.0
# Cube centre this far below its reset height counts as dropped: more than the cube's half edge
# (0.0275 m) below where it rests on the palm, so it has left the palm, not merely tilted.
DEFAULT_DROP_MARGIN = 0.05

STATES = ("running", "success", "dropped", "timeout", "completed")
GOAL_RULES = ("uniform", "far90")
# far90: minimum rotation from the previous goal (rad).
FAR_GOAL_MIN_ANGLE = math.pi / 2
# Stamps are float seconds summed from control periods; allow rounding noise at the timeout edge.
_TIME_EPS = 1e-6


def default_drop_height(hand: HandSpec = SHADOW, margin: float = DEFAULT_DROP_MARGIN) -> float:
    """Drop height (m, world z) derived from the registry cube rest height."""
    return float(hand.cube.rest_pos[2]) - margin


@dataclass
class TrialConfig:
    success_threshold: float = 0.4  # rad
    goals_per_trial: int = 50
    goal_timeout_s: float = 8.0  # stamp (sim) seconds per goal
    drop_height: float = field(default_factory=default_drop_height)  # m, cube centre z
    control_period: float = SHADOW.control_period  # s
    goal_rule: str = "uniform"  # see GOAL_RULES

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def for_hand(cls, hand: HandSpec, **overrides: float) -> TrialConfig:
        """Defaults taken from ``hand`` (drop height, control period), then ``overrides``."""
        kw: dict = {"drop_height": default_drop_height(hand), "control_period": hand.control_period}
        kw.update(overrides)
        return cls(**kw)

    def validate(self) -> None:
        """Raises ValueError naming every bad field."""
        errs = []

        def num(name: str) -> float | None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                errs.append(f"{name} must be a number; got {v!r}")
                return None
            if not math.isfinite(float(v)):
                errs.append(f"{name} must be finite; got {v!r}")
                return None
            return float(v)

        st = num("success_threshold")
        if st is not None and not 0.0 < st <= math.pi:
            errs.append(f"success_threshold must be in (0, pi] rad; got {st}")
        g = self.goals_per_trial
        if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1:
            errs.append(f"goals_per_trial must be an integer >= 1; got {g!r}")
        gt = num("goal_timeout_s")
        if gt is not None and gt <= 0:
            errs.append(f"goal_timeout_s must be > 0 s; got {gt}")
        cp = num("control_period")
        if cp is not None and cp <= 0:
            errs.append(f"control_period must be > 0 s; got {cp}")
        if gt is not None and cp is not None and cp > 0 and gt < cp:
            errs.append(f"goal_timeout_s ({gt}) must be at least one control_period ({cp})")
        dh = num("drop_height")
        if dh is not None and not -10.0 < dh < 10.0:
            errs.append(f"drop_height must be a plausible world z in m (|z| < 10); got {dh}")
        if self.goal_rule not in GOAL_RULES:
            errs.append(f"goal_rule must be one of {', '.join(GOAL_RULES)}; got {self.goal_rule!r}")
        if errs:
            raise ValueError("invalid TrialConfig: " + "; ".join(errs))

    @property
    def steps_per_goal(self) -> int:
        """Control steps before a goal times out."""
        return int(math.ceil(self.goal_timeout_s / self.control_period - _TIME_EPS))


class TrialEvent(NamedTuple):
    """One judged control step (immutable). A named tuple, not a frozen dataclass: the env
    makes one per env step, and a frozen dataclass costs ~2x as much to build."""

    state: str  # running | success | dropped | timeout | completed
    reward: float
    successes: int
    goal_index: int  # index of the goal pursued after this step (0-based)
    rotation_error: float  # rad, to the goal judged this step
    ended: bool
    end_reason: str  # dropped | timeout | completed | ""
    steps: int
    stamp: float
    goal: np.ndarray  # (w,x,y,z) pursued after this step

    @property
    def goal_changed(self) -> bool:
        return self.state == "success"


class TrialTracker:
    """Judges one trial at a time. ``start(seed)`` then ``step(stamp, pos, quat)`` per control step."""

    def __init__(self, config: TrialConfig | None = None) -> None:
        self.config = config if config is not None else TrialConfig()
        self.config.validate()
        self._rng: np.random.Generator | None = None
        self._goal: np.ndarray | None = None
        self.seed: int | None = None
        self.start_stamp: float | None = None  # when the first goal was set (s)
        self._last: TrialEvent | None = None

    # ---- state -------------------------------------------------------------------------------
    @property
    def goal(self) -> np.ndarray:
        if self._goal is None:
            raise RuntimeError("TrialTracker.goal read before start(seed)")
        return self._goal.copy()

    @property
    def started(self) -> bool:
        return self._goal is not None

    @property
    def ended(self) -> bool:
        return self._last is not None and self._last.ended

    @property
    def last_event(self) -> TrialEvent | None:
        return self._last

    # ---- API ---------------------------------------------------------------------------------
    def start(
        self, seed: int, cube_quat: np.ndarray | None = None, stamp: float | None = None
    ) -> np.ndarray:
        """Begin a trial; returns the first goal (sampled from ``seed`` only).

        ``cube_quat`` (optional): the cube's orientation now, so the first step's shaping reward
        is d_0 − d_1 (without it the first step's reward is 0). ``stamp`` (optional): the time
        the first goal is set; default = first step's stamp − control_period (the first step
        judges the state one control period after the reset state).
        """
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._set_goal(random_quat(self._rng))  # the first goal is uniform under every rule
        self._goal_index = 0
        self._successes = 0
        self._steps = 0
        self._last = None
        self._prev_stamp: float | None = None
        self._d_prev: float | None = None
        if cube_quat is not None:
            self._d_prev = _rotation_distance(self._checked_quat(cube_quat), self._goal_unit)
        if stamp is not None and not math.isfinite(float(stamp)):
            raise ValueError(f"stamp must be finite; got {stamp!r}")
        self._goal_start = None if stamp is None else float(stamp)
        self.start_stamp = self._goal_start
        return self.goal

    def shift_time(self, offset: float) -> None:
        """Move the trial's stamps by ``offset`` s (the inputs' time jumped: a clock step, a
        sim restarted under us). Time spent on the goal so far is kept."""
        if not math.isfinite(float(offset)):
            raise ValueError(f"offset must be finite; got {offset!r}")
        if getattr(self, "_prev_stamp", None) is not None:
            self._prev_stamp += offset
        if getattr(self, "_goal_start", None) is not None:
            self._goal_start += offset
        if self.start_stamp is not None:
            self.start_stamp += offset

    def step(self, stamp: float, cube_pos: np.ndarray, cube_quat: np.ndarray) -> TrialEvent:
        """Judge one control step. Raises ValueError on a NaN/inf pose or a non-increasing stamp
        (callers hold their last command); RuntimeError before ``start``. After the trial has
        ended, returns the final event again with reward 0 (idempotent)."""
        t = float(stamp)
        if not math.isfinite(t):
            raise ValueError(f"stamp must be finite; got {stamp!r}")
        # Inputs are external (node / evaluator), so they are checked — as Python floats, which is
        # ~10x cheaper than numpy reductions on 3-4 values.
        pos = np.asarray(cube_pos, dtype=np.float64)
        p = pos.tolist()
        if pos.shape != (3,) or not all(map(math.isfinite, p)):
            raise ValueError(f"cube_pos must be 3 finite values; got {np.asarray(cube_pos).tolist()}")
        return self._judge(t, p[2], self._checked_quat(cube_quat))

    def step_trusted(self, stamp: float, z: float, quat: Sequence[float]) -> TrialEvent:
        """``step`` for a pose the caller computed itself from its own physics state (the
        training env: finite by construction): cube height ``z`` and quaternion ``quat`` as
        floats. Same judgement, same bits (the quaternion is normalized as ``step`` does); only
        the input checks are skipped. Stamps must still increase."""
        return self._judge(stamp, z, _qnormalize(_qnormalize(quat)))

    def _judge(self, t: float, z: float, q: list[float]) -> TrialEvent:
        if self._goal is None:
            raise RuntimeError("TrialTracker.step called before start(seed)")
        if self._last is not None and self._last.ended:
            return _replace_reward(self._last, 0.0)
        if self._prev_stamp is not None and t <= self._prev_stamp:
            raise ValueError(f"stamps must increase: {t} after {self._prev_stamp}")
        c = self.config
        if self._goal_start is None:
            self._goal_start = t - c.control_period
            self.start_stamp = self._goal_start
        self._prev_stamp = t
        self._steps += 1

        d = _rotation_distance(q, self._goal_unit)
        reward = 0.0 if self._d_prev is None else self._d_prev - d
        self._d_prev = d
        state, end_reason = "running", ""
        if z < c.drop_height:
            state, end_reason = "dropped", "dropped"
            reward += DROP_PENALTY
        elif d < c.success_threshold:
            reward += SUCCESS_BONUS
            self._successes += 1
            if self._successes >= c.goals_per_trial:
                state, end_reason = "completed", "completed"
            else:
                state = "success"
                self._set_goal(self._next_goal())
                self._goal_index += 1
                self._goal_start = t
                self._d_prev = _rotation_distance(q, self._goal_unit)
        elif t - self._goal_start >= c.goal_timeout_s - _TIME_EPS:
            state, end_reason = "timeout", "timeout"
        ev = TrialEvent(
            state=state,
            reward=float(reward),
            successes=self._successes,
            goal_index=self._goal_index,
            rotation_error=float(d),
            ended=bool(end_reason),
            end_reason=end_reason,
            steps=self._steps,
            stamp=t,
            goal=self._goal,  # read-only: a new goal is a new array
        )
        self._last = ev
        return ev

    def _next_goal(self) -> np.ndarray:
        """The goal after a success, by ``config.goal_rule`` (from the tracker's own rng)."""
        q = random_quat(self._rng)
        if self.config.goal_rule == "far90":
            # Rejection sampling: ~82% of uniform rotations are >= 90 deg from any given one.
            while _rotation_distance(q.tolist(), self._goal_unit) < FAR_GOAL_MIN_ANGLE:
                q = random_quat(self._rng)
        return q

    def _set_goal(self, goal: np.ndarray) -> None:
        goal.flags.writeable = False  # shared by the events that pursue it
        self._goal = goal
        # Unit goal as floats for the per-step distance (normalized once per goal, as
        # rotation_distance would normalize it on every call: same bits).
        self._goal_unit = _qnormalize(goal.tolist())

    @staticmethod
    def _checked_quat(quat: np.ndarray) -> list[float]:
        """External cube quaternion → unit quaternion as 4 floats (ValueError if bad)."""
        try:
            v = _finite4(quat, "cube_quat")
        except ValueError:
            raise ValueError(f"cube_quat must be 4 finite values (w,x,y,z); got "
                             f"{np.asarray(quat, dtype=np.float64).tolist()}") from None
        # Normalized twice, as quat_normalize followed by rotation_distance did: the distances
        # (and rewards) stay bit-identical to the numpy implementation.
        return _qnormalize(_qnormalize(v))


def _replace_reward(ev: TrialEvent, reward: float) -> TrialEvent:
    return ev._replace(reward=reward)
