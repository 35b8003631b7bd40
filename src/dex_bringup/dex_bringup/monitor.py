"""Pure core of the demo monitor: trial table, loop latency, per-node diagnostics (no rclpy).

Loop latency = wall time between receiving the last input of stamp t (the last camera image in
vision mode, /joint_states in state mode) and receiving /policy/action with stamp t, measured in
the monitor process (so it includes DDS delivery both ways, like a real controller would see).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

_STAT_KEY = re.compile(r"(p50|p99|latency|step|mean|max|rate|hz|miss|count)", re.IGNORECASE)


def percentiles_ms(samples_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in ms; NaN for no samples."""
    if not samples_s:
        return float("nan"), float("nan")
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


@dataclass
class TrialRow:
    trial: int
    seed: str = ""
    successes: str = "0"
    state: str = "running"
    end_reason: str = ""
    steps: str = "0"
    ended: bool = False
    latencies: list[float] = field(default_factory=list)


class DemoMonitor:
    """Collects what ``dex demo`` prints. Feed it messages; read ``rows`` / ``table()``."""

    def __init__(self, max_stamps: int = 2000, input_name: str = "camera") -> None:
        self.input_name = input_name  # what the loop latency is timed from (for the printout)
        self.rows: dict[int, TrialRow] = {}
        self.finished = False
        self.diagnostics: dict[str, tuple[int, str, dict[str, str]]] = {}
        self.latencies: list[float] = []
        self.actions = 0
        self._input_wall: dict[float, float] = {}
        self._stamp_trial: dict[float, int] = {}
        self._current: int | None = None
        self._max_stamps = max_stamps

    @staticmethod
    def _key(stamp: float) -> float:
        return round(stamp, 6)

    def on_input(self, stamp: float, wall: float) -> None:
        k = self._key(stamp)
        self._input_wall[k] = max(self._input_wall.get(k, wall), wall)
        if len(self._input_wall) > self._max_stamps:
            for old in sorted(self._input_wall)[: len(self._input_wall) - self._max_stamps]:
                del self._input_wall[old]

    def on_action(self, stamp: float, wall: float) -> float | None:
        self.actions += 1
        t_in = self._input_wall.get(self._key(stamp))
        if t_in is None:
            return None
        lat = wall - t_in
        self.latencies.append(lat)
        trial = self._stamp_trial.get(self._key(stamp), self._current)
        if trial is not None and trial in self.rows:
            self.rows[trial].latencies.append(lat)
        return lat

    def on_status(self, stamp: float, state: str, values: dict[str, str]) -> str | None:
        """Update the table; returns a progress line worth printing (trial start/end/finish)."""
        if state == "finished":
            self.finished = True
            return f"trials finished: {len(self.rows)} trial(s)"
        try:
            idx = int(values.get("trial", ""))
        except ValueError:
            return None
        new = idx not in self.rows
        row = self.rows.setdefault(idx, TrialRow(idx))
        self._current = idx
        self._stamp_trial[self._key(stamp)] = idx
        row.seed = values.get("seed", row.seed)
        row.successes = values.get("successes", row.successes)
        row.steps = values.get("steps", row.steps)
        row.state = state
        if values.get("ended") == "true" and not row.ended:
            row.ended = True
            row.end_reason = values.get("end_reason", "") or state
            p50, p99 = percentiles_ms(row.latencies)
            return (
                f"trial {idx} ended: {row.end_reason}, successes {row.successes}, steps {row.steps}, "
                f"loop latency p50 {p50:.1f} / p99 {p99:.1f} ms"
            )
        if new:
            return f"trial {idx} started (seed {row.seed}, mode {values.get('mode', '?')})"
        if state == "success":
            return f"trial {idx}: goal reached ({row.successes} so far, step {row.steps})"
        return None

    def on_diagnostics(self, name: str, level: int, message: str, values: dict[str, str]) -> None:
        if name == "trial":
            return
        self.diagnostics[name] = (level, message, values)

    # ---- output ------------------------------------------------------------------------------
    def table(self) -> str:
        head = f"{'trial':>5} {'seed':>6} {'successes':>9} {'ended by':>10} {'steps':>6} {'loop p50 ms':>11} {'loop p99 ms':>11}"
        lines = [head, "-" * len(head)]
        for idx in sorted(self.rows):
            r = self.rows[idx]
            p50, p99 = percentiles_ms(r.latencies)
            lines.append(
                f"{idx:>5} {r.seed:>6} {r.successes:>9} {(r.end_reason if r.ended else 'unfinished'):>10} "
                f"{r.steps:>6} {p50:>11.1f} {p99:>11.1f}"
            )
        p50, p99 = percentiles_ms(self.latencies)
        lines.append(
            f"all: {len(self.latencies)} steps timed, {self.input_name} stamp -> /policy/action at the monitor: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        return "\n".join(lines)

    def diagnostics_table(self) -> str:
        """Each node's last /diagnostics: timing values (step time, latency) first."""
        lines = []
        for name in sorted(self.diagnostics):
            level, message, values = self.diagnostics[name]
            lvl = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}.get(level, str(level))
            lines.append(f"{name} [{lvl}] {message}")
            timing = {k: v for k, v in values.items() if _STAT_KEY.search(k)}
            for k, v in timing.items():
                lines.append(f"    {k}: {v}")
        return "\n".join(lines) if lines else "(no /diagnostics received)"

    def trials_ok(self) -> bool:
        return bool(self.rows) and all(r.ended for r in self.rows.values())

    def next_trial(self) -> int:
        """The first trial index after the last one that ended (where a restarted controller
        resumes); 0 before any ended."""
        return max((i + 1 for i, r in self.rows.items() if r.ended), default=0)
