"""Turns the graph description into launch_ros actions, for the files in launch/.

Only used under a ROS 2 distro (`ros2 launch`); launch_ros is imported inside the function so the
package imports where it is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dex_bringup.graph import NodeSpec
from dex_bringup.supervise import is_controller, runs_trials
from dex_description import paths


class LaunchArgumentError(ValueError):
    """A launch argument with a value that cannot be used; the message names the argument."""


def truthy(text: str, name: str = "") -> bool:
    """A launch argument's text as a bool ('true', '1', 'yes', 'on' / 'false', '0', 'no',
    'off'); anything else is an error naming the argument."""
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", ""):
        return False
    raise LaunchArgumentError(f"launch argument {name or '?'}:={text!r}: expected true or false")


def int_arg(text: str, name: str, minimum: int = 0) -> int:
    """A launch argument's text as an integer >= ``minimum``, or an error naming it."""
    try:
        value = int(text.strip())
    except ValueError:
        raise LaunchArgumentError(
            f"launch argument {name}:={text!r}: expected an integer >= {minimum}") from None
    if value < minimum:
        raise LaunchArgumentError(f"launch argument {name}:={value}: must be >= {minimum}")
    return value


def missing_packages(wanted: Sequence[str], exists: Callable[[str], bool] | None = None
                     ) -> list[str]:
    """The optional ROS packages in ``wanted`` this distro lacks (checked before any node
    starts, so a launch that cannot complete starts nothing). ``exists`` defaults to the
    ament index."""
    if exists is None:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        def exists(pkg: str) -> bool:
            try:
                get_package_prefix(pkg)
                return True
            except PackageNotFoundError:
                return False
    return [p for p in wanted if not exists(p)]


def launch_actions(
    specs: Sequence[NodeSpec],
    hand: str,
    use_sim_time: bool,
    robot_state_publisher: bool,
    rviz: bool,
    keep_running: bool = False,
    respawn: bool = False,
) -> list[Any]:
    """launch_ros actions for the graph's nodes, plus optional robot_state_publisher (TF from
    the URDF and /joint_states) and RViz with dex_description's config.

    Unless ``keep_running``, the trial node exits after its last trial (``exit_when_finished``)
    and its exit shuts the launch down, so the graph ends like ``dex run``. ``respawn`` restarts
    every other node that dies (launch_ros respawn; a restarted trial node would begin again at
    trial 0 and a restarted controller would join a trial in flight with no memory, so those two
    are supervised only by ``dex run --respawn``). Optional packages
    are checked first: a launch that cannot start them starts nothing."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    wanted = [p for p, on in (("robot_state_publisher", robot_state_publisher),
                              ("rviz2", rviz)) if on]
    missing = missing_packages(wanted)
    if missing:
        raise LaunchArgumentError(
            f"missing ROS package(s) {missing}: install them (apt install "
            f"{' '.join('ros-$ROS_DISTRO-' + m.replace('_', '-') for m in missing)}) or "
            f"launch with {' '.join(m + ':=false' for m in missing)}")
    actions: list[Any] = []
    for s in specs:
        params = dict(s.parameters)
        trials = runs_trials(s)
        if trials:
            params["exit_when_finished"] = not keep_running
        node = Node(package=s.package, executable=s.executable, name=s.name,
                    parameters=[params], remappings=s.remappings, output="screen",
                    respawn=respawn and not (trials or is_controller(s)), respawn_delay=1.0)
        actions.append(node)
        if trials and not keep_running:
            actions.append(RegisterEventHandler(OnProcessExit(
                target_action=node,
                on_exit=[EmitEvent(event=Shutdown(reason="the trial node finished its trials"))])))
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
