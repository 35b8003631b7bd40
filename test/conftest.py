"""Shared test fixtures: an isolated DDS environment and node processes that are always stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests import mujoco directly too; its GL backend is fixed at first import: headless EGL.
os.environ.setdefault("MUJOCO_GL", "egl")


def ros_env(domain_id: int | None = None) -> dict[str, str]:
    """A child environment on a random ROS_DOMAIN_ID, discovery kept on this machine."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else 100 + random.randrange(100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def dds_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Random ROS_DOMAIN_ID + LOCALHOST, set in this process too (for in-process rclpy)."""
    env = ros_env()
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    return env


class NodeProcs:
    """Starts ``python -m <module> ...`` processes; all are stopped when the test ends."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(
            argv if argv[0] != "-m" else [sys.executable, *argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for _name, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for _name, p in self.procs:
            try:
                p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture
def node_procs(dds_env: dict[str, str], tmp_path: Path) -> Iterator[NodeProcs]:
    procs = NodeProcs(dds_env, tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()
