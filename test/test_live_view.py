"""The live view: a real WebSocket client (``websockets``) speaks the Foxglove protocol to the
server, subscribes and decodes the frames with the schemas the server advertises."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import sys
import time

import numpy as np
import websockets  # requirements-test.txt


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _decoder(channel: dict):
    """payload bytes -> message, from the channel's advertisement (protobuf or JSON)."""
    if channel["encoding"] == "json":
        return lambda b: json.loads(b)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fds = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"]))
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"]))
    return cls.FromString


class Client:
    """A minimal Foxglove WebSocket client: advertisements in, subscriptions out, messages
    decoded by topic."""

    def __init__(self, url: str, topics: list[str], feed=None, want: int = 1,
                 timeout: float = 20.0) -> None:
        self.url, self.topics, self.feed, self.want, self.timeout = url, topics, feed, want, timeout
        self.messages: dict[str, list] = {t: [] for t in topics}
        self.channels: dict[str, dict] = {}

    def run(self) -> Client:
        asyncio.run(self._run())
        return self

    async def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        async with websockets.connect(self.url, subprotocols=["foxglove.sdk.v1"]) as ws:
            while set(self.channels) < set(self.topics):
                assert time.monotonic() < deadline, f"advertised only {sorted(self.channels)}"
                msg = json.loads(await asyncio.wait_for(ws.recv(), self.timeout))
                for c in msg.get("channels", []) if msg.get("op") == "advertise" else []:
                    if c["topic"] in self.topics:
                        self.channels[c["topic"]] = c
            subs = {i + 1: self.channels[t] for i, t in enumerate(self.topics)}
            decode = {k: _decoder(c) for k, c in subs.items()}
            await ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": k, "channelId": c["id"]} for k, c in subs.items()]}))
            await asyncio.sleep(0.3)
            while any(len(v) < self.want for v in self.messages.values()):
                assert time.monotonic() < deadline, {t: len(v) for t, v in self.messages.items()}
                if self.feed is not None:
                    self.feed()
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if isinstance(raw, str):
                    continue
                op, sub, stamp = struct.unpack_from("<BIQ", raw)
                if op == 1:  # message data
                    self.messages[subs[sub]["topic"]].append((stamp, decode[sub](raw[13:])))


def test_live_view_streams_the_scene_frames_images_and_trial(monkeypatch) -> None:
    from dex_bringup.live_view import LiveView
    from dex_description.frames import compose
    from dex_description.kinematics import HandKinematics
    from dex_sim.physics import HandCubeSim

    sim = HandCubeSim("leap")
    sim.reset(4)
    for _ in range(3):
        sim.step_control()
    q = sim.joint_positions()
    cube_pos, cube_quat = sim.cube_pose()
    goal = np.array([0.0, 1.0, 0.0, 0.0])
    image = sim.render("cam0")
    view = LiveView("leap", port=0)
    est_pos = cube_pos + np.array([0.004, 0.0, 0.0])
    stamp = 2_000_000_000

    def feed() -> None:
        view.on_cube(cube_pos, cube_quat)
        view.on_estimate(est_pos, cube_quat)
        view.on_goal(goal)
        assert view.on_joints(stamp, list(view.geoms.spec.joint_names), q)
        view.on_trial(stamp, {"trial": "1", "successes": "3", "goal_index": "3",
                              "rotation_error": "0.25"})
        h, w, _ = image.shape
        view.on_image("cam0", stamp, w, h, "rgb8", 3 * w, image.tobytes())

    try:
        assert not view.on_joints(stamp, ["a"], [0.0])  # not this hand's: nothing sent
        c = Client(view.url(), ["/scene", "/tf", "/trial", "/cameras/cam0"], feed).run()
    finally:
        view.close()
    assert c.channels["/scene"]["schemaName"] == "foxglove.SceneUpdate"
    assert c.channels["/tf"]["schemaName"] == "foxglove.FrameTransforms"

    ts, scene = c.messages["/scene"][0]
    assert ts == stamp
    ents = {e.id: e for e in scene.entities}
    assert set(ents) == {"hand", "cube", "goal", "cube_estimate"}
    m = view.geoms.model
    caps = sum(int(m.geom_type[g]) == 3 for g in view.geoms.groups["hand"])
    assert caps > 0 and len(ents["hand"].cylinders) == caps and len(ents["hand"].spheres) == 2 * caps

    def centre(e) -> np.ndarray:
        return np.mean([[p.pose.position.x, p.pose.position.y, p.pose.position.z]
                        for p in e.cubes], axis=0)

    assert np.abs(centre(ents["cube"]) - cube_pos).max() < 1e-9  # the faces surround the cube
    assert np.abs(centre(ents["cube_estimate"]) - est_pos).max() < 1e-9
    assert all(p.color.a < 0.5 for p in ents["cube_estimate"].cubes)

    _, tf = c.messages["/tf"][0]
    edges = [(t.parent_frame_id, t.child_frame_id,
              (t.translation.x, t.translation.y, t.translation.z),
              (t.rotation.w, t.rotation.x, t.rotation.y, t.rotation.z)) for t in tf.transforms]
    tips = ["if_tip", "mf_tip", "rf_tip", "th_tip"]
    got = np.array([compose(edges, t)[0] for t in tips])
    assert np.abs(got - HandKinematics("leap").fingertips(q)).max() < 1e-9
    assert np.abs(compose(edges, "cube")[0] - cube_pos).max() < 1e-12

    _, trial = c.messages["/trial"][0]
    assert trial["successes"] == 3 and abs(trial["rotation_error_deg"] - np.degrees(0.25)) < 1e-9
    assert abs(trial["vision_position_error_mm"] - 4.0) < 1e-6
    _, img = c.messages["/cameras/cam0"][0]
    assert (img.width, img.height, img.encoding) == (image.shape[1], image.shape[0], "rgb8")
    assert img.data == image.tobytes()


