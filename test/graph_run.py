"""Runs a started-from-specs graph in a test until it reports 'finished' (shared by the
integration test and the fault campaign)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from dex_bringup.cli import start_order, start_staged
from dex_bringup.procs import ProcessGroup


def run_graph_until(nodes: list, env: dict[str, str], node, finished: Callable[[], bool],
                    timeout_s: float, settle_s: float = 2.0, spin_s: float = 0.05,
                    tick: Callable[[], None] | None = None,
                    on_timeout: Callable[[], str] = lambda: "") -> tuple[ProcessGroup, dict]:
    """Start ``nodes`` (staged, as ``dex run``), spin ``node`` (calling ``tick`` each turn)
    until ``finished()``, spin ``settle_s`` more for in-flight messages, stop the graph. Fails
    the test naming what went wrong, with each node's stderr tail; returns the group and the
    exit codes."""
    import rclpy

    group = ProcessGroup(start_order(nodes), env=env, echo=False)
    problems: list[str] = []
    try:
        problems += start_staged(group, node, lambda: rclpy.spin_once(node, timeout_sec=0.05))
        t0 = time.monotonic()
        while not problems and not finished():
            rclpy.spin_once(node, timeout_sec=spin_s)
            if tick is not None:
                tick()
            if group.dead():
                problems += [group.describe_exit(c) for c in group.dead()]
            elif time.monotonic() - t0 > timeout_s:
                problems.append(f"no 'finished' within {timeout_s} s{on_timeout()}")
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        codes = group.stop()
    if problems:
        tails = "\n".join(f"--- {c.name}:\n" + "\n".join(list(c.stderr_tail)[-15:])
                          for c in group.children)
        pytest.fail("\n".join(problems) + "\n" + tails)
    return group, codes
