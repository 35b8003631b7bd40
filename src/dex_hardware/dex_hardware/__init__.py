"""Real hand drivers (LEAP over Dynamixel, ros2_control bridge) and command safety."""
