"""dex_bringup.graph: the one node-graph description; the cli and the launch files use it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from dex_bringup.cli import _extra, build_parser, graph_from_args
from dex_bringup.graph import (
    GraphError,
    NodeSpec,
    format_param,
    hardware_graph,
    parse_param,
    record_topics,
    sim_graph,
    topic_types,
)
from dex_bringup.supervise import start_order

REPO = Path(__file__).resolve().parents[1]


def _by_name(nodes: list[NodeSpec]) -> dict[str, NodeSpec]:
    return {n.name: n for n in nodes}


def test_sim_graph_vision_has_perception_and_recorder() -> None:
    nodes = _by_name(sim_graph(pose_source="vision", num_trials=2, seed=7, record_dir="/tmp/b"))
    assert list(nodes) == ["dex_sim", "dex_perception", "dex_trial", "dex_policy", "dex_recorder"]
    assert nodes["dex_sim"].parameters["publish_images"] is True
    assert nodes["dex_sim"].parameters["mode"] == "lockstep"
    assert nodes["dex_policy"].parameters["pose_source"] == "vision"
    # the trial node runs the trials (judged on the truth in sim); the controller only acts
    trial = nodes["dex_trial"]
    assert (trial.package, trial.executable) == ("dex_bringup", "trial_node")
    assert trial.parameters["num_trials"] == 2 and trial.parameters["seed"] == 7
    assert trial.parameters["judge_source"] == "gt"
    assert trial.parameters["pose_model_path"] == nodes["dex_perception"].parameters["model_path"]
    assert not {"num_trials", "seed", "judge_source"} & set(nodes["dex_policy"].parameters)
    assert "dex_trial" in nodes["dex_sim"].parameters["wait_nodes"].split(",")
    assert nodes["dex_recorder"].parameters["out_dir"] == "/tmp/b"
    assert "/object/pose" in nodes["dex_recorder"].parameters["topics"]
    # every node but the sim (which publishes /clock) follows sim time
    assert "use_sim_time" not in nodes["dex_sim"].parameters
    assert all(nodes[n].parameters["use_sim_time"] is True
               for n in ("dex_perception", "dex_trial", "dex_policy"))


def test_state_source_drops_perception_and_images() -> None:
    nodes = _by_name(sim_graph(pose_source="state"))
    assert "dex_perception" not in nodes and "dex_recorder" not in nodes
    assert nodes["dex_policy"].parameters["pose_source"] == "gt"
    assert nodes["dex_sim"].parameters["publish_images"] is False
    assert "/object/pose" not in record_topics(pose_source="state")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "fast"}, "unknown mode 'fast'"),
        ({"pose_source": "lidar"}, "unknown pose source 'lidar'"),
        ({"hand": "leap9"}, "unknown hand 'leap9'"),
        ({"num_trials": 0}, "num_trials must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"goal_rule": "sideways"}, "unknown goal rule 'sideways'"),
        ({"extra": {"dex_nope": {"a": 1}}}, r"unknown node\(s\) \['dex_nope'\]"),
        ({"extra": {"dex_policy": {"a": object()}}}, "unsupported parameter value"),
    ],
)
def test_graph_validation_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(GraphError, match=match):
        sim_graph(**kwargs)


def test_hardware_graph_wall_time_and_camera_remaps() -> None:
    nodes = _by_name(hardware_graph(record_dir="r", camera_remaps={"/usb0/image": "/cameras/cam0/image_raw"}))
    assert list(nodes) == ["dex_perception", "dex_trial", "dex_policy", "dex_recorder"]
    assert nodes["dex_trial"].parameters["judge_source"] == "vision"  # no truth on a robot
    assert nodes["dex_perception"].remappings == [("/cameras/cam0/image_raw", "/usb0/image")]
    assert all(n.parameters["use_sim_time"] is False for n in nodes.values())
    assert "/clock" not in nodes["dex_recorder"].parameters["topics"]
    with pytest.raises(GraphError, match="camera remaps must target"):
        hardware_graph(camera_remaps={"/usb0/image": "/cam0"})


def test_hardware_graph_with_a_leap_port_starts_the_driver() -> None:
    nodes = _by_name(hardware_graph("leap", hand_port="/dev/serial/by-id/leap"))
    assert list(nodes)[0] == "leap_hand"
    drv = nodes["leap_hand"]
    assert (drv.package, drv.executable, drv.module) == ("dex_hardware", "leap_node",
                                                         "dex_hardware.leap_node")
    assert drv.parameters["port"] == "/dev/serial/by-id/leap"
    assert "-p" in drv.ros_args() and "port:=/dev/serial/by-id/leap" in drv.ros_args()
    with pytest.raises(GraphError, match="no driver for hand 'shadow'"):
        hardware_graph("shadow", hand_port="/dev/ttyUSB0")


def test_hardware_graph_with_camera_sources_starts_camera_nodes() -> None:
    from dex_bringup.graph import camera_sources_from_text

    src = camera_sources_from_text("cam0=/dev/video0, cam2=2", "leap")
    assert src == {"cam0": "/dev/video0", "cam2": "2"}
    nodes = _by_name(hardware_graph("leap", camera_sources=src, calibration_dir="calib/"))
    assert list(nodes)[:2] == ["camera_cam0", "camera_cam2"]
    cam = nodes["camera_cam2"]
    assert (cam.package, cam.executable) == ("dex_hardware", "camera_node")
    assert cam.parameters["source"] == "2" and cam.parameters["calibration"] == "calib/cam2.json"
    for bad in ("cam9=0", "cam0"):
        with pytest.raises(GraphError):
            camera_sources_from_text(bad, "leap")


def test_hardware_graph_sync_windows_cover_a_period_of_its_free_running_sources() -> None:
    """Cameras and the driver run on their own timers, so their stamps never coincide: the
    synchronizers' slop covers 1.5 periods (the default 5 ms formed no set in a 150 s run)."""
    src = {"cam0": "a.mp4", "cam1": "b.mp4", "cam2": "c.mp4"}
    nodes = _by_name(hardware_graph("leap", hand_port="/dev/ttyUSB0", camera_sources=src))
    assert nodes["camera_cam1"].parameters["rate_hz"] == pytest.approx(12.5)  # the control rate
    assert nodes["dex_perception"].parameters["slop"] == pytest.approx(1.5 / 12.5)
    assert nodes["dex_policy"].parameters["slop"] == pytest.approx(1.5 / 100)
    assert nodes["dex_trial"].parameters["slop"] == pytest.approx(1.5 / 100)
    nodes = _by_name(hardware_graph("leap", hand_port="/dev/ttyUSB0", camera_sources=src,
                                    extra={"camera_cam0": {"rate_hz": 5.0},
                                           "leap_hand": {"rate_hz": 50.0},
                                           "dex_policy": {"slop": 0.002}}))
    assert nodes["dex_perception"].parameters["slop"] == pytest.approx(1.5 / 5.0)
    assert nodes["dex_policy"].parameters["slop"] == 0.002  # what the user set wins
    # External camera drivers: their rate is unknown here, perception keeps its own default.
    assert "slop" not in _by_name(hardware_graph("leap"))["dex_perception"].parameters


