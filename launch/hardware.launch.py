"""ros2 launch file for the real hand (needs a ROS 2 distro with launch_ros).

    ros2 launch dex_bringup hardware.launch.py trials:=1 record:=runs/hw \
        cameras:="cam0=/left/image_raw,cam1=/top/image_raw,cam2=/right/image_raw"

With ``hand_port:=/dev/serial/by-id/...`` (LEAP hand) this launch also starts dex_hardware's
driver for the hand; without it, the hand's own ros2_control stack (joint_state_broadcaster +
forward_command_controller ``hand_position_controller``) is started by its own launch file. The
camera drivers too; this one adds the dex nodes from ``dex_bringup.graph.hardware_graph`` — the same description the
``dex`` command uses. ``cameras`` maps each registry camera name to its driver's image topic.
"""

from __future__ import annotations

ARGS = {
    "trials": ("3", "number of trials the trial node runs"),
    "seed": ("0", "seed of the first trial (goal sequence)"),
    "goal_rule": ("uniform", "uniform (Dactyl's goals) | far90 (each goal >= 90 deg from the last)"),
    "hand": ("shadow", "hand profile in dex_description.registry"),
    "controller": ("onnx", "onnx (the LSTM policy model) | mpc (the sampling-MPC planner)"),
    "record": ("", "directory for one bag per trial ('' = no recording)"),
    "hand_port": ("", "serial port of a LEAP hand: start dex_hardware's driver ('' = the hand's"
                      " own ros2_control stack publishes /joint_states)"),
    "camera_sources": ("", "NAME=SOURCE,... start dex_hardware camera nodes (OpenCV source: device"
                           " index, /dev/videoN, file, URL) instead of external drivers"),
    "calibration_dir": ("", "folder of NAME.json from dex-calibrate-camera for those cameras"),
    "cameras": ("", "NAME=TOPIC,... driver image topic per registry camera ('' = already named"
                    " /cameras/NAME/image_raw)"),
    "rviz": ("false", "start RViz with dex_description's config"),
    "keep_running": ("false", "keep the graph up after the last trial (default: the launch ends)"),
    "respawn": ("false", "restart a node other than the trial node and the controller when it dies"),
    "robot_state_publisher": ("true", "publish TF from the URDF and /joint_states"),
}


def _nodes(context):  # noqa: ANN001 - launch context
    from dex_bringup.graph import (
        camera_remaps_from_text,
        camera_sources_from_text,
        hardware_graph,
    )
    from dex_bringup.launch_support import int_arg, launch_actions, truthy

    def arg(name: str) -> str:
        return context.launch_configurations[name]

    specs = hardware_graph(
        hand=arg("hand"),
        num_trials=int_arg(arg("trials"), "trials"),
        seed=int_arg(arg("seed"), "seed"),
        record_dir=arg("record") or None,
        camera_remaps=camera_remaps_from_text(arg("cameras"), arg("hand")),
        controller=arg("controller"),
        goal_rule=arg("goal_rule"),
        hand_port=arg("hand_port") or None,
        camera_sources=camera_sources_from_text(arg("camera_sources"), arg("hand")),
        calibration_dir=arg("calibration_dir") or None,
    )
    return launch_actions(
        specs, arg("hand"), False, truthy(arg("robot_state_publisher"), "robot_state_publisher"),
        truthy(arg("rviz"), "rviz"), keep_running=truthy(arg("keep_running"), "keep_running"),
        respawn=truthy(arg("respawn"), "respawn"),
    )


def generate_launch_description():  # noqa: ANN201 - launch API
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
