"""Approximate-time synchronizer: joins N timestamped streams into sets, one message per stream.

Why not message_filters' ApproximateTimeSynchronizer: it emits the first combination that fits
in ``slop`` (greedy), keeps stale messages, its cost grows as queue^(N-1), and its output
depends on how arrivals from different streams interleave. This one is deterministic in the
stamps alone and costs O(N·queue) per ``add`` at worst (O(N log N) typical).

Assumption: each stream delivers in stamp order (true for one ROS publisher over a reliable
QoS). A message whose stamp is not newer than the previous one on its stream is dropped
(``dropped_out_of_order``).

**Implausible stamps and time jumps.** One message must not be able to move the time of the
whole synchronizer (a stamp of 0, or 1000 s ahead, from a buggy or hostile publisher). A stamp
is *plausible* when it lies within ``jump_threshold`` of its stream's last accepted stamp or of
another stream's (a stream back from silence rejoins the others' time). An implausible message
is held aside as a *candidate* of a new timeline; the stream's next plausible message drops its
candidates (``dropped_implausible``: the single bad stamp cost only itself). The time really
jumped (sim restart, bag loop, clock step) when **every stream with a timeline agrees**: each
holds a candidate within ``jump_threshold`` of the new time (a lone stream: ``confirm``
consecutive consistent candidates). Then all queues are flushed (``dropped_clock_jump``), the
candidates become the new timeline, ``clock_jumps`` counts it and ``last_jump`` says (old, new).
``accepted`` tells the caller whether the last ``add`` put its message on the timeline.
A receiver that has a clock for its inputs (``add(..., now=)``) makes that clock the judge:
agreement among streams could be forged by one publisher lying on every topic; the clock not.

The rule (everything here depends only on stamps):

1. **Pivot.** Let ``head_i`` be the oldest queued message of stream i. Any future set takes from
   each stream a message no older than its head, so it contains a stamp >= ``P = max_i head_i``.
   A message older than ``P - slop`` can therefore never be in a set: it is purged
   (``dropped_unmatched``), heads advance, P is recomputed, until stable. While a stream is
   empty, its future head is at least the last stamp it delivered, which still bounds P from
   below and lets the others purge (bounded memory while a stream is silent). With every
   stream non-empty and stable, the message at P (the *pivot*) is in the next set.
2. **Best set.** Among sets containing the pivot, choose the one with minimal span
   (max stamp - min stamp); ties go to the earlier set. Only two candidates per stream matter:
   ``b_i`` = newest queued message with stamp <= P, ``a_i`` = oldest with stamp > P. A window
   [L, R] with L <= P <= R takes ``b_i`` when ``b_i >= L`` and otherwise ``a_i``; L is swept over
   the ``b_i`` values (O(N log N)). The span is always <= slop (L = min b_i >= P - slop).
3. **Emit when final.** The choice cannot change once every stream has delivered a stamp >= P:
   later messages on stream i are newer than ``a_i`` (or than ``b_i == P``) and cannot shrink
   any window containing P. So the set is emitted exactly when the last stream reaches P.
   Conversely, while some stream's last stamp is < P, a future message at P could replace its
   member, so waiting is necessary: emission is as early as provable. In lockstep (all streams
   carry the same stamp) the set is emitted the moment its last member arrives (zero added
   latency). Messages older than a chosen member are purged (``dropped_unmatched``), so sets
   never cross and each message is used at most once.

Not stamp-only by nature: overflow (queue_size per stream; the oldest is dropped,
``dropped_overflow``) and time jumps (above). Non-finite stamps are dropped
(``dropped_invalid``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

DROP_REASONS = ("out_of_order", "unmatched", "overflow", "clock_jump", "invalid",
                "implausible")

# Stamps come from float seconds (sec + nanosec*1e-9); allow float noise when comparing spans.
_EPS = 1e-9


class ApproxTimeSynchronizer:
    """Joins ``n_streams`` streams by approximate time. See the module docstring for the rule.

    ``add(stream, stamp, msg)`` returns the sets emitted by this call (usually 0 or 1), each a
    list of messages in stream order; ``callback`` (if given) is also called with each set.
    """

    def __init__(
        self,
        n_streams: int,
        slop: float,
        queue_size: int = 32,
        callback: Callable[[list[object]], None] | None = None,
        jump_threshold: float = 1.0,
        confirm: int = 3,
    ) -> None:
        if isinstance(n_streams, bool) or int(n_streams) != n_streams or n_streams < 1:
            raise ValueError(f"n_streams must be an integer >= 1; got {n_streams!r}")
        if not math.isfinite(slop) or slop < 0:
            raise ValueError(f"slop must be a finite number >= 0 (s); got {slop!r}")
        if isinstance(queue_size, bool) or int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1; got {queue_size!r}")
        if not math.isfinite(jump_threshold) or jump_threshold <= 0:
            raise ValueError(f"jump_threshold must be a positive number (s); got {jump_threshold!r}")
        if isinstance(confirm, bool) or int(confirm) != confirm or confirm < 1:
            raise ValueError(f"confirm must be an integer >= 1; got {confirm!r}")
        self.confirm = int(confirm)
        self.n = int(n_streams)
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        self.jump_threshold = float(jump_threshold)
        self.callback = callback
        self._q: list[deque[tuple[float, object]]] = [deque() for _ in range(self.n)]
        self._counts: dict[str, int] = {}
        self._per_stream: list[dict[str, int]] = []
        self.reset_stats()
        self.reset()

    # ---- public ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all queued messages and stamps (stats are kept; see ``reset_stats``)."""
        for q in self._q:
            q.clear()
        # Last accepted stamp per stream (-inf: nothing yet).
        self._last = [-math.inf] * self.n
        # Per stream: implausible messages held as the start of a possible new timeline.
        self._cand: list[deque[tuple[float, object]]] = [deque() for _ in range(self.n)]
        self.last_set_stamps: list[float] | None = None
        self.last_jump: tuple[float, float] | None = None  # (old time, new time)
        self.accepted = False

    def reset_stats(self) -> None:
        self._counts = {"emitted": 0, "received": 0, "clock_jumps": 0}
        self._counts.update({"dropped_" + r: 0 for r in DROP_REASONS})
        self._per_stream = [
            {"received": 0, **{"dropped_" + r: 0 for r in DROP_REASONS}} for _ in range(self.n)
        ]

    @property
    def stats(self) -> dict[str, int]:
        """Totals (``emitted``, ``received``, ``clock_jumps``, ``dropped_<reason>``), ``queued``,
        and per stream ``s<i>.<key>``; a fresh dict of ints."""
        out = dict(self._counts)
        held = self.queue_lengths()
        out["queued"] = sum(held)
        for i, d in enumerate(self._per_stream):
            for k, v in d.items():
                out[f"s{i}.{k}"] = v
            out[f"s{i}.queued"] = held[i]
        return out

    def total(self, key: str) -> int:
        """One total counter (``emitted``, ``clock_jumps``, ``dropped_<reason>`` ...), cheaply."""
        return self._counts[key]

    def queue_lengths(self) -> list[int]:
        """Messages held per stream (queued for matching or held as time-jump candidates)."""
        return [len(q) + len(c) for q, c in zip(self._q, self._cand, strict=True)]

    def newest_stamp(self) -> float:
        """The newest stamp on the timeline (-inf before any)."""
        return max(self._last)

    def add(self, stream: int, stamp: float, msg: object,
            now: float | None = None) -> list[list[object]]:
        """Offer one message; returns the sets this call completes (oldest first).

        ``now`` (optional): the receiver's current time on the inputs' clock (sim time from
        /clock, or the wall clock on a real robot). When given, it is the reference: a stamp
        more than ``jump_threshold`` from it is rejected at once (``dropped_implausible``); one
        it vouches for that lies before the old timeline is a time jump at once, and one after
        it is a gap (accepted as usual)."""
        if isinstance(stream, bool) or not 0 <= int(stream) < self.n or int(stream) != stream:
            raise IndexError(f"stream must be an integer in [0, {self.n}); got {stream!r}")
        i = int(stream)
        t = float(stamp)
        self._counts["received"] += 1
        self._per_stream[i]["received"] += 1
        self.accepted = False
        if not math.isfinite(t):
            self._drop(i, "invalid")
            return []
        if now is not None and math.isfinite(now):
            if abs(t - now) > self.jump_threshold:
                self._drop(i, "implausible")
                return []
            if not self._plausible(i, t) and t < max(self._last):
                # Back in time, and the clock went with it: a real jump (sim restarted, bag
                # looped). Forward and on the clock is only a gap: time passed while nothing
                # arrived (a starved receiver, a stalled stream); the stamps stay in order and
                # the elapsed time counts, so nothing is flushed.
                self._cand[i].append((t, msg))
                return self._time_jump(t)
        elif not self._plausible(i, t):
            return self._hold_candidate(i, t, msg)
        if self._cand[i]:  # back on the timeline: what it held aside were bad stamps
            self._drop(i, "implausible", len(self._cand[i]))
            self._cand[i].clear()
        if t <= self._last[i]:
            self._drop(i, "out_of_order")
            return []
        self.accepted = True
        self._last[i] = t
        self._q[i].append((t, msg))
        return self._process_and_bound()

    # ---- internals --------------------------------------------------------------------------
    def _drop(self, i: int, reason: str, n: int = 1) -> None:
        self._counts["dropped_" + reason] += n
        self._per_stream[i]["dropped_" + reason] += n

    def _plausible(self, i: int, t: float) -> bool:
        """Within ``jump_threshold`` of this stream's last stamp or of another's; anything goes
        while no stream has a timeline."""
        if all(last == -math.inf for last in self._last):
            return True
        return any(abs(t - last) <= self.jump_threshold for last in self._last)

    def _hold_candidate(self, i: int, t: float, msg: object) -> list[list[object]]:
        c = self._cand[i]
        if c and not 0 < t - c[-1][0] <= self.jump_threshold:  # not a continuation
            self._drop(i, "implausible", len(c))
            c.clear()
        c.append((t, msg))
        if len(c) > self.queue_size:
            c.popleft()
            self._drop(i, "implausible")
        voters = [j for j in range(self.n) if self._last[j] > -math.inf or self._cand[j]]
        if voters == [i]:
            agreed = len(c) >= self.confirm
        else:
            agreed = all(self._cand[j] and abs(self._cand[j][-1][0] - t) <= self.jump_threshold
                         for j in voters)
        return self._time_jump(t) if agreed else []

    def _time_jump(self, new: float) -> list[list[object]]:
        """Every stream agrees the time moved: flush the old timeline, start from the
        candidates."""
        self._counts["clock_jumps"] += 1
        self.last_jump = (self.newest_stamp(), new)
        for j in range(self.n):
            if self._q[j]:
                self._drop(j, "clock_jump", len(self._q[j]))
                self._q[j].clear()
            for t, msg in self._cand[j]:
                if abs(t - new) <= self.jump_threshold:
                    self._q[j].append((t, msg))
                else:  # held from before, not on the new time either
                    self._drop(j, "implausible")
            self._last[j] = self._q[j][-1][0] if self._q[j] else -math.inf
            self._cand[j].clear()
        self.accepted = True
        return self._process_and_bound()

    def _process_and_bound(self) -> list[list[object]]:
        sets = self._process()
        # Overflow only after matching, so a message consumed at once never overflows.
        for j, q in enumerate(self._q):
            while len(q) > self.queue_size:
                q.popleft()
                self._drop(j, "overflow")
        return sets

    def _process(self) -> list[list[object]]:
        out: list[list[object]] = []
        while True:
            pivot = self._purge()
            if pivot is None or any(last < pivot for last in self._last):
                return out
            out.append(self._take(pivot))

    def _purge(self) -> float | None:
        """Drops messages that can be in no future set; returns P when every stream is
        non-empty (the pivot stamp), else None."""
        qs = self._q
        while True:
            lower = -math.inf  # lower bound of the next pivot
            complete = True
            for q, last in zip(qs, self._last, strict=True):
                if q:
                    lower = max(lower, q[0][0])
                else:
                    complete = False
                    lower = max(lower, last)
            if lower == -math.inf:
                return None
            cut = lower - self.slop - _EPS
            purged = False
            for j, q in enumerate(qs):
                while q and q[0][0] < cut:
                    q.popleft()
                    self._drop(j, "unmatched")
                    purged = True
            if not purged:
                return lower if complete else None

    def _take(self, pivot: float) -> list[object]:
        """Removes and returns the best set containing the pivot (every stream has a stamp >= P)."""
        # Per stream: index of b_i (newest <= P) and a_i (oldest > P, or -1).
        b_idx: list[int] = []
        a_idx: list[int] = []
        for q in self._q:
            k = 0
            n = len(q)
            while k + 1 < n and q[k + 1][0] <= pivot:
                k += 1
            b_idx.append(k)
            a_idx.append(k + 1 if k + 1 < n else -1)
        b = [q[k][0] for q, k in zip(self._q, b_idx, strict=True)]
        # Sweep L over the b_i values, from P down. R(L) = max(P, a_i for streams with b_i < L).
        order = sorted(range(self.n), key=lambda s: b[s], reverse=True)
        # suffix_max[k] = max a_i over order[k:], i.e. over streams with b below the k-th value.
        suffix = [pivot] * (self.n + 1)
        for k in range(self.n - 1, -1, -1):
            s = order[k]
            a = self._q[s][a_idx[s]][0] if a_idx[s] >= 0 else math.inf
            suffix[k] = max(suffix[k + 1], a)
        best: tuple[float, float] | None = None  # (span, L)
        k = 0
        while k < self.n:
            lo = b[order[k]]
            while k + 1 < self.n and b[order[k + 1]] == lo:
                k += 1
            span = suffix[k + 1] - lo
            # L decreases along the sweep, so "<=" gives ties to the smaller L (earlier set).
            if span <= self.slop + _EPS and (best is None or span <= best[0]):
                best = (span, lo)
            k += 1
        assert best is not None, "pivot set must exist"  # L = min b_i always fits
        lo = best[1]
        msgs: list[object] = []
        stamps: list[float] = []
        for s, q in enumerate(self._q):
            k = b_idx[s] if b[s] >= lo else a_idx[s]
            for _ in range(k):
                q.popleft()
                self._drop(s, "unmatched")
            t, m = q.popleft()
            msgs.append(m)
            stamps.append(t)
        self._counts["emitted"] += 1
        self.last_set_stamps = stamps
        if self.callback is not None:
            self.callback(msgs)
        return msgs


