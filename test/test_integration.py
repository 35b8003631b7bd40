"""THE integration test: the real nodes as separate processes over DDS, lockstep, vision, 1 trial.

Started with the same machinery as ``dex run`` (dex_bringup.graph + dex_bringup.procs). Checks
that messages flow on every topic, that every output carries the stamp of its inputs, that the
trial status is coherent, that the recorder wrote the trial's bag with its outcome, and that
``dex replay`` of that bag gives the recorded policy and perception outputs back.
"""

from __future__ import annotations

import os
from pathlib import Path

from graph_run import run_graph_until

from dex_bringup.bagging import STAMPED_TYPES, cdr_stamp_ns, read_bag
from dex_bringup.graph import camera_topics, message_class, record_topics, sim_graph, topic_types

TIMEOUT_S = 150.0


class Tap:
    """In-test subscriber on every topic: raw stamps per topic, parsed /trial/status."""

    def __init__(self, node, types: dict[str, str]) -> None:  # noqa: ANN001
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.stamps: dict[str, list[int]] = {t: [] for t in types}
        self.statuses: list[tuple[int, str, dict[str, str]]] = []
        self.diag_names: set[str] = set()
        from dex_common.ros_util import LATCHED_QOS, POLICY_INFO_TOPIC

        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, msgtype in types.items():
            node.create_subscription(
                message_class(msgtype), topic,
                lambda d, t=topic, s=msgtype in STAMPED_TYPES: self.stamps[t].append(cdr_stamp_ns(d) if s else 0),
                LATCHED_QOS if topic == POLICY_INFO_TOPIC else qos, raw=True,  # said once, latched
            )
        node.create_subscription(DiagnosticArray, "/trial/status", self._on_status, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)

    def _on_status(self, msg) -> None:  # noqa: ANN001
        ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for st in msg.status:
            if st.name == "trial":
                self.statuses.append((ns, st.message, {kv.key: kv.value for kv in st.values}))

    def _on_diag(self, msg) -> None:  # noqa: ANN001
        self.diag_names.update(st.name for st in msg.status)

    @property
    def finished(self) -> bool:
        return any(m == "finished" for _, m, _ in self.statuses)


