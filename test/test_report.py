"""Seeing what the hand did: link frames from the URDF + MuJoCo, /tf in bags (read back with the
independent ``mcap`` reader), the trial record, the trial video and ``dex report``."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import cv2
import mujoco
import numpy as np
import pytest

from dex_bringup.bag_frames import FrameSink
from dex_bringup.bagging import RosbagsSink, TrialRouter
from dex_bringup.graph import topic_types
from dex_description.frames import LinkFrames, compose, rpy_to_quat
from dex_description.kinematics import HandKinematics
from dex_description.registry import get_hand


def _random_q(hand: str, seed: int) -> np.ndarray:
    spec = get_hand(hand)
    lo = np.array([j.lower for j in spec.joints])
    hi = np.array([j.upper for j in spec.joints])
    return lo + np.random.default_rng(seed).random(spec.n_joints) * (hi - lo)


def test_rpy_is_urdf_fixed_axis_xyz() -> None:
    r, p, y = 0.3, -0.7, 1.9
    q = np.zeros(4)
    mujoco.mju_euler2Quat(q, np.array([r, p, y]), "XYZ")  # upper case: fixed axes
    assert np.allclose(rpy_to_quat(r, p, y), q)


@pytest.mark.parametrize("hand", ["shadow", "leap"])
def test_link_frames_reach_the_fingertips_the_policy_sees(hand: str) -> None:
    """URDF fixed joints + per-state moving joints, chained as a TF listener would, put each
    fingertip link where the policy node's forward kinematics puts the fingertip."""
    frames, fk = LinkFrames(hand), HandKinematics(hand)
    tips = [child for parent, child, _, _ in frames.static() if parent != "world"]
    assert len(tips) == len(get_hand(hand).fingertip_sites)
    for seed in range(3):
        q = _random_q(hand, seed)
        tf = frames.static() + frames.moving(q)
        got = np.array([compose(tf, t)[0] for t in tips])
        assert np.abs(got - fk.fingertips(q)).max() < 1e-9
    with pytest.raises(ValueError, match="joint positions"):
        frames.moving(np.zeros(3))


def _cdr(store, msgtype: str, **fields) -> bytes:
    return bytes(store.serialize_cdr(store.types[msgtype](**fields), msgtype))


def write_trial_bag(out: Path, hand: str = "leap", steps: int = 12, trial: int = 0) -> dict:
    """A trial bag as the recorder writes it (TrialRouter → FrameSink → RosbagsSink), from
    messages serialized with rosbags: the hand moves, the cube turns, one success."""
    from rosbags.typesys import Stores, get_typestore

    st = get_typestore(Stores.ROS2_KILTED)
    T = st.types
    spec = get_hand(hand)

    def header(t: float):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=int(t), nanosec=round((t - int(t)) * 1e9)), frame_id="world")

    def pose(t: float, p, q):
        return _cdr(st, "geometry_msgs/msg/PoseStamped", header=header(t), pose=T[
            "geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                                      orientation=T["geometry_msgs/msg/Quaternion"](
                                          w=q[0], x=q[1], y=q[2], z=q[3])))

    router = TrialRouter(FrameSink(RosbagsSink(out), hand), topic_types(hand), grace_s=0.0)
    qs, cube_q = [], []
    goal = (math.cos(0.5), 0.0, 0.0, math.sin(0.5))  # 1 rad about z
    for i in range(steps):
        t = 1.0 + 20.0 * trial + 0.08 * i
        q = _random_q(hand, i)
        ang = 1.0 * i / (steps - 1)  # the cube turns towards the goal
        cq = (math.cos(ang / 2), 0.0, 0.0, math.sin(ang / 2))
        err = abs(1.0 - ang)
        succ = int(err < 0.4)
        values = {"trial": str(trial), "seed": str(5 + trial),
                  "start_stamp": f"{1.0 + 20.0 * trial}", "successes": str(succ),
                  "rotation_error": f"{err:.6f}", "goal_index": str(succ), "steps": str(i + 1),
                  "ended": "false", "end_reason": "", "mode": "vision"}
        router.on_status(t, "running", values, 0.0)
        router.on_message("/trial/status", _cdr(
            st, "diagnostic_msgs/msg/DiagnosticArray", header=header(t), status=[
                T["diagnostic_msgs/msg/DiagnosticStatus"](
                    level=0, name="trial", message="running", hardware_id=spec.name,
                    values=[T["diagnostic_msgs/msg/KeyValue"](key=k, value=v)
                            for k, v in values.items()])]), 0.0)
        router.on_message("/clock", _cdr(st, "rosgraph_msgs/msg/Clock", clock=header(t).stamp), 0.0)
        router.on_message("/joint_states", _cdr(
            st, "sensor_msgs/msg/JointState", header=header(t), name=list(spec.joint_names),
            position=q, velocity=np.zeros(0), effort=np.zeros(0)), 0.0)
        router.on_message("/object/pose_gt", pose(t, spec.cube.rest_pos, cq), 0.0)
        est = (math.cos(ang / 2 + 0.05), 0.0, 0.0, math.sin(ang / 2 + 0.05))  # 0.1 rad off
        router.on_message("/object/pose", pose(t, spec.cube.rest_pos, est), 0.0)
        router.on_message("/goal/pose", pose(t, spec.cube.rest_pos, goal), 0.0)
        router.on_message("/hand_position_controller/commands", _cdr(
            st, "std_msgs/msg/Float64MultiArray", layout=T["std_msgs/msg/MultiArrayLayout"](
                dim=[], data_offset=0), data=spec.actuation_matrix() @ q), 0.0)
        qs.append(q)
        cube_q.append(cq)
    end = 1.0 + 20.0 * trial + 0.08 * steps
    router.on_status(end, "timeout", {**values, "ended": "true", "end_reason": "timeout",
                                      "successes": "1"}, 0.0)
    router.on_status(end + 0.1, "finished", {}, 0.0)
    router.close_all(10.0)
    return {"q": qs, "cube_q": cube_q, "bag": out / f"trial_{trial:03d}"}


