"""ament_python package dex_bringup; also installs into a plain venv with pip."""
import os
from glob import glob

from setuptools import find_namespace_packages, setup

PACKAGE = "dex_bringup"
HERE = os.path.dirname(os.path.abspath(__file__))
# The launch files live at the repo top level (launch/); install them into share/dex_bringup/launch
# so `ros2 launch dex_bringup sim.launch.py` works. Relative paths: setuptools wants them so.
LAUNCH = sorted(
    os.path.relpath(p, HERE) for p in glob(os.path.join(HERE, "..", "..", "launch", "*.launch.py"))
)

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_namespace_packages(include=[PACKAGE, PACKAGE + ".*"], exclude=["*__pycache__"]),
    include_package_data=True,
    package_data={PACKAGE: ["foxglove/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", LAUNCH),
    ],
    install_requires=["numpy", "rosbags", "foxglove-sdk", "dex_sim", "dex_perception", "dex_policy", "dex_hardware"],
    zip_safe=False,
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "recorder_node = dex_bringup.recorder:main",
            "trial_node = dex_bringup.trial_node:main",
            "view_node = dex_bringup.view_node:main",
            "dex = dex_bringup.cli:main",
            "dex_bench = dex_bringup.bench:main",
            "dex-sim-bench = dex_bringup.benchmarks.env_speed:main",
        ]
    },
)
