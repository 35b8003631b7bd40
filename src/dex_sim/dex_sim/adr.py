"""Automatic Domain Randomization (ADR), pure numpy.

Rubik's-cube paper (OpenAI 2019), Algorithm 1 / Table 15: every parameter i has a range
[φ_L, φ_H] that starts collapsed at its nominal value. With probability ``p_boundary`` (0.5) an
episode *evaluates a boundary*: one (parameter, side) is chosen uniformly, that parameter is pinned
to the boundary value and all others are sampled from their current ranges. The episode's
successes go into that boundary's performance queue; once the queue holds ``queue_size`` (m = 240)
results its mean decides: ≥ t_H (20) widens that side by Δ (0.02), < t_L (10) narrows it (never
past the nominal value); the queue is then cleared whatever the decision.
``VectorADR`` is the DeXtreme variant: a fixed fraction (40%) of env slots always evaluate
boundaries, the rest always train on the full ranges (queue 256, t_L 5).

Entropy H = (1/d) Σ log(φ_H − φ_L) nats per dimension. A collapsed range has width 0, so widths
are floored at ``ENTROPY_FLOOR_WIDTH`` (1e-6 → log = −13.8 nats) to keep H finite and monotone
in every width; ``entropy_active()`` gives the mean over non-collapsed dimensions only.

A ranges dict maps name → (lo, hi) in the same units as ``dex_sim.randomization.RandParam``
(low, high); ``DomainRandomizer.sample(rng, ranges)`` draws each value from its range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

ENTROPY_FLOOR_WIDTH = 1e-6   # width used for collapsed ranges in entropy()
SIDES = ("low", "high")
STATE_VERSION = 1
# default_adr_params(): each side may grow to this multiple of Dactyl's distance from nominal.
DEFAULT_GROWTH = 2.0
DEFAULT_STEP = 0.02          # Table 15 Δ (relative to the nominal; see default_adr_params)
_DIMENSIONLESS = {"", "1", "-", "x", "scale", "ratio", "factor", "fraction"}

Ranges = dict[str, tuple[float, float]]


class Boundary(NamedTuple):
    """One side of one parameter's range: ``side`` is "low" (φ_L) or "high" (φ_H)."""

    name: str
    side: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.side}"


