"""The node graph (one description for ros2 launch and the dex starter), recorder, demo and benchmarks."""
