"""The per-control-step randomization effects of n episodes (one row per episode).

``DomainRandomizer`` decides per episode what each effect does (``dex_sim.randomization``
documents the models) and draws the per-step random numbers from that episode's own generator;
this module holds what changes from step to step (backlash play, delayed targets, the random
force, a frozen cube reading) and applies the effects. The training env uses a batch of one
(``DomainRandomizer``'s own ``effects``), the vector env one row per member: the same code.

Action effects act on ``[n, A]`` arrays in a few numpy operations for all rows at once. The
random force and the observation effects are arithmetic on a handful of floats per row (a
3-vector, quaternions): Python floats are several times cheaper there than numpy calls, so
that state is kept as per-row Python values.

An effect that is off in a row has a neutral value there (gain 1, added noise 0, backlash 0,
no delay, identity rotation, dropout rate 0), which leaves that row's numbers exactly as they
were (x * 1.0 == x, x + 0.0 == x, min(max(e, t), t) == t): rows with different effects on share
one code path without changing any bits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from dex_common.rotations import _qmul, _qnormalize

FORCE_DECAY = 0.99  # per control step (D Table 8)
IDENTITY = [1.0, 0.0, 0.0, 0.0]


@dataclass
class StepEffects:
    """Row i = one episode. Constants are set per episode; state fields change every step."""

    # ---- actions: t' = clip(t * gain + add), then backlash (play), then one-step delay
    gain: np.ndarray  # [n, A] 1 + multiplicative noise
    backlash: np.ndarray  # [n, A] half dead-band width
    delay: np.ndarray  # [n, A] bool: this actuator gets the previous step's target
    play: np.ndarray  # [n, A] state: the backlash play operator's output
    prev: np.ndarray  # [n, A] state: last step's target (for the delay)
    # ---- random force on the cube (per-row Python values)
    force_p: list[float]  # probability per step of a new force
    force: list[list[float]]  # state: the force now (N)
    # ---- observations (per-row Python values: see the module docstring)
    obs_on: list[bool]  # any observation effect (else the reading is the truth)
    rot_episode: list[list[float]]  # per-episode rotation of the cube reading
    drop_p: list[float]  # probability per step that a dropout starts
    drop_steps: list[int]  # control steps a dropout lasts
    drop_left: list[int]  # state: steps the reading stays frozen
    frozen: list[list[float]]  # state: the frozen cube reading (position, quaternion)

    @classmethod
    def neutral(cls, n: int, n_act: int) -> StepEffects:
        """``n`` rows with every effect off."""
        z = np.zeros
        return cls(gain=np.ones((n, n_act)), backlash=z((n, n_act)),
                   delay=z((n, n_act), bool), play=z((n, n_act)), prev=z((n, n_act)),
                   force_p=[0.0] * n, force=[[0.0, 0.0, 0.0]] * n, obs_on=[False] * n,
                   rot_episode=[IDENTITY] * n, drop_p=[0.0] * n, drop_steps=[0] * n,
                   drop_left=[0] * n, frozen=[[]] * n)

    def copy_row(self, i: int, src: StepEffects, j: int = 0) -> None:
        """Row ``i`` := row ``j`` of ``src`` (a member's episode joining a vector env)."""
        for f in fields(self):
            getattr(self, f.name)[i] = getattr(src, f.name)[j]

    # ---- per step -------------------------------------------------------------------------
    def act(self, targets: np.ndarray, add: np.ndarray, lo: np.ndarray,
            hi: np.ndarray) -> np.ndarray:
        """Targets [n, A] as the hands receive them (a new array); ``add`` [n, A] is each
        row's additive noise this step (episode offset + per-step draw)."""
        t = np.minimum(np.maximum(targets * self.gain + add, lo), hi)
        e = self.play
        np.minimum(np.maximum(e, t - self.backlash), t + self.backlash, out=e)
        out = np.where(self.delay, self.prev, e)
        self.prev[...] = e
        return out

    def push(self, i: int, draw: list[float]) -> list[float]:
        """Row ``i``'s force this step: ``draw`` = [candidate new force (3), uniform]; the new
        force starts when the uniform < ``force_p``, else the force decays."""
        f = draw[:3] if draw[3] < self.force_p[i] else [x * FORCE_DECAY for x in self.force[i]]
        self.force[i] = f
        return f

    def observe(self, i: int, tips_pos: list[float], quat: list[float],
                draw: list[float]) -> tuple[list[float], list[float]]:
        """Row ``i``'s noisy reading: (fingertips | cube position, cube quaternion) from the
        true ones (unit quaternion); ``draw`` = this step's [additive noise (3 tips + 3) |
        step rotation (4) | dropout uniform]. Call only for rows with ``obs_on``."""
        m = len(tips_pos)
        tp = [a + b for a, b in zip(tips_pos, draw, strict=False)]
        left = self.drop_left[i]
        if left > 0:  # a dropout holds the cube reading (the fingertips stay live)
            self.drop_left[i] = left - 1
            pq = self.frozen[i]
        else:
            q = _qnormalize(_qmul(draw[m:m + 4], _qmul(self.rot_episode[i], quat)))
            pq = tp[-3:] + q
            if draw[-1] < self.drop_p[i]:  # a dropout starts: this and the next readings
                self.frozen[i] = pq
                self.drop_left[i] = self.drop_steps[i] - 1
        tp[-3:] = pq[:3]
        return tp, pq[3:]
