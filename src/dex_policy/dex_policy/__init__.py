"""PPO + LSTM training, ONNX export, evaluation, the controller node (policy or MPC)."""

# What the policy node can run as its controller (node parameter ``controller``; the graph, the
# ``dex`` starter and the launch files offer the same names): the ONNX LSTM policy, or the
# sampling-MPC planner on the same inputs (``dex_policy.mpc_runtime``).
NODE_CONTROLLERS = ("onnx", "mpc")