def test_bags_carry_tf_and_read_back_with_the_mcap_library(tmp_path: Path) -> None:
    """Every message of the bag, read with the ``mcap`` library (not rosbags), decodes; /tf
    puts the fingertips where forward kinematics does; /tf_static and /robot_description are
    recorded latched."""
    from mcap.reader import make_reader
    from rosbags.typesys import Stores, get_typestore

    made = write_trial_bag(tmp_path)
    store = get_typestore(Stores.ROS2_KILTED)
    (mcap_file,) = made["bag"].glob("*.mcap")
    by_topic: dict[str, list] = {}
    schemas = {}
    with open(mcap_file, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            msg = store.deserialize_cdr(message.data, schema.name)
            by_topic.setdefault(channel.topic, []).append((message.log_time, msg))
            schemas[channel.topic] = schema.name
    assert schemas["/tf"] == schemas["/tf_static"] == "tf2_msgs/msg/TFMessage"
    assert len(by_topic["/robot_description"]) == len(by_topic["/tf_static"]) == 1
    assert "<robot" in by_topic["/robot_description"][0][1].data
    n = len(made["q"])
    assert len(by_topic["/joint_states"]) == n
    assert len(by_topic["/tf"]) == 4 * n  # joints, cube, estimate, goal: one each per step

    def edges(msg) -> list:
        return [(t.header.frame_id, t.child_frame_id,
                 (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z),
                 (t.transform.rotation.w, t.transform.rotation.x, t.transform.rotation.y,
                  t.transform.rotation.z)) for t in msg.transforms]

    static = edges(by_topic["/tf_static"][0][1])
    fk = HandKinematics("leap")
    tips = [c for p, c, _, _ in static if p != "world"]
    js_stamps = [s for s, _ in by_topic["/joint_states"]]
    for i, q in enumerate(made["q"]):
        at = [m for s, m in by_topic["/tf"] if s == js_stamps[i]]
        tree = static + [e for m in at for e in edges(m)]
        got = np.array([compose(tree, tip)[0] for tip in tips])
        assert np.abs(got - fk.fingertips(q)).max() < 1e-9
        _, cube_quat = compose(tree, "cube")
        assert abs(abs(np.dot(cube_quat, made["cube_q"][i])) - 1) < 1e-12
    import yaml

    meta = yaml.safe_load((made["bag"] / "metadata.yaml").read_text())
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"]
              for t in meta["rosbag2_bagfile_information"]["topics_with_message_count"]}
    for latched in ("/tf_static", "/robot_description"):  # rosbag2 stores the profiles as YAML
        (qos,) = yaml.safe_load(topics[latched]["offered_qos_profiles"])
        assert qos["durability"] == 1 and qos["reliability"] == 1  # transient local, reliable
    assert topics["/tf"]["offered_qos_profiles"] == ""


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href")]