def test_view_node_serves_what_the_graph_publishes(node_procs) -> None:
    """The node process: /joint_states over DDS in, the hand's scene out on the WebSocket."""
    import rclpy
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import JointState

    from dex_description.registry import get_hand

    port = _free_port()
    proc = node_procs.start("view", [sys.executable, "-m", "dex_bringup.view_node", "--ros-args",
                                     "-p", "hand:=leap", "-p", f"port:={port}"])
    spec = get_hand("leap")
    rclpy.init()
    try:
        node = rclpy.create_node("test_view_pub")
        pub = node.create_publisher(JointState, "/joint_states", QoSProfile(depth=10))
        deadline = time.monotonic() + 20
        while pub.get_subscription_count() < 1:
            assert time.monotonic() < deadline, "view never subscribed:\n" + node_procs.log("view")
            assert proc.poll() is None, node_procs.log("view")
            rclpy.spin_once(node, timeout_sec=0.1)

        def feed() -> None:
            m = JointState(name=list(spec.joint_names), position=[0.1] * spec.n_joints)
            m.header.stamp.sec = 5
            pub.publish(m)

        c = Client(f"ws://127.0.0.1:{port}", ["/scene"], feed).run()
        node.destroy_node()
    finally:
        rclpy.shutdown()
    node_procs.stop_all()
    assert proc.returncode == 0, node_procs.log("view")
    stamp, scene = c.messages["/scene"][0]
    assert stamp == 5_000_000_000
    assert {e.id for e in scene.entities} == {"hand", "goal"}  # no cube pose was published


def test_view_node_reports_a_port_in_use(node_procs) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = node_procs.start("view", [sys.executable, "-m", "dex_bringup.view_node",
                                         "--ros-args", "-p", f"port:={port}"])
        assert proc.wait(timeout=30) == 2
    assert f"cannot serve Foxglove on 127.0.0.1:{port}" in node_procs.log("view")


def test_shipped_layout_is_current_and_names_only_served_topics() -> None:
    import re

    from dex_bringup.live_view import LAYOUT_PATH, layout
    from dex_description.registry import HANDS

    cams = sorted({c for spec in HANDS.values() for c in spec.camera_names})
    assert LAYOUT_PATH.read_text().strip() == layout(cams), \
        "stale layout: python -m dex_bringup.live_view --layout"
    topics = set(re.findall(r'"(?:imageTopic|value)":"(/[^".]+)', LAYOUT_PATH.read_text()))
    topics |= set(json.loads(LAYOUT_PATH.read_text())["content"]["items"][0]["content"]
                  ["config"]["topics"])
    assert topics == {"/scene", "/trial", *(f"/cameras/{c}" for c in cams)}, topics
