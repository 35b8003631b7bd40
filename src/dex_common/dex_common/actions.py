"""Decoding the policy's discrete actions into absolute actuator targets (Dactyl style).

The policy outputs, per actuator, one of ``bins`` categories. Category ``b`` maps linearly to a
relative change ``delta = -max_delta + b * 2*max_delta/(bins-1)`` rad (an odd ``bins`` has an
exact zero in the middle: with 11 bins, bin 5 = no change).

Smoothing convention (Dactyl: "exponential moving average, smoothing factor 0.3"): we read the
factor as the weight of the *previous* smoothed value,

    s_t = ema * s_{t-1} + (1 - ema) * delta_t,       s_0 = 0 after ``reset``

so the newest action keeps 70 % weight and the filter only rounds off bin-to-bin jumps. The new
absolute target is ``clip(target_{t-1} + s_t, actuator limits)``; clipping the stored target
(not just the output) stops it winding up past a limit, so reversing direction acts at once.
Training and deployment both use this class, so the convention cannot differ between them.
"""

from __future__ import annotations

import numpy as np

from dex_description.registry import HandSpec, get_hand

# Dactyl's action space, named once: every config that has these fields takes its default here.
BINS = 11  # per actuator
MAX_DELTA = 0.15  # rad per control step at the extreme bin (hands not in _MAX_DELTA_BY_HAND)
EMA = 0.3  # weight of the previous smoothed delta

# Hands whose fingers need a faster action scale than the default. Shadow: from the relaxed pose
# its fingers must curl ~1.5 rad before they touch the cube on the palm; at 0.15 rad per step the
# MPC teacher cannot get them there within its plan; at 0.3 it reached 3x the goals (10 trials,
# docs/teacher_student.md, "The Shadow hand's action scale"). Not a HandSpec field: it is a
# choice of the action space, which each model's contract records (``describe``), not a fact of
# the hand that would change ``facts_hash`` and so refuse every model exported before.
_MAX_DELTA_BY_HAND: dict[str, float] = {"dex_shadow": 0.3}
# What every hand used before the per-hand scale (2026-11-28): runs and records written then,
# which do not name their scale, are read with it.
LEGACY_MAX_DELTA = MAX_DELTA


def max_delta_of(hand: HandSpec | str) -> float:
    """The default action scale of ``hand`` (rad per control step at the extreme bin)."""
    spec = get_hand(hand) if isinstance(hand, str) else hand
    return _MAX_DELTA_BY_HAND.get(spec.name, MAX_DELTA)


