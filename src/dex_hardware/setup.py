"""ament_python package dex_hardware; also installs into a plain venv with pip."""
from glob import glob

from setuptools import find_namespace_packages, setup

PACKAGE = "dex_hardware"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_namespace_packages(include=[PACKAGE, PACKAGE + ".*"], exclude=["*__pycache__"]),
    include_package_data=True,
    package_data={PACKAGE: ["models/*", "config/*", "rviz/*", "urdf/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/models", glob(PACKAGE + "/models/*")),
        ("share/" + PACKAGE + "/config", glob(PACKAGE + "/config/*")),
    ],
    install_requires=["numpy", "dex_description", "dex_common", "dynamixel-sdk", "opencv-python-headless"],
    zip_safe=False,
    python_requires=">=3.10",
    entry_points={"console_scripts": [
        "leap_node = dex_hardware.leap_node:main",
        "camera_node = dex_hardware.camera_node:main",
        "dex-hardware-bench = dex_hardware.bench_bus:main",
        "dex-calibrate-camera = dex_hardware.calibrate:main"]},
)