def _finite(label: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{label} must be finite; got {v}")
    return v


@dataclass(frozen=True)
class ADRParam:
    """A scalar ADR parameter: range starts at [initial_low, initial_high] (default: collapsed at
    ``nominal``), moves by ``step`` and stays inside [lower_limit, upper_limit]."""

    name: str
    nominal: float
    step: float
    lower_limit: float
    upper_limit: float
    initial_low: float | None = None
    initial_high: float | None = None

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise ValueError(f"ADRParam name must be non-empty without ':'; got {self.name!r}")
        n = _finite(f"{self.name}: nominal", self.nominal)
        step = _finite(f"{self.name}: step", self.step)
        lo = _finite(f"{self.name}: lower_limit", self.lower_limit)
        hi = _finite(f"{self.name}: upper_limit", self.upper_limit)
        if step <= 0:
            raise ValueError(f"{self.name}: step must be > 0; got {step}")
        if not lo <= n <= hi:
            raise ValueError(f"{self.name}: need lower_limit <= nominal <= upper_limit; "
                             f"got {lo} <= {n} <= {hi}")
        if lo == hi:
            raise ValueError(f"{self.name}: lower_limit == upper_limit ({lo}); nothing to adapt")
        il, ih = self.start()
        if not lo <= il <= n:
            raise ValueError(f"{self.name}: initial_low {il} must lie in [lower_limit {lo}, "
                             f"nominal {n}]")
        if not n <= ih <= hi:
            raise ValueError(f"{self.name}: initial_high {ih} must lie in [nominal {n}, "
                             f"upper_limit {hi}]")

    def start(self) -> tuple[float, float]:
        """Initial (φ_L, φ_H)."""
        il = self.nominal if self.initial_low is None else self.initial_low
        ih = self.nominal if self.initial_high is None else self.initial_high
        return (_finite(f"{self.name}: initial_low", il),
                _finite(f"{self.name}: initial_high", ih))


class ADR:
    """Sequential ADR (Rubik's-cube paper, Algorithm 1). Randomness comes from the caller's rng."""

    def __init__(self, params: list[ADRParam], p_boundary: float = 0.5, queue_size: int = 240,
                 t_high: float = 20.0, t_low: float = 10.0) -> None:
        params = list(params)
        if not params:
            raise ValueError("ADR needs at least one ADRParam")
        if not all(isinstance(p, ADRParam) for p in params):
            raise ValueError("ADR params must be ADRParam instances")
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate ADR parameter names: {dup}")
        if not 0.0 <= float(p_boundary) <= 1.0:
            raise ValueError(f"p_boundary must be in [0, 1]; got {p_boundary}")
        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer; got {queue_size}")
        if not float(t_low) < float(t_high):
            raise ValueError(f"need t_low < t_high; got t_low={t_low}, t_high={t_high}")
        self.params = params
        self._by_name = {p.name: p for p in params}
        self.p_boundary = float(p_boundary)
        self.queue_size = int(queue_size)
        self.t_high, self.t_low = float(t_high), float(t_low)
        self.boundaries = [Boundary(p.name, s) for p in params for s in SIDES]
        self.reset()

    # ---- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Ranges back to their initial values; queues, counters and history emptied."""
        self._lo = {p.name: p.start()[0] for p in self.params}
        self._hi = {p.name: p.start()[1] for p in self.params}
        self._queues: dict[str, list[float]] = {b.key: [] for b in self.boundaries}
        self.counters = {"episodes": 0, "boundary_episodes": 0, "reports": 0,
                         "decisions": 0, "expansions": 0, "shrinks": 0}
        self.history: list[dict[str, Any]] = []

    def ranges(self) -> Ranges:
        """Current ranges name → (φ_L, φ_H); (nominal, nominal) while collapsed."""
        return {p.name: (self._lo[p.name], self._hi[p.name]) for p in self.params}

    def value(self, b: Boundary) -> float:
        """The current value of boundary ``b``."""
        return self._lo[b.name] if b.side == "low" else self._hi[b.name]

    def queue(self, b: Boundary) -> list[float]:
        """A copy of boundary ``b``'s performance queue."""
        return list(self._queues[self.boundary(b).key])

    # ---- sampling ------------------------------------------------------------------------------
    def sample_boundary(self, rng: np.random.Generator) -> Boundary:
        """One (parameter, side) uniformly among all 2d boundaries."""
        return self.boundaries[int(rng.integers(len(self.boundaries)))]

    def pinned_ranges(self, b: Boundary | None) -> Ranges:
        """Current ranges with ``b``'s parameter collapsed to the boundary value."""
        r = self.ranges()
        if b is not None:
            v = self.value(self.boundary(b))
            r[b.name] = (v, v)
        return r

    def episode_ranges(self, rng: np.random.Generator) -> tuple[Ranges, Boundary | None]:
        """Ranges for the next episode and the boundary it evaluates (None: a normal episode)."""
        self.counters["episodes"] += 1
        b = None
        if rng.random() < self.p_boundary:
            b = self.sample_boundary(rng)
            self.counters["boundary_episodes"] += 1
        return self.pinned_ranges(b), b

    def sample_values(self, ranges: Ranges, rng: np.random.Generator) -> dict[str, float]:
        """Uniform draw from each range (λ_i ~ U(φ_L, φ_H), as in the paper) — for callers
        without their own per-parameter distributions."""
        return {n: float(rng.uniform(lo, hi)) if hi > lo else float(lo)
                for n, (lo, hi) in ranges.items()}

    # ---- update --------------------------------------------------------------------------------
    def report(self, boundary: Boundary | tuple[str, str] | None,
               successes: float) -> dict[str, Any] | None:
        """Record an evaluated boundary's episode performance. Returns the decision record (also
        appended to ``history`` when the range changed) when the queue was full, else None."""
        if boundary is None:
            return None
        b = self.boundary(boundary)
        s = _finite("successes", successes)
        q = self._queues[b.key]
        q.append(s)
        self.counters["reports"] += 1
        if len(q) < self.queue_size:
            return None
        mean = float(np.mean(q))
        q.clear()
        self.counters["decisions"] += 1
        action = "expand" if mean >= self.t_high else "shrink" if mean < self.t_low else "keep"
        old = self.value(b)
        new = self._move(b, action)
        rec = {"decision": self.counters["decisions"], "episode": self.counters["episodes"],
               "name": b.name, "side": b.side, "action": action, "mean": mean,
               "old": old, "new": new}
        if new != old:
            self.counters["expansions" if action == "expand" else "shrinks"] += 1
            self.history.append(rec)
        return rec

    def _move(self, b: Boundary, action: str) -> float:
        p = self._by_name[b.name]
        if action == "keep":
            return self.value(b)
        grow = 1.0 if action == "expand" else -1.0
        if b.side == "high":  # high side: up to upper_limit, down to nominal
            self._hi[b.name] = float(np.clip(self._hi[b.name] + grow * p.step,
                                             p.nominal, p.upper_limit))
        else:                 # low side: down to lower_limit, up to nominal
            self._lo[b.name] = float(np.clip(self._lo[b.name] - grow * p.step,
                                             p.lower_limit, p.nominal))
        return self.value(b)

    def boundary(self, b: Boundary | tuple[str, str]) -> Boundary:
        """``b`` as a Boundary of this ADR; ValueError if it names none."""
        b = Boundary(*b)
        if b.name not in self._by_name or b.side not in SIDES:
            raise ValueError(f"unknown ADR boundary {tuple(b)}; sides are {SIDES}")
        return b

    # ---- metrics -------------------------------------------------------------------------------
    def widths(self) -> np.ndarray:
        return np.array([self._hi[p.name] - self._lo[p.name] for p in self.params])

    def entropy(self, floor: float = ENTROPY_FLOOR_WIDTH) -> float:
        """H = (1/d) Σ log(max(φ_H − φ_L, floor)) in nats per dimension (all d parameters)."""
        if floor <= 0:
            raise ValueError(f"entropy floor must be > 0; got {floor}")
        return float(np.mean(np.log(np.maximum(self.widths(), floor))))

    def entropy_active(self) -> float:
        """Mean log-width over non-collapsed parameters only (nan when all are collapsed)."""
        w = self.widths()
        w = w[w > 0]
        return float(np.mean(np.log(w))) if w.size else float("nan")

    def stats(self) -> dict[str, Any]:
        """Flat numbers for a training log."""
        return {"adr_entropy": self.entropy(), "adr_entropy_active": self.entropy_active(),
                "adr_n_active": int(np.sum(self.widths() > 0)),
                **{f"adr_{k}": v for k, v in self.counters.items()}}

    # ---- persistence ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"p_boundary": self.p_boundary, "queue_size": self.queue_size,
                "t_high": self.t_high, "t_low": self.t_low}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: params, config, ranges, queues, counters, history."""
        return {"version": STATE_VERSION, "params": [asdict(p) for p in self.params],
                "config": self.config(),
                "ranges": {n: [lo, hi] for n, (lo, hi) in self.ranges().items()},
                "queues": {k: list(v) for k, v in self._queues.items()},
                "counters": dict(self.counters),
                "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ranges/queues/counters/history saved by ``state_dict`` (same parameters)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"ADR state version {state.get('version')} != {STATE_VERSION}")
        saved = [ADRParam(**p) for p in state["params"]]
        if saved != self.params:
            raise ValueError("ADR state was saved with different parameters: "
                             f"{[p.name for p in saved]} vs {[p.name for p in self.params]}")
        if state["config"] != self.config():
            raise ValueError(f"ADR state config {state['config']} != {self.config()}")
        lo, hi = {}, {}
        for p in self.params:
            a, b = (float(x) for x in state["ranges"][p.name])
            if not p.lower_limit <= a <= p.nominal <= b <= p.upper_limit:
                raise ValueError(f"ADR state range for {p.name} ({a}, {b}) violates limits")
            lo[p.name], hi[p.name] = a, b
        if set(state["queues"]) != set(self._queues):
            raise ValueError("ADR state queues do not match the parameters' boundaries")
        self._lo, self._hi = lo, hi
        self._queues = {k: [float(x) for x in state["queues"][k]] for k in self._queues}
        self.counters = {k: int(v) for k, v in state["counters"].items()}
        self.history = [dict(h) for h in state["history"]]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ADR:
        adr = cls([ADRParam(**p) for p in state["params"]], **state["config"])
        adr.load_state_dict(state)
        return adr


class VectorADR:
    """DeXtreme vectorised ADR: env slots ``0 .. n_boundary-1`` always evaluate a (uniformly
    drawn) boundary; the other slots always train on the full current ranges. Ranges, queues
    and decisions are shared with an inner ``ADR`` (its p_boundary is unused)."""

    def __init__(self, params: list[ADRParam], n_envs: int, boundary_fraction: float = 0.4,
                 queue_size: int = 256, t_high: float = 20.0, t_low: float = 5.0) -> None:
        if int(n_envs) != n_envs or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer; got {n_envs}")
        if not 0.0 <= float(boundary_fraction) <= 1.0:
            raise ValueError(f"boundary_fraction must be in [0, 1]; got {boundary_fraction}")
        self.adr = ADR(params, p_boundary=0.0, queue_size=queue_size, t_high=t_high,
                       t_low=t_low)
        self.n_envs = int(n_envs)
        self.boundary_fraction = float(boundary_fraction)
        k = int(round(self.boundary_fraction * self.n_envs))
        if self.boundary_fraction > 0:   # at least one evaluator when asked for any
            k = max(k, 1)
        self.n_boundary = min(k, self.n_envs)
        self._pending: list[Boundary | None] = [None] * self.n_envs

    def is_boundary_slot(self, env_index: int) -> bool:
        return self._slot(env_index) < self.n_boundary

    def assign(self, env_index: int, rng: np.random.Generator) -> tuple[Ranges, Boundary | None]:
        """Ranges + evaluated boundary for env ``env_index``'s next episode."""
        i = self._slot(env_index)
        b = self.adr.sample_boundary(rng) if i < self.n_boundary else None
        self._pending[i] = b
        self.adr.counters["episodes"] += 1
        self.adr.counters["boundary_episodes"] += b is not None
        return self.adr.pinned_ranges(b), b

    def report(self, env_index: int, successes: float) -> dict[str, Any] | None:
        """Finish env ``env_index``'s episode (successes go to its boundary's queue, if any)."""
        i = self._slot(env_index)
        b, self._pending[i] = self._pending[i], None
        return self.adr.report(b, successes)

    def advance(self, env_index: int, rng: np.random.Generator, successes: float | None = None
                ) -> tuple[Ranges, Boundary | None, dict[str, Any] | None]:
        """Report the finished episode's ``successes`` (None: no episode finished, e.g. the first
        reset), then assign the next one — in that order, for an auto-resetting vector env's
        per-reset hook. Returns (ranges, boundary, decision record or None)."""
        rec = None if successes is None else self.report(env_index, successes)
        ranges, b = self.assign(env_index, rng)
        return ranges, b, rec

    def _slot(self, env_index: int) -> int:
        if not 0 <= int(env_index) < self.n_envs:
            raise ValueError(f"env_index {env_index} out of range [0, {self.n_envs})")
        return int(env_index)

    # delegation to the shared ADR
    def ranges(self) -> Ranges:
        return self.adr.ranges()

    def entropy(self, floor: float = ENTROPY_FLOOR_WIDTH) -> float:
        return self.adr.entropy(floor)

    def stats(self) -> dict[str, Any]:
        return self.adr.stats()

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.adr.history

    def state_dict(self) -> dict[str, Any]:
        return {"adr": self.adr.state_dict(), "n_envs": self.n_envs,
                "boundary_fraction": self.boundary_fraction,
                "pending": [None if b is None else list(b) for b in self._pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n_envs"] != self.n_envs or state["boundary_fraction"] != self.boundary_fraction:
            raise ValueError(f"VectorADR state is for n_envs={state['n_envs']}, fraction="
                             f"{state['boundary_fraction']}; this is {self.n_envs}, "
                             f"{self.boundary_fraction}")
        self.adr.load_state_dict(state["adr"])
        self._pending = [None if b is None else self.adr.boundary(tuple(b))
                         for b in state["pending"]]


# ---- defaults from the randomization table -----------------------------------------------------
def _nominal(name: str, dist: str, low: float, high: float) -> float:
    """Fallback when the table has no ``nominal``: 1 for multiplicative scales, 0 for additive
    offsets / noise, else the midpoint (geometric mean for loguniform)."""
    if name.endswith("_scale") and low <= 1.0 <= high:
        return 1.0
    if low <= 0.0 <= high:
        return 0.0
    return math.sqrt(low * high) if dist == "loguniform" else 0.5 * (low + high)


def adr_param_from_range(name: str, dist: str, low: float, high: float,
                         nominal: float | None = None, growth: float = DEFAULT_GROWTH,
                         step: float = DEFAULT_STEP) -> ADRParam:
    """ADRParam for a Dactyl range [low, high], collapsed at ``nominal`` (see ``_nominal`` when
    None). Each side may grow to ``growth`` × Dactyl's distance from the nominal on that side
    (multiplicatively for loguniform; a side with no Dactyl spread stays at the nominal).
    Quantities ≥ 0 in Dactyl's range stay ≥ 0; > 0 ones stay ≥ low/growth; "*prob*" ≤ 1. A loguniform nominal
    ≤ 0 (e.g. "no random force") is replaced by ``low``, since log-uniform bounds must be > 0.
    Step = ``step`` × max(|nominal|, high − low): exactly Table 15's Δ 0.02 for a scale around 1
    whose Dactyl range is narrower than 1, and every parameter reaches Dactyl's range in about
    (distance / width) / 0.02 ≤ 50 steps."""
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"{name}: need low < high for ADR; got ({low}, {high})")
    if growth < 1.0:
        raise ValueError(f"growth must be >= 1 (ADR may reach at least Dactyl's range); {growth}")
    nom = _nominal(name, dist, low, high) if nominal is None else float(nominal)
    log = dist == "loguniform" and low > 0
    if log and nom <= 0:
        nom = low
    if log:
        lo_lim = nom * (low / nom) ** growth if low < nom else nom
        hi_lim = nom * (high / nom) ** growth if high > nom else nom
    else:
        lo_lim = nom - growth * max(nom - low, 0.0)
        hi_lim = nom + growth * max(high - nom, 0.0)
    if low > 0:
        lo_lim = min(max(lo_lim, low / growth), nom)
    elif low >= 0:
        lo_lim = min(max(lo_lim, 0.0), nom)
    if "prob" in name and high <= 1.0:  # probabilities stay probabilities
        hi_lim = min(hi_lim, 1.0)
    scale = max(abs(nom), high - low)
    return ADRParam(name, nom, step * scale, lo_lim, hi_lim)


def default_adr_params(table: Any = None, growth: float = DEFAULT_GROWTH,
                       step: float = DEFAULT_STEP) -> list[ADRParam]:
    """ADRParams for every ``adr=True`` uniform/loguniform entry of the randomization table
    (``dex_sim.randomization.RANDOMIZATIONS`` unless ``table`` is given), starting collapsed at
    each row's ``nominal``. Other distributions
    (normal: low/high = mean/sd; bernoulli; exponential) have no [low, high] range to widen and
    are skipped."""
    if table is None:
        try:
            from dex_sim.randomization import RANDOMIZATIONS  # lazy: table lands separately
        except ImportError as e:
            raise RuntimeError("default_adr_params needs dex_sim.randomization.RANDOMIZATIONS "
                               f"(not importable: {e}); pass table= or build ADRParams") from e
        table = RANDOMIZATIONS
    return [adr_param_from_range(r.name, r.dist, r.low, r.high, getattr(r, "nominal", None),
                                 growth, step)
            for r in table if getattr(r, "adr", False) and r.dist in ("uniform", "loguniform")]
