"""Command validation shared by the sim and real hand drivers (pure: numpy + registry only).

A command that cannot be interpreted (wrong length, NaN/Inf, not numeric) is rejected and the
last safe command is held, so a bad message can never move the hand somewhere undefined.
A command slightly outside the actuator limits is clamped (and reported), since clamping is safe
and stalling the hand on a slightly-out-of-range target would be worse; one far outside them
(more than ``ABSURD_MARGIN_RAD``: 1e9, a unit mix-up, degrees sent as radians) is rejected, since
no controller means it and clamping would slam the hand to its limits. Each accepted command may
move a target at most ``MAX_STEP_RAD`` from the last safe one (rate limit): a jump is spread over
the following commands instead of flicking the fingers. The sim and the hardware drivers share
this class, so the same command does the same thing to both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dex_description.registry import HandSpec, get_hand

# Per accepted command (one control period, 80 ms): the policies' decoder moves a target at most
# 0.15 rad per step, the MPC the same; 0.5 rad leaves them untouched and stops a jump.
MAX_STEP_RAD = 0.5
# Beyond the actuator range by more than this: not a target anyone meant. Rejected (hold).
ABSURD_MARGIN_RAD = 1.0


class CommandGuard:
    """Validates actuator targets for one hand and remembers the last safe command.

    ``max_delta``: rate limit, rad per accepted command (``None`` = off);
    ``absurd_margin``: rad beyond the actuator range at which a target is rejected, not clamped.
    ``initial``: the starting safe command; defaults to the hand's default pose targets when
    dex_description.pose is available, else the middle of each actuator's range clipped to
    include zero.
    """

    def __init__(
        self,
        hand: str | HandSpec = "shadow",
        max_delta: float | None = MAX_STEP_RAD,
        initial: Sequence[float] | np.ndarray | None = None,
        absurd_margin: float = ABSURD_MARGIN_RAD,
    ) -> None:
        self.spec = hand if isinstance(hand, HandSpec) else get_hand(hand)
        self.lower, self.upper = self.spec.actuator_limits()
        self.n = self.spec.n_actuators
        if max_delta is not None and not (np.isfinite(max_delta) and max_delta > 0):
            raise ValueError(f"max_delta must be a positive finite number, got {max_delta!r}")
        self.max_delta = max_delta
        if not (np.isfinite(absurd_margin) and absurd_margin >= 0):
            raise ValueError(f"absurd_margin must be a finite number >= 0, got {absurd_margin!r}")
        self.absurd_margin = float(absurd_margin)
        if initial is None:
            initial = default_targets(self.spec)
        init = np.asarray(initial, dtype=float)
        if init.shape != (self.n,) or not np.all(np.isfinite(init)):
            raise ValueError(f"initial command must be {self.n} finite values")
        # maximum/minimum == clip (NaN stays NaN), without np.clip's Python-level overhead.
        self._last_safe = np.minimum(np.maximum(init, self.lower), self.upper)
        self.n_rejected = 0
        self.n_clamped = 0
        self.n_rate_limited = 0

    @property
    def last_safe(self) -> np.ndarray:
        return self._last_safe.copy()

    def reset(self, targets: Sequence[float] | np.ndarray | None = None) -> None:
        """Forget history; hold ``targets`` (default pose if None) as the safe command."""
        init = default_targets(self.spec) if targets is None else np.asarray(targets, float)
        # maximum/minimum == clip (NaN stays NaN), without np.clip's Python-level overhead.
        self._last_safe = np.minimum(np.maximum(init, self.lower), self.upper)

    def note_applied(self, targets: np.ndarray) -> None:
        """Targets applied without ``check`` (already finite and in range, e.g. the training
        env's decoder output): they become the last safe command a rejected one holds."""
        self._last_safe = targets

    def check(self, values: object) -> tuple[bool, np.ndarray, str]:
        """Validate ``values``. Returns (ok, targets to apply, reason).

        ok=False: rejected, targets = the last safe command, reason says why.
        ok=True: targets are clamped/rate-limited values; reason is "" or says what was clamped.
        """
        try:
            arr = np.asarray(values, dtype=float)
        except (TypeError, ValueError) as e:
            return self._reject(f"command is not numeric: {e}")
        if arr.ndim != 1 or arr.shape[0] != self.n:
            return self._reject(
                f"command has shape {arr.shape}, expected ({self.n},) targets in registry "
                f"actuator order"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            names = [self.spec.actuator_names[i] for i in np.flatnonzero(bad)]
            return self._reject(f"command has non-finite values (NaN/Inf) for {names}")
        absurd = np.flatnonzero((arr < self.lower - self.absurd_margin)
                                | (arr > self.upper + self.absurd_margin))
        if absurd.size:
            i = absurd[0]
            return self._reject(
                f"command is physically absurd: {absurd.size} target(s) more than "
                f"{self.absurd_margin:g} rad outside the actuator range (e.g. "
                f"{self.spec.actuator_names[i]}={arr[i]:.4g}, range [{self.lower[i]:.4g}, "
                f"{self.upper[i]:.4g}])")
        reasons = []
        clamped = np.clip(arr, self.lower, self.upper)
        over = np.flatnonzero(clamped != arr)
        if over.size:
            self.n_clamped += 1
            worst = over[np.argmax(np.abs(arr[over] - clamped[over]))]
            reasons.append(
                f"clamped {over.size} target(s) to actuator limits "
                f"(worst {self.spec.actuator_names[worst]}={arr[worst]:.4g}, "
                f"range [{self.lower[worst]:.4g}, {self.upper[worst]:.4g}])"
            )
        if self.max_delta is not None:
            d = clamped - self._last_safe
            limited = np.clip(d, -self.max_delta, self.max_delta)
            if np.any(limited != d):
                self.n_rate_limited += 1
                reasons.append(f"rate-limited to {self.max_delta:g} rad/step")
                clamped = self._last_safe + limited
        self._last_safe = clamped
        return True, clamped.copy(), "; ".join(reasons)

    def _reject(self, reason: str) -> tuple[bool, np.ndarray, str]:
        self.n_rejected += 1
        return False, self._last_safe.copy(), reason + "; holding the last safe command"


def default_targets(spec: HandSpec) -> np.ndarray:
    """The hand's default pose as actuator targets (dex_description.pose when present)."""
    lo, hi = spec.actuator_limits()
    try:
        from dex_description.pose import default_actuator_targets
    except ImportError:  # pose module not generated yet: a neutral, in-range fallback
        return np.clip(np.zeros(spec.n_actuators), lo, hi)
    return np.clip(np.asarray(default_actuator_targets(spec), float), lo, hi)
