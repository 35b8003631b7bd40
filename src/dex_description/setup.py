"""ament_python package dex_description; also installs into a plain venv with pip."""

from glob import glob

from setuptools import find_namespace_packages, setup

PACKAGE = "dex_description"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_namespace_packages(include=[PACKAGE, PACKAGE + ".*"], exclude=["*__pycache__"]),
    include_package_data=True,
    package_data={PACKAGE: ["models/*", "rviz/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/models", glob(PACKAGE + "/models/*")),
        ("share/" + PACKAGE + "/rviz", glob(PACKAGE + "/rviz/*")),
    ],
    install_requires=["numpy", "mujoco>=3.2"],
    zip_safe=False,
    python_requires=">=3.10",
    entry_points={"console_scripts": []},
)