@pytest.mark.parametrize(
    "value", [True, False, 3, 0.25, 1e-3, "shadow", "", "1.5", "true", "a b", "it's", "x:y", ["/a", "/b"], []]
)
def test_param_text_round_trips(value: object) -> None:
    assert parse_param(format_param(value)) == value


def test_argv_round_trips_every_param_and_remap() -> None:
    spec = NodeSpec(
        "dex_policy", "policy_node", "dex_policy.node", "pol",
        {"num_trials": 2, "slop": 0.01, "pose_source": "gt", "flag": True, "topics": ["/a", "/b c"]},
        [("/x", "/y")],
    )
    argv = spec.argv(sys.executable)
    assert argv[:3] == [sys.executable, "-m", "dex_policy.node"]
    assert argv[3] == "--ros-args"
    params, remaps = {}, []
    it = iter(argv[4:])
    for flag in it:
        value = next(it)
        if flag == "-p":
            k, v = value.split(":=", 1)
            params[k] = parse_param(v)
        else:
            assert flag == "-r"
            remaps.append(tuple(value.split(":=", 1)))
    assert params == spec.parameters
    assert remaps == [("__node", "pol"), ("/x", "/y")]


def test_cli_builds_the_same_graph() -> None:
    args = build_parser().parse_args(
        ["run", "--source", "state", "--trials", "4", "--seed", "3", "--goal-rule", "far90",
         "--param", "dex_trial.goal_timeout_s=2.5"]
    )
    nodes = graph_from_args(args, "out")
    assert nodes == sim_graph(
        pose_source="state", num_trials=4, seed=3, record_dir="out",
        extra={"dex_trial": {"goal_timeout_s": 2.5}}, goal_rule="far90",
    )
    assert {n.name: n for n in nodes}["dex_trial"].parameters["goal_rule"] == "far90"
    # consumers start before the sim
    assert [n.name for n in start_order(nodes)] == ["dex_recorder", "dex_policy", "dex_trial",
                                                    "dex_sim"]
    with pytest.raises(GraphError, match="NODE.KEY=VALUE"):
        _extra(["slop=1"])


