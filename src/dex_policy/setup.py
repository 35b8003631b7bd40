"""ament_python package dex_policy; also installs into a plain venv with pip."""
from glob import glob

from setuptools import find_namespace_packages, setup

PACKAGE = "dex_policy"

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
    entry_points={"console_scripts": ["policy_node = dex_policy.node:main", "dex-policy-train = dex_policy.train:main", "dex-policy-eval = dex_policy.evaluate:main", "dex-policy-dagger = dex_policy.dagger:main", "dex-policy-bench-ppo = dex_policy.bench_ppo:main"]},
)
