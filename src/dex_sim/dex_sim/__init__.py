"""MuJoCo physics and task core, and the sim node.

- ``dex_sim.physics.HandCubeSim``: the hand + cube scene (pure; shared by node and training env)
- ``dex_sim.kinematics.HandKinematics``: fingertips from joint angles (for the policy node)
- ``dex_sim.env``: minimal training env on the same core
- ``dex_sim.node``: the ROS node (``python -m dex_sim.node``; lockstep / realtime)

Nothing is imported here so that ``import dex_sim`` stays cheap and never touches GL or rclpy.
"""
