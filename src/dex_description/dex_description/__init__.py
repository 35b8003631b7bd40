"""Hand and cube models (MJCF, URDF with ros2_control), the hand registry, RViz config."""
