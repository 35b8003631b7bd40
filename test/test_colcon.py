"""colcon builds the workspace (ament_python) and installs what `ros2 run`/`ros2 launch` need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dex_bringup.graph import hardware_graph, sim_graph

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (REPO / "src").glob("*/package.xml"))


def test_colcon_build_installs_packages_executables_and_launch_files(tmp_path: Path) -> None:
    colcon = shutil.which("colcon") or str(Path(sys.executable).parent / "colcon")
    assert Path(colcon).exists(), "colcon is not installed (scripts/setup.sh installs colcon-core)"
    build, install = tmp_path / "build", tmp_path / "install"
    proc = subprocess.run(
        [colcon, "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(REPO / "src"),
         "--build-base", str(build), "--install-base", str(install), "--merge-install"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(PACKAGES) >= 7, PACKAGES
    for pkg in PACKAGES:
        assert (install / "share" / pkg / "package.xml").is_file(), pkg
        assert (install / "share/ament_index/resource_index/packages" / pkg).is_file(), pkg
    # every node of every graph is installed where `ros2 run <package> <executable>` looks
    for spec in [*sim_graph(record_dir="x"), *hardware_graph(record_dir="x"),
                 *hardware_graph("leap", hand_port="/dev/ttyUSB0", camera_sources={"cam0": "0"})]:
        exe = install / "lib" / spec.package / spec.executable
        assert exe.is_file() and os.access(exe, os.X_OK), exe
    assert (install / "lib/dex_bringup/dex").is_file()
    for launch in ("sim.launch.py", "hardware.launch.py"):
        assert (install / "share/dex_bringup/launch" / launch).is_file(), launch
    # the installed copy (not the editable source) imports and prints the graph
    site = next(install.glob("lib/python3*/site-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", "import dex_bringup, sys; print(dex_bringup.__file__); "
         "from dex_bringup.cli import main; sys.exit(main(['graph']))"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(site))
    assert "dex_policy" in out.stdout
