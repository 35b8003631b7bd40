"""Runs a started-from-specs graph in a test until it reports 'finished' (shared by the
integration test and the fault campaign)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dex_bringup.procs import ProcessGroup
from dex_bringup.supervise import RunOutcome, run_graph, start_order


def run_graph_until(nodes: list, env: dict[str, str], node, finished: Callable[[], bool],
                    timeout_s: float, settle_s: float = 2.0, spin_s: float = 0.05,
                    tick: Callable[[], None] | None = None,
                    on_timeout: Callable[[], str] = lambda: "",
                    ) -> tuple[ProcessGroup, dict, RunOutcome]:
    """Run ``nodes`` with ``supervise.run_graph`` (what every ``dex`` command runs), spinning
    ``node`` (calling ``tick`` each turn), until ``finished()``. Fails the test naming what went
    wrong, with each node's stderr tail; returns the group, the exit codes and the outcome."""
    import rclpy

    group = ProcessGroup(start_order(nodes), env=env, echo=False)
    out = run_graph(group, node, lambda: rclpy.spin_once(node, timeout_sec=spin_s), finished,
                    timeout_s=timeout_s, settle_s=settle_s, tick=tick, handle_signals=False)
    if out.problems or not out.finished:
        tails = "\n".join(f"--- {c.name}:\n" + "\n".join(list(c.stderr_tail)[-15:])
                          for c in group.children)
        extra = on_timeout() if any(p.startswith("timeout") for p in out.problems) else ""
        pytest.fail("\n".join([*out.problems, out.note]) + extra + "\n" + tails)
    return group, out.codes, out