def test_report_of_a_trial_bag(tmp_path: Path) -> None:
    from dex_bringup.report import build_report
    from dex_bringup.trial_record import find_trials, load_trial

    made = write_trial_bag(tmp_path / "run")
    (bag,) = find_trials(tmp_path / "run")
    assert find_trials(tmp_path) == [bag]  # a parent of runs: its newest run
    rec = load_trial(bag)
    assert rec.hand is not None and rec.hand.name == "dex_leap"
    assert rec.final_successes == 1 and rec.end_reason == "timeout"
    assert len(rec.success_times()) == 1
    _, rot, _ = rec.vision_errors
    assert np.allclose(rot, 0.1, atol=1e-6)  # the estimate was 0.1 rad off throughout

    index = build_report(tmp_path / "run", actuator="if_mcp")
    out = index.parent
    page = index.read_text()
    parser = _Refs()
    parser.feed(page)
    missing = [r for r in parser.refs if not (out / r).is_file()]
    assert parser.refs and not missing, missing
    assert "mean 1.00 ± 0.00" in page and "median 1.0" in page
    for name in ("outcomes.png", "trial_000_rotation.png", "trial_000_joint.png",
                 "trial_000_vision.png", "contact_sheet.png", "trial_000.mp4", "trial_000.webm"):
        assert (out / name).stat().st_size > 1000, name
    # the videos hold one frame per recorded joint state, at the recorded rate
    for ext in (".mp4", ".webm"):
        cap = cv2.VideoCapture(str(out / f"trial_000{ext}"))
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == len(made["q"]), ext
    cap = cv2.VideoCapture(str(out / "trial_000.mp4"))
    assert abs(cap.get(cv2.CAP_PROP_FPS) - 12.5) < 0.1


@pytest.mark.parametrize("hand", ["shadow", "leap"])
def test_rviz_config_names_only_served_topics_and_known_frames(hand: str) -> None:
    """The shipped RViz config (used with a distro) subscribes only to topics the graph
    publishes (+ robot_state_publisher's /robot_description) and names only frames the URDF or
    the stack's /tf provide."""
    import yaml

    from dex_bringup.bag_frames import POSE_FRAMES
    from dex_description.frames import urdf_joints
    from dex_description.paths import rviz_config, urdf_path

    text = rviz_config(hand).read_text()
    topics: set[str] = set()
    frames: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("Topic", "Description Topic") and isinstance(v, dict):
                    topics.add(v["Value"])
                elif k in ("Fixed Frame", "Reference Frame", "Target Frame") and \
                        isinstance(v, str) and v != "<Fixed Frame>":
                    frames.add(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(text))
    assert topics and topics <= set(topic_types(hand)) | {"/robot_description"}, topics
    links = {j[k] for j in urdf_joints(urdf_path(hand).read_text()) for k in ("parent", "child")}
    assert frames and frames <= links | set(POSE_FRAMES.values()), frames


def test_report_page_loads_in_headless_chromium(tmp_path: Path) -> None:
    """The page as a user opens it (file://, no server) in a real browser: no errors, every
    trial shown, every image decoded, every video playable to its recorded length."""
    from browser import Browser

    from dex_bringup.report import build_report

    steps = (12, 9)
    for trial, n in enumerate(steps):
        write_trial_bag(tmp_path / "run", steps=n, trial=trial)
    index = build_report(tmp_path / "run", actuator="if_mcp")
    with Browser() as b:
        b.open(index.as_uri())
        shown = b.evaluate("""(async () => {
            const videos = [...document.querySelectorAll('video')];
            const durations = await Promise.all(videos.map(v => v.readyState >= 1
                ? v.duration : new Promise(res => {
                    v.addEventListener('loadedmetadata', () => res(v.duration));
                    v.addEventListener('error', () => res(-1)); })));
            const imgs = [...document.images];
            await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(
                res => { i.onload = i.onerror = res; })));
            return {sections: document.querySelectorAll('section.trial').length,
                    durations,
                    broken: imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.src),
                    images: imgs.length, text: document.body.innerText};
        })()""")
        assert not b.errors, b.errors
    assert shown["sections"] == len(steps), shown["sections"]
    assert shown["images"] >= 4 * len(steps) and not shown["broken"], shown["broken"]
    # one frame per control step at real-time rate (12.5 fps): the recorded trial length
    assert shown["durations"] == pytest.approx([n / 12.5 for n in steps], abs=0.1)
    assert "mean 1.00 ± 0.00" in shown["text"]
