"""Fault campaign on the real graph (sim, policy, recorder as processes over DDS, lockstep, state
mode, 2 trials): while trials run, a hostile publisher injects, at seeded random moments,
/joint_states and cube poses whose stamps lie (0, 1000 s ahead, 1000 s behind) and floods of
stale joint states. Asserts: no node dies, no genuine step is lost or delayed (the largest wall
gap between commands stays far below the sim's 1 s re-send), every lie is counted on the
policy's /diagnostics, the time never "jumps", trials end normally, every bag reads back.
And a genuine clock jump: the sim killed and restarted under the running policy.
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path

from graph_run import run_graph_until

from dex_bringup.bagging import read_bag
from dex_bringup.graph import sim_graph

TIMEOUT_S = 120.0
FLOOD = 20  # stale joint states per flood
LIES = ("js_zero", "js_ahead", "js_behind", "pose_zero", "pose_ahead", "set_ahead", "flood_stale")


def test_lying_stamps_and_floods_cost_nothing(dds_env: dict[str, str], tmp_path: Path) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from dex_common.ros_util import float_to_stamp, stamp_to_float

    nodes = sim_graph(mode="lockstep", pose_source="gt", num_trials=2, seed=5,
                      record_dir=str(tmp_path / "bags"))
    rclpy.init()
    node = rclpy.create_node("fault_injector")
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    js_pub = node.create_publisher(JointState, "/joint_states", qos)
    pose_pub = node.create_publisher(PoseStamped, "/object/pose_gt", qos)
    latest: dict[str, object] = {}
    cmd_walls: list[float] = []
    statuses: list[tuple[str, dict[str, str]]] = []
    diags: dict[str, tuple[int, str, dict[str, str]]] = {}
    stale_seen: list[str] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            level = st.level if isinstance(st.level, int) else int.from_bytes(st.level, "little")
            diags[st.name] = (level, st.message, {kv.key: kv.value for kv in st.values})
            if level == 3:
                stale_seen.append(f"{st.name}: {st.message}")

    node.create_subscription(JointState, "/joint_states",
                             lambda m: latest.__setitem__("js", m), qos)
    node.create_subscription(PoseStamped, "/object/pose_gt",
                             lambda m: latest.__setitem__("pose", m), qos)
    node.create_subscription(Float64MultiArray, "/hand_position_controller/commands",
                             lambda m: cmd_walls.append(time.monotonic()), qos)
    node.create_subscription(
        DiagnosticArray, "/trial/status",
        lambda m: statuses.extend((s.message, {kv.key: kv.value for kv in s.values})
                                  for s in m.status if s.name == "trial"), qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos)

    rnd = random.Random(11)
    injected = {k: 0 for k in LIES}
    inject_walls: list[float] = []
    flood_walls: list[float] = []

    def inject() -> None:
        if "js" not in latest or "pose" not in latest:
            return
        js, pose = copy.deepcopy(latest["js"]), copy.deepcopy(latest["pose"])
        t = stamp_to_float(js.header.stamp)
        kind = rnd.choice(LIES)
        injected[kind] += 1
        inject_walls.append(time.monotonic())
        if kind == "flood_stale":
            flood_walls.append(time.monotonic())
        lie = {"zero": 0.0, "ahead": t + 1000.0, "behind": max(t - 1000.0, 0.0)}
        if kind.startswith("js_"):
            js.header.stamp = float_to_stamp(lie[kind[3:]])
            js_pub.publish(js)
        elif kind.startswith("pose_"):
            pose.header.stamp = float_to_stamp(lie[kind[5:]])
            pose_pub.publish(pose)
        elif kind == "set_ahead":  # one liar on every input topic: the stamps agree, the clock not
            js.header.stamp = pose.header.stamp = float_to_stamp(lie["ahead"])
            js_pub.publish(js)
            pose_pub.publish(pose)
        else:
            for k in range(FLOOD):
                js.header.stamp = float_to_stamp(max(t - 0.5 + k * 1e-3, 0.0))
                js_pub.publish(js)

    next_inject = [time.monotonic() + 1.0]

    def tick() -> None:
        now = time.monotonic()
        # Sim time must have passed 1 s so a stamp of 0 is a lie, not just a late message.
        js = latest.get("js")
        if now >= next_inject[0] and js is not None and stamp_to_float(js.header.stamp) > 1.5:
            inject()
            next_inject[0] = now + rnd.uniform(0.02, 0.1)

    try:
        _, codes, _ = run_graph_until(nodes, dds_env, node,
                                   lambda: any(m == "finished" for m, _ in statuses),
                                   TIMEOUT_S, settle_s=2.5, spin_s=0.01, tick=tick)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert all(code == 0 for code in codes.values()), codes

    assert sum(injected.values()) >= 8, injected  # the campaign really ran
    # Both trials ran to a normal end, judged on every step.
    ended = [v for m, v in statuses if v.get("ended") == "true" and m != "finished"]
    assert [v["trial"] for v in ended] == ["0", "1"], ended
    assert all(v["end_reason"] in ("dropped", "timeout", "completed") for v in ended)
    # Lies cost no step: commands keep their lockstep pace through the injections. A flood can
    # evict a genuine joint state from the policy's KEEP_LAST(10) reader queue (and a loaded
    # machine can pause a process); the sim's 1 s re-send bounds what either costs.
    gaps = [b - a for a, b in zip(cmd_walls, cmd_walls[1:], strict=False)
            if inject_walls and inject_walls[0] <= a <= inject_walls[-1]]
    assert gaps and max(gaps) < 1.6, max(gaps)
    stalls = sum(g > 0.5 for g in gaps)
    # Every lie counted (a flood the injector stamped from a late view may count as lies too),
    # and none moved time.
    level, message, pv = diags["dex_policy"]
    implausible = int(pv["sync_dropped_implausible"])
    js_lies = sum(injected[k] for k in ("js_zero", "js_ahead", "js_behind", "set_ahead"))
    pose_lies = sum(injected[k] for k in ("pose_zero", "pose_ahead", "set_ahead"))
    got = (int(pv["sync_s0.dropped_implausible"]), int(pv["sync_s1.dropped_implausible"]))
    assert js_lies <= got[0] <= js_lies + FLOOD * injected["flood_stale"], (got, injected)
    assert got[1] == pose_lies, (got, injected)
    assert pv["time_jumps"] == "0" and pv["sync_clock_jumps"] == "0"
    assert pv["input_errors"] == "0", pv
    assert stalls or not stale_seen, stale_seen  # STALE only while a step really stalled
    print(f"fault campaign: injected {injected}; both trials ended normally; largest command gap "
          f"during injections {max(gaps) * 1e3:.0f} ms over {len(gaps)} steps "
          f"({stalls} over 0.5 s, {injected['flood_stale']} floods); policy counted "
          f"{implausible} implausible, {pv['sync_dropped_out_of_order']} out-of-order, "
          f"{pv['holds']} holds")
    # Every trial's bag reads back and holds its steps (the lies were recorded too).
    for trial, v in zip(("trial_000", "trial_001"), ended, strict=True):
        counts, custom = read_bag(tmp_path / "bags" / trial)
        assert custom["end_reason"] == v["end_reason"]
        assert counts["/joint_states"] >= 1
        # Genuine steps missing from the bag (the lies and stale floods are in it too, so count
        # the step grid's stamps, not messages). A busy machine can make a reliable reader lag
        # past a writer's 10-deep history; the loss is counted and must stay small.
        missing = _missing_steps(tmp_path / "bags" / trial, float(custom["start_stamp"]),
                                 int(v["steps"]))
        print(f"{trial}: {len(missing)} of {v['steps']} steps' /joint_states not in the bag")
        assert len(missing) <= 2, missing


def _missing_steps(bag: Path, start_s: float, steps: int) -> list[float]:
    """Step stamps (start + k control periods, k < steps) with no /joint_states in ``bag``."""
    from rosbags.rosbag2 import Reader

    from dex_bringup.bagging import cdr_stamp_ns
    from dex_description.registry import get_hand

    period_ns = round(get_hand("shadow").control_period * 1e9)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/joint_states"]
        seen = {cdr_stamp_ns(raw) for _, _, raw in reader.messages(connections=conns)}
    start_ns = round(start_s * 1e9)
    return [(start_ns + k * period_ns) / 1e9 for k in range(steps)
            if start_ns + k * period_ns not in seen]


def test_a_sim_restarted_under_a_running_policy_is_a_clock_jump(dds_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    """A genuine clock jump on the real graph: the sim is SIGKILLed mid-trial and a new one
    started while the policy and recorder keep running, so every input's time starts again
    near 0. The policy must take it as one time jump (WARN naming it within two diagnostics
    periods, counted once), keep commanding without a lost step, and end the trial normally;
    the bag of the trial reads back with both timelines in it."""
    import os
    import signal

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from dex_bringup.procs import ProcessGroup
    from dex_bringup.supervise import run_graph, start_order
    from dex_common.ros_util import stamp_to_float

    nodes = sim_graph(mode="lockstep", pose_source="gt", num_trials=2, seed=8,
                      record_dir=str(tmp_path / "bags"),
                      extra={"dex_trial": {"goal_timeout_s": 4.0}})
    rclpy.init()
    node = rclpy.create_node("clock_jump_watch")
    statuses: list[tuple[str, dict[str, str]]] = []
    warns: list[tuple[float, str]] = []
    policy_values: dict[str, str] = {}
    js_stamps: list[tuple[float, float]] = []  # (wall, stamp)
    cmd_walls: list[float] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "dex_policy":
                level = st.level if isinstance(st.level, int) else int.from_bytes(st.level,
                                                                                 "little")
                policy_values.update({kv.key: kv.value for kv in st.values})
                # WARN, or STALE while the dead sim's silence is still reported with it.
                if level in (1, 3) and "time jumped" in st.message:
                    warns.append((time.monotonic(), st.message))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    node.create_subscription(
        DiagnosticArray, "/trial/status",
        lambda m: statuses.extend((s.message, {kv.key: kv.value for kv in s.values})
                                  for s in m.status if s.name == "trial"), 50)
    node.create_subscription(JointState, "/joint_states", lambda m: js_stamps.append(
        (time.monotonic(), stamp_to_float(m.header.stamp))), 50)
    node.create_subscription(Float64MultiArray, "/hand_position_controller/commands",
                             lambda m: cmd_walls.append(time.monotonic()), 50)
    group = ProcessGroup(start_order(nodes), env=dds_env, echo=False)
    restarted: list[float] = []

    def tick() -> None:
        # Mid-trial: the newest status is a running trial with steps behind and (goal timeout
        # 4 s) seconds ahead of it; never after the last trial ended (the graph settling).
        last = statuses[-1][1] if statuses else {}
        running = last.get("ended") == "false" and int(last.get("steps", 0)) >= 5
        if not restarted and running and js_stamps[-1][1] > 3.0:
            sim = next(c for c in group.children if c.name == "dex_sim")
            os.kill(sim.proc.pid, signal.SIGKILL)
            sim.proc.wait(timeout=5.0)
            restarted.append(time.monotonic())
            group.restart("dex_sim")

    try:
        out = run_graph(group, node, lambda: rclpy.spin_once(node, timeout_sec=0.02),
                        lambda: any(m == "finished" for m, _ in statuses), timeout_s=TIMEOUT_S,
                        settle_s=2.5, tick=tick, handle_signals=False)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert restarted, "the sim was never restarted"
    assert out.finished and not out.problems, (out.problems, out.note)
    assert out.codes.get("dex_policy") == 0, out.codes
    # The new sim's time starts again: the stamps went back.
    t_kill = restarted[0]
    before = [s for w, s in js_stamps if w < t_kill]
    after = [(w, s) for w, s in js_stamps if w > t_kill and s < before[-1] - 1.0]
    assert after, ("no /joint_states on a new timeline after the restart",
                   [(round(w - t_kill, 2), s) for w, s in js_stamps][-20:], statuses[-4:])
    first_new = after[0][0]
    # One time jump, reported within two diagnostics periods of the first set on the new time.
    assert policy_values["time_jumps"] == "1", policy_values
    assert warns and warns[0][0] - first_new < 2.0 + 0.5, (warns, first_new)
    # Commands resumed on the new timeline, and both trials ended normally.
    resumed = [w for w in cmd_walls if w > first_new]
    assert resumed, "no command after the clock jump"
    ended = [v for m, v in statuses if v.get("ended") == "true" and m != "finished"]
    assert [v["trial"] for v in ended] == ["0", "1"], ended
    assert all(v["end_reason"] in ("dropped", "timeout", "completed") for v in ended)
    print(f"clock jump (sim restarted at stamp {before[-1]:.2f} s, new time {after[0][1]:.2f} s):"
          f" first new-time state {first_new - t_kill:.2f} s after the kill, WARN "
          f"{warns[0][0] - first_new:.2f} s after it, first command "
          f"{resumed[0] - first_new:.3f} s after it; policy counted "
          f"{policy_values['time_jumps']} jump, {policy_values.get('holds')} holds")
    for trial in ("trial_000", "trial_001"):
        counts, custom = read_bag(tmp_path / "bags" / trial)
        assert counts["/joint_states"] >= 1 and custom["end_reason"], (trial, custom)