class ActionDecoder:
    """bins[n_actuators] (ints in [0, bins)) -> float64[n_actuators] absolute targets (rad)."""

    def __init__(
        self,
        hand: HandSpec | str = "shadow",
        bins: int = BINS,
        max_delta: float | None = None,
        ema: float = EMA,
    ) -> None:
        """``max_delta`` None: the hand's default (``max_delta_of``)."""
        self.hand = get_hand(hand) if isinstance(hand, str) else hand
        if max_delta is None:
            max_delta = max_delta_of(self.hand)
        if isinstance(bins, bool) or int(bins) != bins or int(bins) < 2:
            raise ValueError(f"bins must be an integer >= 2; got {bins!r}")
        if not np.isfinite(max_delta) or max_delta <= 0:
            raise ValueError(f"max_delta must be a positive finite number (rad); got {max_delta!r}")
        if not np.isfinite(ema) or not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1) (weight of the previous value); got {ema!r}")
        self.bins = int(bins)
        self.max_delta = float(max_delta)
        self.ema = float(ema)
        self.n = self.hand.n_actuators
        self.lower, self.upper = self.hand.actuator_limits()
        # Bin index -> delta lookup table.
        self.bin_values = np.linspace(-self.max_delta, self.max_delta, self.bins)
        self._targets: np.ndarray | None = None
        self._smoothed = np.zeros(self.n)

    # ------------------------------------------------------------------------------------------
    def reset(self, current_targets: np.ndarray) -> None:
        """Start from ``current_targets`` (e.g. the measured actuator positions); clears the EMA."""
        t = np.asarray(current_targets, dtype=np.float64)
        if t.shape != (self.n,):
            raise ValueError(f"current_targets must have shape ({self.n},); got {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError(f"current_targets contains non-finite values: {t.tolist()}")
        # In place once the arrays exist: they may be rows of a vector env's state (share_state).
        if self._targets is None:
            self._targets = np.clip(t, self.lower, self.upper)
        else:
            np.clip(t, self.lower, self.upper, out=self._targets)
        self._smoothed[:] = 0.0

    @property
    def targets(self) -> np.ndarray | None:
        """The last absolute targets (None before ``reset``)."""
        return None if self._targets is None else self._targets.copy()

    @property
    def smoothed_delta(self) -> np.ndarray:
        return self._smoothed.copy()

    def deltas(self, bin_indices: np.ndarray, rows: int | None = None) -> np.ndarray:
        """Raw (unsmoothed) deltas, rad, for validated bin indices: shape (n,), or
        (rows, n) for ``rows`` decoders stepped together (the vector env)."""
        return self.bin_values[self._check_bins(bin_indices, rows)]

    def nearest_bins(self, deltas: np.ndarray) -> np.ndarray:
        """The bins [..., n] (ints) whose deltas are nearest to raw deltas (rad; clipped to
        ±max_delta): how a continuous controller (the MPC teacher) speaks this action space."""
        width = 2.0 * self.max_delta / (self.bins - 1)
        return np.clip(np.rint((np.asarray(deltas, float) + self.max_delta) / width), 0,
                       self.bins - 1).astype(np.int64)

    def decode(self, bin_indices: np.ndarray) -> np.ndarray:
        """One control step: bins -> smoothed delta -> new absolute targets (clipped)."""
        if self._targets is None:
            raise RuntimeError("ActionDecoder.decode called before reset(current_targets)")
        self.step_state(self._smoothed, self._targets, self.deltas(bin_indices))
        return self._targets.copy()

    def share_state(self, smoothed: np.ndarray, targets: np.ndarray) -> None:
        """Keep this decoder's state in ``smoothed`` and ``targets`` (e.g. views of one row of
        a vector env's ``[rows, n]`` state, which steps every row at once with ``step_state``):
        they take the current values, and ``reset``/``decode`` work on them from now on."""
        if self._targets is None:
            raise RuntimeError("ActionDecoder.share_state called before reset(current_targets)")
        if smoothed.shape != (self.n,) or targets.shape != (self.n,):
            raise ValueError(f"state arrays must have shape ({self.n},); got {smoothed.shape} "
                             f"and {targets.shape}")
        smoothed[...] = self._smoothed
        targets[...] = self._targets
        self._smoothed, self._targets = smoothed, targets

    def step_state(self, smoothed: np.ndarray, targets: np.ndarray, delta: np.ndarray,
                   bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """The EMA and clipped integration, in place, for one decoder's state or a stack of
        them (``[rows, n]``, with ``bounds`` = the limits tiled to that shape: numpy is
        several times slower when it has to broadcast): ``decode`` and the vector env run
        this same arithmetic."""
        lower, upper = (self.lower, self.upper) if bounds is None else bounds
        smoothed *= self.ema
        smoothed += (1.0 - self.ema) * delta
        targets += smoothed
        # maximum/minimum == clip for finite values, without np.clip's Python-level overhead.
        np.maximum(targets, lower, out=targets)
        np.minimum(targets, upper, out=targets)

    def scale(self) -> dict:
        """The action space's numbers: ``{bins, max_delta, ema}`` (what a result records)."""
        return {"bins": self.bins, "max_delta": self.max_delta, "ema": self.ema}

    def describe(self) -> dict:
        """The ``dex.action`` contract entry (JSON-able)."""
        return {"mode": "relative", **self.scale(), "actuators": list(self.hand.actuator_names)}

    # ------------------------------------------------------------------------------------------
    def _check_bins(self, bin_indices: np.ndarray, rows: int | None = None) -> np.ndarray:
        b = np.asarray(bin_indices)
        shape = (self.n,) if rows is None else (rows, self.n)
        if b.shape != shape:
            raise ValueError(f"bin_indices must have shape {shape}; got {b.shape}")
        # Checked as Python numbers: on ~20 values cheaper than numpy reductions (per step).
        if b.dtype.kind == "f":
            if not all(map(float.is_integer, b.ravel().tolist())):  # False for NaN / inf too
                raise ValueError(f"bin_indices must be whole numbers; got {b.tolist()}")
        elif b.dtype.kind not in "iu":
            raise ValueError(f"bin_indices must be integers; got dtype {b.dtype}")
        bi = b.astype(np.int64)
        v = bi.ravel().tolist()
        if min(v) < 0 or max(v) >= self.bins:
            raise ValueError(f"bin_indices must be in [0, {self.bins}); got {bi.tolist()}")
        return bi


def soft_labels(deltas: np.ndarray, bins: int, max_delta: float) -> np.ndarray:
    """[..., n] continuous deltas → [..., n, bins] probabilities on the two nearest bins."""
    x = (np.clip(deltas, -max_delta, max_delta) + max_delta) / (2 * max_delta) * (bins - 1)
    lo = np.floor(x).astype(np.int64).clip(0, bins - 2)
    w = (x - lo)[..., None]
    out = np.zeros((*deltas.shape, bins), np.float32)
    np.put_along_axis(out, lo[..., None], 1.0 - w, axis=-1)
    np.put_along_axis(out, lo[..., None] + 1, w, axis=-1)
    return out
