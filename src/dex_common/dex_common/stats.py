"""Bounded rolling statistics for step times and latencies (seconds in, milliseconds out)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class RollingStats:
    """Keeps the last ``window`` samples (seconds); ``summary()`` reports in milliseconds.

    ``count`` is the total number of samples ever added (not just those in the window), so a
    diagnostics reader can tell the rate; the percentiles/mean/max cover the window only.
    """

    def __init__(self, window: int = 1000) -> None:
        if int(window) < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.window = int(window)
        self._buf: deque[float] = deque(maxlen=self.window)
        self.count = 0
        self.rejected = 0  # non-finite samples

    def add(self, seconds: float) -> None:
        v = float(seconds)
        if not math.isfinite(v):
            self.rejected += 1
            return
        self._buf.append(v)
        self.count += 1

    def reset(self) -> None:
        self._buf.clear()
        self.count = 0
        self.rejected = 0

    def values(self) -> list[float]:
        """The samples in the window (seconds), oldest first."""
        return list(self._buf)

    def __len__(self) -> int:
        return len(self._buf)

    def percentile_ms(self, p: float) -> float:
        """Percentile ``p`` in [0, 100] of the window, ms; NaN when empty."""
        if not self._buf:
            return float("nan")
        return float(np.percentile(np.fromiter(self._buf, float), p) * 1e3)

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.percentile_ms(99)

    @property
    def max_ms(self) -> float:
        return max(self._buf) * 1e3 if self._buf else float("nan")

    @property
    def mean_ms(self) -> float:
        return sum(self._buf) / len(self._buf) * 1e3 if self._buf else float("nan")

    def summary(self) -> dict[str, float]:
        """{count, mean_ms, p50_ms, p99_ms, max_ms} (NaN stats when empty)."""
        if not self._buf:
            nan = float("nan")
            return {"count": self.count, "mean_ms": nan, "p50_ms": nan, "p99_ms": nan,
                    "max_ms": nan}
        a = np.fromiter(self._buf, float) * 1e3
        p50, p99 = np.percentile(a, [50, 99])
        return {
            "count": self.count,
            "mean_ms": float(a.mean()),
            "p50_ms": float(p50),
            "p99_ms": float(p99),
            "max_ms": float(a.max()),
        }

    def as_strings(self, prefix: str = "") -> dict[str, str]:
        """Summary as strings (for diagnostic KeyValues), 3 decimals."""
        return {
            prefix + k: (str(v) if k == "count" else f"{v:.3f}") for k, v in self.summary().items()
        }
