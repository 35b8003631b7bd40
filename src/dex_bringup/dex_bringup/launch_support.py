"""Turns the graph description into launch_ros actions, for the files in launch/.

Only used under a ROS 2 distro (`ros2 launch`); launch_ros is imported inside the function so the
package imports where it is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dex_bringup.graph import NodeSpec
from dex_description import paths


def truthy(text: str) -> bool:
    """A launch argument's text as a bool ('true', '1', 'yes', 'on')."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def launch_actions(
    specs: Sequence[NodeSpec],
    hand: str,
    use_sim_time: bool,
    robot_state_publisher: bool,
    rviz: bool,
) -> list[Any]:
    """launch_ros Node actions for the graph's nodes, plus optional robot_state_publisher (TF
    from the URDF and /joint_states) and RViz with dex_description's config."""
    from launch_ros.actions import Node

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
    if robot_state_publisher:
        actions.append(
            Node(
                package="robot_state_publisher",
                executable="robot_state_publisher",
                parameters=[
                    {"robot_description": paths.urdf_path(hand).read_text(),
                     "use_sim_time": use_sim_time}
                ],
                output="screen",
            )
        )
    if rviz:
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", str(paths.rviz_config())],
                parameters=[{"use_sim_time": use_sim_time}],
                output="screen",
            )
        )
    return actions
