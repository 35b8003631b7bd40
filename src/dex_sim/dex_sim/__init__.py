"""MuJoCo physics and task core, and the sim node."""