def test_topic_types_cover_the_recorded_topics() -> None:
    types = topic_types()
    assert set(record_topics()) <= set(types)
    assert types["/cameras/cam2/image_raw"] == "sensor_msgs/msg/Image"
    assert types["/hand_position_controller/commands"] == "std_msgs/msg/Float64MultiArray"


@pytest.mark.parametrize(("name", "builder"), [("sim", "sim_graph"), ("hardware", "hardware_graph")])
def test_launch_files_parse_and_build_from_the_graph(name: str, builder: str) -> None:
    path = REPO / "launch" / f"{name}.launch.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    # launch/launch_ros are imported only inside functions (parseable/importable without them)
    top_imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(getattr(n, "module", "") == "__future__" for n in top_imports)
    imports_graph = any(
        isinstance(n, ast.ImportFrom) and n.module == "dex_bringup.graph" and builder in {a.name for a in n.names}
        for n in ast.walk(tree)
    )
    assert imports_graph, f"{path.name} must build its nodes with dex_bringup.graph.{builder}"
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == builder]
    assert calls, f"{path.name} never calls {builder}"
    # No parallel hard-coded node list: no dex package/executable literal appears in the file.
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for spec in sim_graph(record_dir="x"):
        assert spec.executable not in literals and spec.module not in literals
        assert spec.package not in literals


def test_camera_mapping_text_for_the_hardware_launch() -> None:
    from dex_bringup.graph import camera_remaps_from_text

    remaps = camera_remaps_from_text("cam0=/left/image_raw, cam2=/right/image_raw")
    assert remaps == {"/left/image_raw": "/cameras/cam0/image_raw",
                      "/right/image_raw": "/cameras/cam2/image_raw"}
    nodes = hardware_graph(camera_remaps=remaps)
    perception = next(n for n in nodes if n.name == "dex_perception")
    assert ("/cameras/cam0/image_raw", "/left/image_raw") in perception.remappings
    assert camera_remaps_from_text("") == {}
    with pytest.raises(GraphError, match="unknown camera"):
        camera_remaps_from_text("cam7=/x")
    with pytest.raises(GraphError, match="NAME=TOPIC"):
        camera_remaps_from_text("cam0")


def test_launch_argument_errors_name_the_argument() -> None:
    from dex_bringup.launch_support import LaunchArgumentError, int_arg, missing_packages, truthy

    assert int_arg(" 3 ", "trials") == 3 and truthy("On", "rviz") and not truthy("0", "rviz")
    with pytest.raises(LaunchArgumentError, match=r"trials:='abc': expected an integer >= 0"):
        int_arg("abc", "trials")
    with pytest.raises(LaunchArgumentError, match=r"seed:=-1: must be >= 0"):
        int_arg("-1", "seed")
    with pytest.raises(LaunchArgumentError, match=r"rviz:='maybe': expected true or false"):
        truthy("maybe", "rviz")
    # Optional packages are looked up before anything starts; only the missing ones are named.
    assert missing_packages(["robot_state_publisher", "rviz2"],
                            exists=lambda p: p == "rviz2") == ["robot_state_publisher"]
