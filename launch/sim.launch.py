"""ros2 launch file for the simulated graph (needs a ROS 2 distro with launch_ros).

    ros2 launch dex_bringup sim.launch.py source:=vision trials:=3
    ros2 launch launch/sim.launch.py mode:=realtime rviz:=true

The node list comes from ``dex_bringup.graph.sim_graph`` — the same description the ``dex``
command starts without a distro. launch/launch_ros are imported inside the functions so this file
can be parsed (and tested) where they are not installed.
"""

from __future__ import annotations

ARGS = {
    "mode": ("lockstep", "lockstep | realtime"),
    "source": ("vision", "vision (CNN pose from the cameras) | state (ground-truth pose)"),
    "trials": ("3", "number of trials the trial node runs"),
    "seed": ("0", "seed of the first trial"),
    "goal_rule": ("uniform", "uniform (Dactyl's goals) | far90 (each goal >= 90 deg from the last)"),
    "hand": ("shadow", "hand profile in dex_description.registry"),
    "controller": ("onnx", "onnx (the LSTM policy model) | mpc (the sampling-MPC planner)"),
    "record": ("", "directory for one bag per trial ('' = no recording)"),
    "rviz": ("false", "start RViz with dex_description's config"),
    "keep_running": ("false", "keep the graph up after the last trial (default: the launch ends)"),
    "respawn": ("false", "restart a node other than the trial node and the controller when it dies"),
    "robot_state_publisher": ("true", "publish TF from the URDF and /joint_states"),
    "use_sim_time": ("true", "nodes follow /clock"),
}


def _nodes(context):  # noqa: ANN001 - launch context
    from dex_bringup.graph import sim_graph
    from dex_bringup.launch_support import int_arg, launch_actions, truthy

    def arg(name: str) -> str:
        return context.launch_configurations[name]

    use_sim_time = truthy(arg("use_sim_time"), "use_sim_time")
    specs = sim_graph(
        hand=arg("hand"),
        mode=arg("mode"),
        pose_source=arg("source"),
        num_trials=int_arg(arg("trials"), "trials"),
        seed=int_arg(arg("seed"), "seed"),
        record_dir=arg("record") or None,
        use_sim_time=use_sim_time,
        controller=arg("controller"),
        goal_rule=arg("goal_rule"),
    )
    return launch_actions(
        specs, arg("hand"), use_sim_time, truthy(arg("robot_state_publisher"), "robot_state_publisher"),
        truthy(arg("rviz"), "rviz"), keep_running=truthy(arg("keep_running"), "keep_running"),
        respawn=truthy(arg("respawn"), "respawn"),
    )


def generate_launch_description():  # noqa: ANN201 - launch API
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
