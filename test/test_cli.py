"""The `dex` starter as a user runs it: `dex run` starts the graph, stops by itself when the policy
reports 'finished', exits 0, prints the trial table and leaves one bag per trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, ros_env

from dex_bringup.bagging import read_bag


def test_dex_run_state_mode_finishes_by_itself_and_records(tmp_path: Path) -> None:
    out = tmp_path / "bags"
    p = subprocess.run(
        [sys.executable, "-m", "dex_bringup.cli", "run", "--source", "state", "--trials", "1",
         "--seed", "4", "--record", str(out), "--param", "dex_trial.goal_timeout_s=1.0"],
        cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=120,
    )
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert "all trials done; stopping the graph" in log, log[-3000:]
    assert "/joint_states stamp -> /policy/action" in log  # state mode times from joint states
    row = next(line.split() for line in p.stdout.splitlines() if line.split()[:2] == ["0", "4"])
    assert row[3] in ("dropped", "timeout", "completed"), row
    counts, outcome = read_bag(out / "trial_000")
    assert outcome["seed"] == "4" and outcome["end_reason"] == row[3]
    assert counts["/joint_states"] >= int(row[4]) - 1
    assert "/cameras/cam0/image_raw" not in counts  # no cameras in state mode


def test_dex_graph_hardware_is_the_launch_files_graph(capsys) -> None:  # noqa: ANN001
    from dex_bringup.cli import main
    from dex_bringup.graph import describe, hardware_graph

    argv = ["--hand", "leap", "--hand-port", "/dev/ttyUSB0", "--camera-sources", "cam0=0,cam1=2",
            "--trials", "2", "--controller", "mpc", "--param", "dex_trial.goal_timeout_s=80.0"]
    assert main(["graph", "--hardware", *argv]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == describe(hardware_graph(
        "leap", num_trials=2, controller="mpc", hand_port="/dev/ttyUSB0",
        camera_sources={"cam0": "0", "cam1": "2"},
        extra={"dex_trial": {"goal_timeout_s": 80.0}})).strip()
    assert "leap_hand" in printed and "camera_cam1" in printed and "/clock" not in printed
    for bad, why in ((["--source", "state"], "--source state"), (["--mode", "realtime"], "--mode"),
                     (["--view"], "--view")):
        assert main(["graph", "--hardware", *argv, *bad]) == 2
        assert why in capsys.readouterr().err
