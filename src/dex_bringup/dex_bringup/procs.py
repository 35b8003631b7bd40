"""Start the graph's nodes as separate processes and stop them cleanly (no rclpy here).

Used by ``dex run`` / ``dex demo`` / ``dex bench`` and the integration test. Each child runs
``python -m <module> --ros-args ...`` (the same parameters and remappings the launch files pass),
its output lines are prefixed with the node name, and a child that dies is reported with its exit
code and its last stderr lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from dex_bringup.graph import NodeSpec

DEFAULT_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl"}


def child_env(base: Mapping[str, str] | None = None, **overrides: str) -> dict[str, str]:
    """Environment for node processes: defaults applied only where unset, then overrides."""
    env = dict(os.environ if base is None else base)
    for k, v in DEFAULT_ENV.items():
        env.setdefault(k, v)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def exit_text(child: Child) -> str:
    """"exit code -9 (signal SIGKILL)", "exit code 1", "still running"."""
    code = child.returncode()
    if code is None:
        return "still running"
    how = f"exit code {code}"
    if code < 0:
        try:
            how += f" (signal {signal.Signals(-code).name})"
        except ValueError:
            pass
    return how


@dataclass
class Child:
    spec: NodeSpec
    proc: subprocess.Popen
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=30))
    stdout_tail: deque = field(default_factory=lambda: deque(maxlen=30))
    threads: list[threading.Thread] = field(default_factory=list)
    reported: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def returncode(self) -> int | None:
        return self.proc.poll()


class ProcessGroup:
    """A set of node processes started together and stopped together."""

    def __init__(
        self,
        specs: Iterable[NodeSpec],
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        out: TextIO | None = None,
        echo: bool = True,
        line_filter: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.specs = list(specs)
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in the graph: {names}")
        self.env = child_env(env)
        self.python = python
        self.out = out or sys.stdout
        self.echo = echo
        self.line_filter = line_filter
        self.children: list[Child] = []
        self._lock = threading.Lock()

    # ---- start -------------------------------------------------------------------------------
    def start(self, names: Iterable[str] | None = None, stagger_s: float = 0.0) -> None:
        """Start the not-yet-started nodes (only those in ``names`` if given), in list order."""
        started = {c.name for c in self.children}
        wanted = set(names) if names is not None else None
        for spec in self.specs:
            if spec.name in started or (wanted is not None and spec.name not in wanted):
                continue
            argv = spec.argv(self.python)
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # Ctrl-C goes to us; we forward it in order
            )
            child = Child(spec, proc)
            for stream, tail in ((proc.stdout, child.stdout_tail), (proc.stderr, child.stderr_tail)):
                t = threading.Thread(target=self._pump, args=(child, stream, tail), daemon=True)
                t.start()
                child.threads.append(t)
            self.children.append(child)
            if stagger_s:
                time.sleep(stagger_s)

    def _pump(self, child: Child, stream: TextIO, tail: deque) -> None:
        for line in stream:
            line = line.rstrip("\n")
            tail.append(line)
            if self.echo and (self.line_filter is None or self.line_filter(child.name, line)):
                with self._lock:
                    print(f"[{child.name}] {line}", file=self.out, flush=True)

    # ---- watch -------------------------------------------------------------------------------
    def dead(self) -> list[Child]:
        """Children that have exited (any code)."""
        return [c for c in self.children if c.returncode() is not None]

    def failed(self) -> list[Child]:
        """Children that exited with a non-zero code."""
        return [c for c in self.dead() if c.returncode() != 0]

    def describe_exit(self, child: Child, lines: int = 12) -> str:
        for t in child.threads:  # let the pumps drain the last lines
            t.join(timeout=1.0)
        tail = list(child.stderr_tail)[-lines:] or list(child.stdout_tail)[-lines:]
        text = "\n".join("    " + t for t in tail) if tail else "    (no output)"
        return (f"node {child.name} ({child.spec.module}) died with {exit_text(child)}; "
                f"last output:\n{text}")

    # ---- restart -----------------------------------------------------------------------------
    def restart(self, name: str, parameters: Mapping[str, object] | None = None) -> Child:
        """Start node ``name`` again (stopping it first if it still runs), with ``parameters``
        overriding its spec's; the new spec replaces the old one."""
        i = next(k for k, c in enumerate(self.children) if c.name == name)
        old = self.children.pop(i)
        if old.returncode() is None:
            old.proc.send_signal(signal.SIGINT)
            try:
                old.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                old.proc.kill()
                old.proc.wait(timeout=5.0)
        for t in old.threads:
            t.join(timeout=1.0)
        j = next(k for k, s in enumerate(self.specs) if s.name == name)
        if parameters:
            self.specs[j] = self.specs[j].with_parameters(**parameters)
        self.start([name])
        return self.children[-1]

    # ---- stop --------------------------------------------------------------------------------
    def stop(self, int_timeout: float = 8.0, term_timeout: float = 4.0) -> dict[str, int | None]:
        """SIGINT all, then SIGTERM, then SIGKILL the ones still running. Returns exit codes."""
        for sig, timeout in ((signal.SIGINT, int_timeout), (signal.SIGTERM, term_timeout)):
            alive = [c for c in self.children if c.returncode() is None]
            if not alive:
                break
            for c in alive:
                try:
                    c.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(c.returncode() is None for c in alive):
                time.sleep(0.05)
        for c in self.children:
            if c.returncode() is None:
                c.proc.kill()
                print(f"[dex] {c.name} did not stop on SIGINT/SIGTERM: killed", file=self.out)
        codes = {}
        for c in self.children:
            codes[c.name] = c.proc.wait(timeout=5.0)
            for t in c.threads:
                t.join(timeout=1.0)
        return codes

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
