"""THE one description of the dex node graph.

Both starters build their processes from here: the `dex` command (``dex_bringup.cli``, no ROS 2
distro needed) and the launch files (``launch/sim.launch.py``, ``launch/hardware.launch.py``).
Nothing else lists nodes, parameters or remappings. Pure module: no rclpy import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dex_common.trial import GOAL_RULES
from dex_description.registry import get_hand
from dex_perception.runtime import default_model_path as default_pose_model
from dex_policy import NODE_CONTROLLERS

MODES = ("lockstep", "realtime")
# What turns synced inputs into commands in the controller node (the node's own list).
CONTROLLERS = NODE_CONTROLLERS
# CLI/launch "source" names -> the controller's pose_source parameter values.
POSE_SOURCES = {"vision": "vision", "state": "gt", "gt": "gt"}

ParamValue = bool | int | float | str | list


class GraphError(ValueError):
    """A graph request that cannot be built (unknown mode/source/node, bad parameter)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node process: ``ros2 run <package> <executable>`` == ``python -m <module>``."""

    package: str
    executable: str
    module: str
    name: str
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)

    def with_parameters(self, **parameters: ParamValue) -> NodeSpec:
        """A copy with ``parameters`` added or replaced (specs are never changed in place)."""
        return replace(self, parameters={**self.parameters, **parameters})

    def ros_args(self) -> list[str]:
        """``--ros-args`` tail: node name, parameters and remappings (what launch passes too)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={format_param(value)}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args

    def argv(self, python: str) -> list[str]:
        """Command line that starts this node with ``python`` (no distro needed)."""
        return [python, "-m", self.module, *self.ros_args()]


