"""ament_python package dex_perception; also installs into a plain venv with pip."""
from glob import glob

from setuptools import find_namespace_packages, setup

PACKAGE = "dex_perception"

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
    ],
    install_requires=["numpy", "onnxruntime", "dex_description", "dex_common", "dex_sim"],
    zip_safe=False,
    python_requires=">=3.10",
    entry_points={"console_scripts": ["perception_node = dex_perception.node:main", "dex-perception-dataset = dex_perception.dataset:main", "dex-perception-train = dex_perception.train:main", "dex-perception-eval = dex_perception.evaluate:main"]},
)