def bench(
    n_streams: int = 3,
    queue_sizes: tuple[int, ...] = (8, 16, 32, 64, 128),
    n_sets: int = 3000,
    period: float = 0.08,
    seed: int = 0,
) -> dict[int, float]:
    """Micro-benchmark (not a test): µs per ``add`` vs queue size, N streams with jittered
    stamps where stream 0 arrives ``queue_size - 2`` periods late, so the other queues stay
    nearly full. Returns {queue_size: µs per add}; also prints a table."""
    import random

    rnd = random.Random(seed)
    out: dict[int, float] = {}
    for qs in queue_sizes:
        lag = max(qs - 2, 0)
        events: list[tuple[int, int, float]] = []  # (arrival order key, stream, stamp)
        for k in range(n_sets):
            base = k * period
            for s in range(n_streams):
                stamp = base + (0.0 if s == 0 else rnd.uniform(-0.01, 0.01))
                events.append((k + (lag if s == 0 else 0), s, round(stamp, 6)))
        events.sort(key=lambda e: (e[0], e[1]))
        sync = ApproxTimeSynchronizer(n_streams, slop=0.02, queue_size=qs)
        t0 = time.perf_counter()
        for _, s, stamp in events:
            sync.add(s, stamp, None)
        dt = time.perf_counter() - t0
        out[qs] = dt / len(events) * 1e6
        st = sync.stats
        print(
            f"N={n_streams} queue={qs:4d}: {out[qs]:7.2f} us/add  emitted={st['emitted']} "
            f"overflow={st['dropped_overflow']} unmatched={st['dropped_unmatched']}"
        )
    return out


if __name__ == "__main__":
    bench()
