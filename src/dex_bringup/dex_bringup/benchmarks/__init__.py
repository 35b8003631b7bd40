"""Speed benchmarks of the simulator and env (``dex-sim-bench``) and their references: the
same-work physics ceiling, a gymnasium-robotics probe, MuJoCo Warp batched physics."""
