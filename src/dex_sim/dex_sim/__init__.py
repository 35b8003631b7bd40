"""MuJoCo physics and task core, and the sim node.

- ``dex_sim.physics.HandCubeSim``: the hand + cube scene (pure; shared by node and training env)
- ``dex_sim.env``: minimal training env on the same core
- ``dex_sim.node``: the ROS node (``python -m dex_sim.node``; lockstep / realtime)

Nothing is imported here so that ``import dex_sim`` stays cheap and never touches GL or rclpy.
"""

import os as _os

# MuJoCo picks its GL backend when it is first imported, whichever submodule does it: default to
# EGL (works headless, software rendering) unless the user chose one.
_os.environ.setdefault("MUJOCO_GL", "egl")
