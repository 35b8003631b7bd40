"""ros2 launch file for the real hand (needs a ROS 2 distro with launch_ros).

    ros2 launch dex_bringup hardware.launch.py trials:=1 record:=runs/hw

The hand's ros2_control stack (joint_state_broadcaster + forward_command_controller
``hand_position_controller``) and the camera drivers are started by their own launch files; this
one adds the dex nodes from ``dex_bringup.graph.hardware_graph`` — the same description the
``dex`` command uses. Camera topics are mapped with ``cam0:=/my/camera/image_raw`` etc.
"""

from __future__ import annotations

ARGS = {
    "trials": ("3", "number of trials the policy runs"),
    "seed": ("0", "seed of the first trial (goal sequence)"),
    "hand": ("shadow", "hand profile in dex_description.registry"),
    "record": ("", "directory for one bag per trial ('' = no recording)"),
    "cam0": ("", "driver topic to use as /cameras/cam0/image_raw ('' = already that name)"),
    "cam1": ("", "driver topic to use as /cameras/cam1/image_raw"),
    "cam2": ("", "driver topic to use as /cameras/cam2/image_raw"),
    "rviz": ("false", "start RViz with dex_description's config"),
    "robot_state_publisher": ("true", "publish TF from the URDF and /joint_states"),
}


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _nodes(context):  # noqa: ANN001 - launch context
    from launch_ros.actions import Node

    from dex_bringup.graph import hardware_graph
    from dex_description import paths

    def arg(name: str) -> str:
        return context.launch_configurations[name]

    remaps = {
        arg(c): f"/cameras/{c}/image_raw" for c in ("cam0", "cam1", "cam2") if arg(c)
    }
    specs = hardware_graph(
        hand=arg("hand"),
        num_trials=int(arg("trials")),
        seed=int(arg("seed")),
        record_dir=arg("record") or None,
        camera_remaps=remaps,
    )
    actions = [
        Node(
            package=s.package,
            executable=s.executable,
            name=s.name,
            parameters=[s.parameters],
            remappings=s.remappings,
            output="screen",
        )
        for s in specs
    ]
    if _truthy(arg("robot_state_publisher")):
        urdf = paths.urdf_path(arg("hand")).read_text()
        actions.append(
            Node(
                package="robot_state_publisher",
                executable="robot_state_publisher",
                parameters=[{"robot_description": urdf}],
                output="screen",
            )
        )
    if _truthy(arg("rviz")):
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", str(paths.rviz_config())],
                output="screen",
            )
        )
    return actions


def generate_launch_description():  # noqa: ANN201 - launch API
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
