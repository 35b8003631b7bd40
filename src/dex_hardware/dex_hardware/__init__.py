"""Real hand drivers and command safety.

Today this package holds only :mod:`dex_hardware.safety` (``CommandGuard``), which the sim node
uses too, so the sim and a real hand reject and clamp commands in exactly the same way.
Drivers come later: a LEAP hand over Dynamixel, and a ros2_control bridge for a vendor stack
(publishing /joint_states and taking /hand_position_controller/commands unchanged).
"""