def test_lockstep_vision_graph_end_to_end(dds_env: dict[str, str], tmp_path: Path) -> None:
    import rclpy

    bags = tmp_path / "bags"
    # DEX_POLICY_MODEL / DEX_POSE_MODEL: try other models (default: the packaged ones)
    nodes = sim_graph(
        mode="lockstep", pose_source="vision", num_trials=1, seed=3, record_dir=str(bags),
        policy_model=os.environ.get("DEX_POLICY_MODEL"), pose_model=os.environ.get("DEX_POSE_MODEL"),
    )
    assert {n.name for n in nodes} == {"dex_sim", "dex_perception", "dex_trial", "dex_policy", "dex_recorder"}
    types = topic_types()
    rclpy.init()
    node = rclpy.create_node("integration_tap")
    tap = Tap(node, types)
    try:
        group, codes, _ = run_graph_until(
            nodes, dds_env, node, lambda: tap.finished, TIMEOUT_S,
            on_timeout=lambda: f"; received { {t: len(s) for t, s in tap.stamps.items()} }")
    finally:
        node.destroy_node()
        rclpy.shutdown()
    rec = next(c for c in group.children if c.name == "dex_recorder")
    assert codes["dex_recorder"] == 0, group.describe_exit(rec)

    # ---- messages flow on every topic ---------------------------------------------------------
    silent = [t for t, s in tap.stamps.items() if not s]
    assert not silent, f"no messages on {silent}"
    assert {"dex_sim", "dex_perception", "dex_trial", "dex_policy", "dex_recorder"} <= tap.diag_names, tap.diag_names

    # ---- every output carries the stamp of its inputs -----------------------------------------
    # The tap is a late-joining observer: DDS delivers nothing published before its readers
    # matched. Compare from the first stamp it saw on every sim topic on (it must have joined
    # early, so this is still nearly the whole trial).
    sim_topics = ["/joint_states", "/clock", "/object/pose_gt",
                  *(t for t in camera_topics() if t.endswith("image_raw"))]
    joined = max(min(tap.stamps[t]) for t in sim_topics)
    assert joined <= 2_000_000_000, f"the tap missed the first {joined / 1e9:.2f} s of sim time"
    st = {t: {x for x in s if x >= joined} for t, s in tap.stamps.items()}
    images = set.intersection(*(st[t] for t in camera_topics() if t.endswith("image_raw")))
    assert st["/object/pose"] <= images, sorted(st["/object/pose"] - images)[:5]
    assert st["/object/pose"], "perception published nothing"
    for topic in ("/policy/action", "/trial/status", "/goal/pose"):
        assert st[topic] <= st["/joint_states"], (topic, sorted(st[topic] - st["/joint_states"])[:5])
    assert st["/joint_states"] == st["/clock"] == st["/object/pose_gt"]
    # lockstep: one command per policy step, each for a distinct set
    actions = [x for x in tap.stamps["/policy/action"] if x >= joined]
    assert len(actions) == len(st["/policy/action"])
    assert len(tap.stamps["/hand_position_controller/commands"]) == len(tap.stamps["/policy/action"])

    # ---- trial status is coherent --------------------------------------------------------------
    statuses = [s for s in tap.statuses if s[1] != "finished"]
    assert statuses and all(v["trial"] == "0" for _, _, v in statuses)
    assert statuses[0][2]["ended"] == "false" and statuses[0][2]["seed"] == "3"
    assert statuses[0][2]["mode"] == "vision"
    assert statuses[0][2]["pose_model_sha256"], "contract: /trial/status pose_model_sha256 is set in vision mode"
    ended = [s for s in statuses if s[2]["ended"] == "true"]
    assert len(ended) == 1 and ended[0] is statuses[-1], "exactly one ended status, the last one"
    end_ns, end_state, end_values = ended[0]
    assert end_values["end_reason"] in ("dropped", "timeout", "completed")
    assert end_state == end_values["end_reason"]
    assert tap.statuses[-1][1] == "finished"
    stamps = [s[0] for s in statuses]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    steps = int(end_values["steps"])
    assert abs(steps - len(statuses)) <= 1, (steps, len(statuses))
    assert all(a <= end_ns for a in st["/policy/action"])

    # ---- the trial's bag ------------------------------------------------------------------------
    bag = bags / "trial_000"
    assert (bag / "metadata.yaml").is_file(), list(bags.iterdir()) if bags.exists() else "no bag dir"
    counts, custom = read_bag(bag)
    # the recorded topics, and the frames the recorder derives (dex_bringup.bag_frames)
    assert set(counts) == set(record_topics(pose_source="vision")) | {
        "/tf", "/tf_static", "/robot_description"}, counts
    assert counts["/tf"] == sum(counts[t] for t in ("/joint_states", "/object/pose_gt",
                                                    "/object/pose", "/goal/pose"))
    assert abs(counts["/joint_states"] - steps) <= 1, (counts["/joint_states"], steps)
    assert counts["/trial/status"] >= steps
    for t in camera_topics():
        assert abs(counts[t] - counts["/joint_states"]) <= 1, (t, counts)
    # DDS orders messages per writer only: the trial's last command may reach the recorder after
    # the status that closes the bag (it then lands in the next bag), so allow one.
    assert abs(counts["/policy/action"] - counts["/hand_position_controller/commands"]) <= 1
    assert abs(counts["/policy/action"] - (steps - 1)) <= 1
    assert custom["end_reason"] == end_values["end_reason"]
    assert custom["successes"] == end_values["successes"] and custom["seed"] == "3"
    assert custom["trial"] == "0" and custom["mode"] == "vision"
    assert custom["policy_model_sha256"] == end_values["policy_model_sha256"] != ""

    # ---- the bag read by an independent reader, and the report of the run ----------------------
    from mcap.reader import make_reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    seen: dict[str, int] = {}
    with open(next(bag.glob("*.mcap")), "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            store.deserialize_cdr(message.data, schema.name)  # every message decodes
            seen[channel.topic] = seen.get(channel.topic, 0) + 1
    assert seen == counts

    from dex_bringup.report import build_report

    index = build_report(bags)
    summary = __import__("json").loads((index.parent / "summary.json").read_text())
    assert summary["rows"][0]["successes"] == int(custom["successes"])
    assert summary["rows"][0]["end_reason"] == custom["end_reason"]
    assert summary["vision"]["estimates"] == counts["/object/pose"]
    assert (index.parent / "trial_000.mp4").stat().st_size > 10_000

    # ---- replayed open-loop: the same models give back the recorded outputs, step for step -----
    import json

    from dex_bringup import replay

    for consumer in ("policy", "perception"):
        assert replay.main([str(bags), "--consumer", consumer, "--quiet"]) == 0
        res = json.loads((bags / "replay" / f"{consumer}_trial_000.json").read_text())
        recorded = counts["/policy/action" if consumer == "policy" else "/object/pose"]
        assert res["recorded_outputs"] == recorded and res["missing"] == 0, res
        assert res["lockstep"] and res["timeouts"] == 0, res
        if consumer == "policy":  # the LSTM re-run on the recorded inputs from the bag's seed
            assert res["identical_steps"] == recorded and res["max_abs_diff"]["max"] == 0.0, res
        else:  # the CNN on the recorded images: the recorded estimates, and their error
            assert res["rot_diff_deg"]["max"] < 1e-3 and res["pos_diff_mm"]["max"] < 1e-3, res
            assert res["new_rot_err_deg"] == res["old_rot_err_deg"], res
