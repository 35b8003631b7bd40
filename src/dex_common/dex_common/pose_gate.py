"""Is a cube pose estimate physically possible after the last one? (pure: numpy only)

A vision estimate that jumps further than a cube can move in the time between two stamps (a
face confused with another: a 90° or 180° flip in one period; a reflection taken for the cube)
must not be acted on, nor judged: a flip can look like a reached goal. ``PoseJumpGate`` measures
the speed each estimate implies against the last accepted one (rotation angle / dt, distance /
dt) and rejects estimates beyond ``max_angular_speed`` / ``max_linear_speed``.

A real jump of the estimate (the cube put back by hand, a new trial without a reset call)
would otherwise be rejected forever: after ``confirm`` consecutive rejected-looking estimates
that are plausible after each other, the last becomes the new reference (the others stay
rejected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dex_common.rotations import quat_conj, quat_mul

# A cube spun by fingers turns well under 10 rad/s (Dactyl's policy: a 90° face turn takes
# about a second); a dropped cube falls at ~2 m/s after 20 cm. Limits with margin over both.
MAX_ANGULAR_SPEED = 25.0  # rad/s
MAX_LINEAR_SPEED = 3.0  # m/s


@dataclass
class Verdict:
    plausible: bool
    angular_speed: float  # rad/s implied against the reference (nan: no reference yet)
    linear_speed: float  # m/s
    # The same as vectors in the pose's frame: rad/s (axis × angle / dt) and m/s; nan before a
    # reference exists.
    angular_velocity: np.ndarray = field(default_factory=lambda: np.full(3, math.nan))
    linear_velocity: np.ndarray = field(default_factory=lambda: np.full(3, math.nan))

    def describe(self) -> str:
        """What an implausible verdict means, for a node's warning."""
        return (f"implausible cube pose estimate: it jumped as if the cube turned at "
                f"{self.angular_speed:.0f} rad/s / moved at {self.linear_speed:.2f} m/s")


def implied_velocity(stamp0: float, pos0: np.ndarray, quat0: np.ndarray, stamp1: float,
                     pos1: np.ndarray, quat1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angular rad/s, linear m/s) vectors, in the poses' frame, that carry pose 0 to pose 1
    (unit quaternions w,x,y,z) in ``stamp1 - stamp0`` s, the shorter way round; inf if dt <= 0."""
    dt = stamp1 - stamp0
    if dt <= 0:
        return np.full(3, math.inf), np.full(3, math.inf)
    rel = quat_mul(np.asarray(quat1, float), quat_conj(np.asarray(quat0, float)))
    if rel[0] < 0:
        rel = -rel  # q ≡ −q: the shorter rotation
    s = float(np.linalg.norm(rel[1:]))
    angle = 2.0 * math.atan2(s, float(rel[0]))
    axis = rel[1:] / s if s > 1e-12 else np.zeros(3)
    return axis * angle / dt, (np.asarray(pos1, float) - np.asarray(pos0, float)) / dt


class PoseJumpGate:
    def __init__(self, max_angular_speed: float = MAX_ANGULAR_SPEED,
                 max_linear_speed: float = MAX_LINEAR_SPEED, confirm: int = 2) -> None:
        if not (max_angular_speed > 0 and max_linear_speed > 0 and confirm >= 1):
            raise ValueError("max_angular_speed and max_linear_speed must be > 0, confirm >= 1")
        self.max_angular_speed = float(max_angular_speed)
        self.max_linear_speed = float(max_linear_speed)
        self.confirm = int(confirm)
        self.rejected = 0  # estimates rejected since the last reset
        self.reset()

    def reset(self) -> None:
        """Forget the reference (a new trial: the cube was put back)."""
        self._ref: tuple[float, np.ndarray, np.ndarray] | None = None
        self._streak: list[tuple[float, np.ndarray, np.ndarray]] = []

    def _speeds(self, a: tuple[float, np.ndarray, np.ndarray], stamp: float, pos: np.ndarray,
                quat: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray]:
        w, v = implied_velocity(*a, stamp, pos, quat)
        return float(np.linalg.norm(w)), float(np.linalg.norm(v)), w, v

    def _within(self, speeds: tuple) -> bool:
        return speeds[0] <= self.max_angular_speed and speeds[1] <= self.max_linear_speed

    def check(self, stamp: float, pos: np.ndarray, quat: np.ndarray) -> Verdict:
        """Judge the estimate (position m, unit quaternion w,x,y,z) at ``stamp`` (s)."""
        here = (float(stamp), np.asarray(pos, float).copy(), np.asarray(quat, float).copy())
        if self._ref is None:
            self._ref = here
            return Verdict(True, math.nan, math.nan)
        speeds = self._speeds(self._ref, *here)
        if self._within(speeds):
            self._ref, self._streak = here, []
            return Verdict(True, *speeds)
        # Rejected. Does it continue a streak of rejected estimates consistent with each other?
        if self._streak and not self._within(self._speeds(self._streak[-1], *here)):
            self._streak = []
        self._streak.append(here)
        if len(self._streak) >= self.confirm:
            self._ref, self._streak = here, []  # the estimate really moved: follow it
            return Verdict(True, *speeds)
        self.rejected += 1
        return Verdict(False, *speeds)


def gate_from_parameters(max_angular_speed: object, max_linear_speed: object
                         ) -> tuple[PoseJumpGate, str]:
    """A node's gate from its two parameters: (the gate, "") or, for bad values, (a gate with
    the defaults, the problem naming both parameters)."""
    try:
        return PoseJumpGate(float(max_angular_speed), float(max_linear_speed)), ""
    except (ValueError, TypeError) as e:
        return PoseJumpGate(), f"max_cube_angular_speed / max_cube_linear_speed: {e}"
