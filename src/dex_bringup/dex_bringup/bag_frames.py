"""Bags that show the hand: /tf, /tf_static and /robot_description written next to the
recorded topics (no rclpy, no tf2: tf2_msgs has no PyPI wheel, so nothing in the graph can
publish /tf; the recorder derives it).

:class:`FrameSink` wraps a :class:`~dex_bringup.bagging.BagSink`. Into each bag it writes, before
the bag's first message, /robot_description (the URDF, std_msgs/String) and /tf_static (the
URDF's fixed joints), both latched; with every /joint_states message, /tf of the hand's moving
links (``dex_description.frames.LinkFrames``: what robot_state_publisher would send); with every
cube pose, goal pose and pose estimate, /tf world → ``cube``, ``goal``, ``cube_estimate``. Same
stamp as the message it comes from, same serializer (rosbags, CDR) as the rest. So a trial bag
opened in Foxglove, or played into RViz, shows the hand moving, the cube and the goal.
"""

from __future__ import annotations

from dex_bringup.bagging import BagSink

TF_TYPE = "tf2_msgs/msg/TFMessage"
STRING_TYPE = "std_msgs/msg/String"
POSE_FRAMES = {"/object/pose_gt": "cube", "/object/pose": "cube_estimate", "/goal/pose": "goal"}


class FrameSink:
    """A BagSink that adds the hand's frames to every bag (see module docstring)."""

    def __init__(self, inner: BagSink, hand: str) -> None:
        from rosbags.typesys import Stores, get_typestore

        from dex_description.frames import LinkFrames

        self.inner = inner
        self.frames = LinkFrames(hand)
        self.joint_names = list(self.frames.spec.joint_names)
        self.store = get_typestore(Stores.ROS2_KILTED)
        self._started: set[str] = set()
        self.errors = 0  # messages whose frames could not be derived (the message is kept)

    def write(self, bag: str, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        if bag not in self._started:
            self._started.add(bag)
            self.inner.write(bag, "/robot_description", STRING_TYPE, stamp_ns,
                             self._serialize(STRING_TYPE, self._string(self.frames.urdf)))
            self.inner.write(bag, "/tf_static", TF_TYPE, stamp_ns,
                             self._tf(self.frames.static(), stamp_ns))
        self.inner.write(bag, topic, msgtype, stamp_ns, data)
        if topic == "/joint_states" or topic in POSE_FRAMES:
            try:
                tf = self._derive(topic, msgtype, stamp_ns, data)
            except (ValueError, KeyError, AttributeError):
                self.errors += 1
                return
            if tf is not None:
                self.inner.write(bag, "/tf", TF_TYPE, stamp_ns, tf)

    def close(self, bag: str, custom_data: dict[str, str]) -> None:
        self._started.discard(bag)
        self.inner.close(bag, custom_data)

    def _derive(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> bytes | None:
        msg = self.store.deserialize_cdr(data, msgtype)
        if topic == "/joint_states":
            if list(msg.name) != self.joint_names:
                return None  # another hand's (or a partial) joint state: no frames to give
            return self._tf(self.frames.moving(msg.position), stamp_ns)
        p, q = msg.pose.position, msg.pose.orientation
        frame = msg.header.frame_id or self.frames.root
        return self._tf([(frame, POSE_FRAMES[topic], (p.x, p.y, p.z), (q.w, q.x, q.y, q.z))],
                        stamp_ns)

    def _serialize(self, msgtype: str, msg) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def _string(self, text: str):
        return self.store.types[STRING_TYPE](data=text)

    def _tf(self, transforms, stamp_ns: int) -> bytes:
        t = self.store.types
        Time, Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        Vec, Quat = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Quaternion"]
        TS, Tr = t["geometry_msgs/msg/TransformStamped"], t["geometry_msgs/msg/Transform"]
        stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        out = [TS(header=Header(stamp=stamp, frame_id=parent), child_frame_id=child,
                  transform=Tr(translation=Vec(x=p[0], y=p[1], z=p[2]),
                               rotation=Quat(x=q[1], y=q[2], z=q[3], w=q[0])))
               for parent, child, p, q in transforms]
        return self._serialize(TF_TYPE, t[TF_TYPE](transforms=out))