def format_param(value: ParamValue) -> str:
    """A parameter value as ``-p key:=value`` text (YAML, as rcl parses it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Quote strings that YAML would read as another type (numbers, bools, empty).
        if value == "" or _yaml_scalar_is_not_string(value) or any(c in value for c in ":#,[]{}'\" "):
            return "'" + value.replace("'", "''") + "'"
        return value
    if isinstance(value, list):
        return "[" + ", ".join(format_param(v) for v in value) + "]"
    raise GraphError(f"unsupported parameter value {value!r} ({type(value).__name__})")


def parse_param(text: str) -> ParamValue:
    """Inverse of :func:`format_param` for the values this module writes (used by tests)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_param(p) for p in _split_list(inner)] if inner else []
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _split_list(inner: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in inner:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _yaml_scalar_is_not_string(value: str) -> bool:
    if value.lower() in ("true", "false", "yes", "no", "on", "off", "null", "~"):
        return True
    try:
        float(value)
        return True
    except ValueError:
        return False


# ---- topics ------------------------------------------------------------------------------------
def camera_topics(hand: str = "shadow") -> list[str]:
    spec = get_hand(hand)
    return [t for c in spec.camera_names for t in (f"/cameras/{c}/image_raw", f"/cameras/{c}/camera_info")]


def _camera_pairs(text: str, hand: str, what: str) -> list[tuple[str, str]]:
    """``NAME=VALUE,...`` with registry camera names → [(name, value)] (GraphError if bad)."""
    names = get_hand(hand).camera_names
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not value:
            raise GraphError(f"camera {what} {item!r} is not NAME={what.upper()}")
        if name not in names:
            raise GraphError(f"unknown camera {name!r}; {hand} has {names}")
        out.append((name, value))
    return out


def camera_remaps_from_text(text: str, hand: str = "shadow") -> dict[str, str]:
    """Parse ``NAME=TOPIC,...`` (registry camera name -> a driver's image topic) into the
    ``camera_remaps`` of :func:`hardware_graph` (driver topic -> /cameras/NAME/image_raw)."""
    return {topic: f"/cameras/{name}/image_raw"
            for name, topic in _camera_pairs(text, hand, "topic")}


def camera_sources_from_text(text: str, hand: str = "shadow") -> dict[str, str]:
    """Parse ``NAME=SOURCE,...`` (registry camera name -> an OpenCV source: device index,
    /dev/videoN, video file, URL) into the ``camera_sources`` of :func:`hardware_graph`."""
    return dict(_camera_pairs(text, hand, "source"))


def topic_types(hand: str = "shadow") -> dict[str, str]:
    """Every topic of the graph (docs/interfaces.md) -> its ROS 2 message type."""
    types = {
        "/clock": "rosgraph_msgs/msg/Clock",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/object/pose_gt": "geometry_msgs/msg/PoseStamped",
        "/object/pose": "geometry_msgs/msg/PoseStamped",
        "/object/pose_speed": "geometry_msgs/msg/TwistStamped",
        "/goal/pose": "geometry_msgs/msg/PoseStamped",
        "/policy/action": "sensor_msgs/msg/JointState",
        "/hand_position_controller/commands": "std_msgs/msg/Float64MultiArray",
        "/trial/status": "diagnostic_msgs/msg/DiagnosticArray",
        "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
        "/sim/reset": "std_msgs/msg/UInt32",
        "/policy/info": "diagnostic_msgs/msg/DiagnosticStatus",
        "/goal/marker": "visualization_msgs/msg/Marker",
    }
    for topic in camera_topics(hand):
        types[topic] = (
            "sensor_msgs/msg/Image" if topic.endswith("image_raw") else "sensor_msgs/msg/CameraInfo"
        )
    return types


def message_class(msgtype: str) -> type:
    """The Python class of ``pkg/msg/Type`` (imports the message package; needs ROS 2 msgs)."""
    import importlib

    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise GraphError(f"bad message type {msgtype!r}; expected 'pkg/msg/Type'")
    module = importlib.import_module(f"{parts[0]}.msg")
    return getattr(module, parts[2])


def sensor_topics(hand: str = "shadow") -> list[str]:
    """The streams that measure the world (each stamped in order by its one writer)."""
    return ["/joint_states", *camera_topics(hand), "/object/pose_gt", "/object/pose",
            "/object/pose_speed"]


def record_topics(hand: str = "shadow", pose_source: str = "vision") -> list[str]:
    """Default topics the recorder writes (no /sim/reset, /goal/marker: derived/requests)."""
    topics = ["/clock", "/joint_states", *camera_topics(hand), "/object/pose_gt"]
    if _pose_source(pose_source) == "vision":
        topics += ["/object/pose", "/object/pose_speed"]
    topics += [
        "/goal/pose",
        "/policy/action",
        "/hand_position_controller/commands",
        "/trial/status",
        "/diagnostics",
    ]
    return topics


# ---- graphs ------------------------------------------------------------------------------------
def _pose_source(source: str) -> str:
    try:
        return POSE_SOURCES[source]
    except KeyError:
        raise GraphError(
            f"unknown pose source {source!r}; use one of {sorted(POSE_SOURCES)} "
            "(vision: CNN on the cameras; state/gt: the sim's ground-truth cube pose)"
        ) from None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise GraphError(f"unknown mode {mode!r}; use one of {list(MODES)}")


def _check_controller(controller: str) -> None:
    if controller not in CONTROLLERS:
        raise GraphError(f"unknown controller {controller!r}; use one of {list(CONTROLLERS)} "
                         "(onnx: the LSTM policy model; mpc: the sampling-MPC planner)")


def _check_hand(hand: str) -> None:
    try:
        get_hand(hand)
    except KeyError as exc:
        raise GraphError(str(exc.args[0])) from None


def _apply_extra(nodes: list[NodeSpec], extra: Mapping[str, Mapping[str, Any]] | None) -> list[NodeSpec]:
    """Merge per-node parameter overrides ``{node name: {param: value}}``."""
    if not extra:
        return nodes
    names = {n.name for n in nodes}
    unknown = sorted(set(extra) - names)
    if unknown:
        raise GraphError(f"extra parameters for unknown node(s) {unknown}; graph has {sorted(names)}")
    out = []
    for n in nodes:
        params = dict(n.parameters)
        for key, value in extra.get(n.name, {}).items():
            format_param(value)  # validates the type early
            params[key] = value
        out.append(NodeSpec(n.package, n.executable, n.module, n.name, params, list(n.remappings)))
    return out


def _recorder(record_dir: str | None, topics: Iterable[str], use_sim_time: bool,
              hand: str) -> NodeSpec:
    return NodeSpec(
        "dex_bringup",
        "recorder_node",
        "dex_bringup.recorder",
        "dex_recorder",
        {"out_dir": str(record_dir), "topics": list(topics), "use_sim_time": use_sim_time,
         "hand": hand},
    )


def sim_graph(
    hand: str = "shadow",
    mode: str = "lockstep",
    pose_source: str = "vision",
    num_trials: int = 3,
    seed: int = 0,
    record_dir: str | None = None,
    use_sim_time: bool = True,
    policy_model: str | None = None,
    pose_model: str | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    controller: str = "onnx",
    view_port: int | None = None,
    goal_rule: str = "uniform",
) -> list[NodeSpec]:
    """The simulated graph: sim, perception (vision only), trial node, controller, recorder (if
    record_dir), the Foxglove live view (if view_port)."""
    _check_hand(hand)
    _check_mode(mode)
    _check_controller(controller)
    source = _pose_source(pose_source)
    if int(num_trials) < 1:
        raise GraphError(f"num_trials must be >= 1, got {num_trials}")
    if int(seed) < 0:
        raise GraphError(f"seed must be >= 0, got {seed}")
    vision = source == "vision"
    nodes = [
        NodeSpec(
            "dex_sim",
            "sim_node",
            "dex_sim.node",
            "dex_sim",
            {"hand": hand, "mode": mode, "seed": int(seed), "publish_images": vision},
        )
    ]
    # The trial node records the pose model's hash in every trial; both get the same path.
    pose_path = (pose_model or str(default_pose_model(hand))) if vision else ""
    if vision:
        p: dict[str, ParamValue] = {
            "hand": hand, "use_sim_time": use_sim_time, "model_path": pose_path
        }
        nodes.append(
            NodeSpec("dex_perception", "perception_node", "dex_perception.node", "dex_perception", p)
        )
    nodes.append(_trial(hand, num_trials, seed, use_sim_time, pose_path, "gt", goal_rule))
    nodes.append(_controller(hand, controller, source, use_sim_time, mode == "realtime",
                             policy_model))
    if record_dir:
        nodes.append(_recorder(record_dir, record_topics(hand, pose_source), use_sim_time, hand))
    # Lockstep's first set waits until the sim has discovered every other node of the graph
    # (not the view: a viewer never holds the hand up).
    nodes[0] = nodes[0].with_parameters(wait_nodes=",".join(n.name for n in nodes[1:]))
    if view_port is not None:
        nodes.append(_view(hand, view_port, use_sim_time))
    return _apply_extra(nodes, extra)


def _trial(hand: str, num_trials: int, seed: int, use_sim_time: bool, pose_path: str,
           judge_source: str, goal_rule: str) -> NodeSpec:
    """The trial node: goals, success/drop/timeout, resets, /trial/status. It records the pose
    model's hash (the file perception runs) in every trial."""
    if goal_rule not in GOAL_RULES:
        raise GraphError(f"unknown goal rule {goal_rule!r}; use one of {list(GOAL_RULES)} "
                         "(uniform: Dactyl's; far90: each goal >= 90 deg from the last, DROP's)")
    return NodeSpec("dex_bringup", "trial_node", "dex_bringup.trial_node", "dex_trial", {
        "hand": hand, "judge_source": judge_source, "num_trials": int(num_trials),
        "seed": int(seed), "use_sim_time": use_sim_time, "pose_model_path": pose_path,
        "goal_rule": goal_rule})


def _controller(hand: str, controller: str, pose_source: str, use_sim_time: bool,
                realtime: bool, policy_model: str | None) -> NodeSpec:
    """The controller node: synced inputs + goal → command (the LSTM policy or the MPC)."""
    params: dict[str, ParamValue] = {"hand": hand, "pose_source": pose_source,
                                     "use_sim_time": use_sim_time, "controller": controller,
                                     "realtime": realtime}
    if policy_model:
        params["model_path"] = policy_model
    return NodeSpec("dex_policy", "policy_node", "dex_policy.node", "dex_policy", params)


def _view(hand: str, port: int, use_sim_time: bool) -> NodeSpec:
    if not 0 <= int(port) <= 65535:
        raise GraphError(f"view port must be in 0..65535, got {port}")
    return NodeSpec("dex_bringup", "view_node", "dex_bringup.view_node", "dex_view",
                    {"hand": hand, "port": int(port), "use_sim_time": use_sim_time})


def hardware_graph(
    hand: str = "shadow",
    num_trials: int = 3,
    seed: int = 0,
    record_dir: str | None = None,
    camera_remaps: Mapping[str, str] | None = None,
    policy_model: str | None = None,
    pose_model: str | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    controller: str = "onnx",
    hand_port: str | None = None,
    camera_sources: Mapping[str, str] | None = None,
    calibration_dir: str | None = None,
    goal_rule: str = "uniform",
) -> list[NodeSpec]:
    """The real-hand graph: perception, trial node (judging the estimate), controller,
    recorder. Wall time.

    With ``hand_port`` (a serial device) the graph drives the hand itself: dex_hardware's
    driver node for the hand (LEAP: ``leap_node``) publishes /joint_states and consumes
    /hand_position_controller/commands. Without it, the hand's own ros2_control stack does.
    The camera drivers publish images (map their topics onto /cameras/camN/image_raw with
    ``camera_remaps``), or, with ``camera_sources`` (camera name -> OpenCV source), dex_hardware's
    camera nodes do (``calibration_dir``: their ``NAME.json`` from dex-calibrate-camera).
    No /clock, no /object/pose_gt.
    """
    _check_hand(hand)
    cameras = []
    for name, source in sorted((camera_sources or {}).items()):
        if name not in get_hand(hand).camera_names:
            raise GraphError(f"camera_sources: unknown camera {name!r}; {hand} has "
                             f"{get_hand(hand).camera_names}")
        # Dactyl's cameras run at the control rate: one image set per policy step.
        cp: dict[str, ParamValue] = {"hand": hand, "camera": name, "source": source,
                                     "rate_hz": 1.0 / get_hand(hand).control_period,
                                     "use_sim_time": False}
        if calibration_dir:
            cp["calibration"] = f"{calibration_dir.rstrip('/')}/{name}.json"
        cameras.append(NodeSpec("dex_hardware", "camera_node", "dex_hardware.camera_node",
                                f"camera_{name}", cp))
    driver = None
    if hand_port:
        from dex_description.registry import SERVO_MAPS

        if get_hand(hand).name not in SERVO_MAPS:
            raise GraphError(f"hand_port: dex_hardware has no driver for hand {hand!r} (it has "
                             f"one for {sorted(SERVO_MAPS)}); leave hand_port empty to use "
                             f"the hand's ros2_control stack")
        driver = NodeSpec("dex_hardware", "leap_node", "dex_hardware.leap_node", "leap_hand",
                          {"hand": hand, "port": hand_port, "use_sim_time": False})
    _check_controller(controller)
    if int(num_trials) < 1:
        raise GraphError(f"num_trials must be >= 1, got {num_trials}")
    remaps = sorted((camera_remaps or {}).items())
    known = set(camera_topics(hand))
    bad = [dst for _, dst in remaps if dst not in known]
    if bad:
        raise GraphError(f"camera remaps must target {sorted(known)}; got {bad}")
    # A remap on the perception node: its topic name (dst) -> the driver's topic (src).
    perception_remaps = [(dst, src) for src, dst in remaps]
    pose_path = pose_model or str(default_pose_model(hand))
    pp: dict[str, ParamValue] = {"hand": hand, "use_sim_time": False, "model_path": pose_path}
    nodes = [
        NodeSpec(
            "dex_perception",
            "perception_node",
            "dex_perception.node",
            "dex_perception",
            pp,
            perception_remaps,
        ),
        _trial(hand, num_trials, seed, False, pose_path, "vision", goal_rule),
        _controller(hand, controller, "vision", False, True, policy_model),
    ]
    nodes[:0] = ([driver] if driver is not None else []) + cameras
    if record_dir:
        topics = [t for t in record_topics(hand, "vision") if t not in ("/clock", "/object/pose_gt")]
        nodes.append(_recorder(record_dir, topics, False, hand))
    return _free_running_slops(_apply_extra(nodes, extra), extra or {})


# A free-running source is stamped on its own timer: the nearest message of a stream at rate r
# may be up to 1/r away, plus timer jitter. Sim stamps coincide (lockstep), so slop 5 ms is
# plenty there; on a robot the synchronizers' slop must cover a period or sets never form.
SLOP_PERIODS = 1.5
# The nodes that join /joint_states with the cube pose (their slop follows the joint rate).
SYNCS_JOINT_STATES = ("dex_trial", "dex_policy")


def _free_running_slops(nodes: list[NodeSpec], extra: Mapping[str, Mapping[str, Any]]) -> list[NodeSpec]:
    """Set perception's slop from the camera nodes' rate and the trial node's and the
    controller's from the
    /joint_states rate (LEAP driver or ros2_control, both LeapConfig.rate_hz), unless ``extra``
    sets them. External camera drivers (no camera nodes): perception's slop stays as given."""
    from dex_hardware.leap import LeapConfig

    camera_rates = [float(n.parameters["rate_hz"]) for n in nodes if n.executable == "camera_node"]
    driver = next((n for n in nodes if n.executable == "leap_node"), None)
    joint_rate = float(driver.parameters.get("rate_hz", LeapConfig.rate_hz) if driver
                       else LeapConfig.rate_hz)
    out = []
    for n in nodes:
        if n.name == "dex_perception" and camera_rates and "slop" not in extra.get(n.name, {}):
            n = n.with_parameters(slop=SLOP_PERIODS / min(camera_rates))
        elif n.name in SYNCS_JOINT_STATES and "slop" not in extra.get(n.name, {}):
            n = n.with_parameters(slop=SLOP_PERIODS / joint_rate)
        out.append(n)
    return out


def describe(nodes: list[NodeSpec]) -> str:
    """Human-readable graph (``dex graph``)."""
    lines = []
    for n in nodes:
        lines.append(f"{n.name}  ({n.package}/{n.executable}, python -m {n.module})")
        for k, v in n.parameters.items():
            lines.append(f"    {k} := {format_param(v)}")
        for a, b in n.remappings:
            lines.append(f"    remap {a} -> {b}")
    return "\n".join(lines)
