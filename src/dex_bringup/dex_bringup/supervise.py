"""Running a started graph to its end: the one loop behind ``dex run``, ``dex demo`` and the
graph tests, with optional supervision (no rclpy here: the caller passes its spin function).

``run_graph`` starts the nodes staged (consumers first, the sim last: in lockstep the first trial
starts as soon as the sim sees the trial node and the controller), spins the watcher until the
trial node reports ``finished`` (or for ever with ``keep_running``), settles so in-flight
messages land, and stops every process. A node that dies ends the run with its exit code and last output, unless
``respawn`` is given: then it is restarted (``RespawnPolicy``), and the graph resumes the trial
protocol. A dead sim, trial node or controller takes the trial in flight with it: the trial
node and the controller are restarted (and the dead sim), and the trial node starts again at
the first trial that did not end (``first_trial``), with that trial's own seed, so a respawned
run judges the same trials as an undisturbed one.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dex_bringup.graph import NodeSpec
from dex_bringup.procs import Child, ProcessGroup, exit_text

HAND_DRIVERS = frozenset({"leap_node"})  # executables that publish a real hand's joint states


def start_order(nodes: list[NodeSpec]) -> list[NodeSpec]:
    """Consumers before producers (recorder, controller, trial node, perception, then the
    sim)."""
    return list(reversed(nodes))


def readiness_checks(nodes: list[NodeSpec]) -> list[tuple[str, str, int]]:
    """(``pub``|``sub``, topic, minimum count) that show the non-sim nodes are on the graph.

    A watcher node (demo monitor, test tap) that subscribes /trial/status itself counts too.
    """
    names = {n.name for n in nodes}
    checks: list[tuple[str, str, int]] = []
    if "dex_trial" in names:
        checks += [("pub", "/trial/status", 1), ("sub", "/joint_states", 1)]
    if "dex_policy" in names:
        checks += [("pub", "/policy/action", 1), ("sub", "/goal/pose", 1)]
    if "dex_perception" in names:
        checks.append(("pub", "/object/pose", 1))
    if "dex_recorder" in names:
        # The recorder, the watcher, and the controller (which syncs on the status).
        checks.append(("sub", "/trial/status", 2 + ("dex_policy" in names)))
    return checks


# Topics only a dex graph publishes: someone on them before ours starts is another graph.
OWN_TOPICS = ("/trial/status", "/policy/action", "/sim/reset")
# How long the watcher listens for another graph before starting ours (DDS discovery of
# participants on this machine takes well under this).
DISCOVERY_S = 1.0


def other_graph(watcher: object, spin: Callable[[], None], wait_s: float = DISCOVERY_S) -> str:
    """A problem sentence when another dex graph already runs on this ROS domain ("" if none):
    two graphs on one domain answer each other's resets and judge each other's trials."""
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        spin()
        busy = [t for t in OWN_TOPICS if watcher.count_publishers(t) > 0]
        if busy:
            domain = os.environ.get("ROS_DOMAIN_ID", "") or "0"
            other = int(domain) + 1 if domain.isdigit() and int(domain) < 100 else 1
            return (f"another dex graph is already running on ROS domain {domain} (it publishes "
                    f"{', '.join(busy)}): two graphs on one domain would answer each other's "
                    f"resets and judge each other's trials. Stop it, or run this one on another "
                    f"domain (e.g. ROS_DOMAIN_ID={other})")
    return ""


def start_staged(group: ProcessGroup, watcher: object, spin: Callable[[], None],
                 timeout: float = 60.0) -> list[str]:
    """Start every node but the state source (the sim, or the hand's driver), wait until
    ``watcher`` (an rclpy node) sees them on the graph, then start it: the first trial starts
    as soon as the trial node gets joint states, so the monitor and the recorder must already be
    matched or trial 0 goes unseen. Nothing starts while another graph runs on the same ROS
    domain (``other_graph``). Returns problems (empty when ready)."""
    if hasattr(watcher, "count_publishers") and (clash := other_graph(watcher, spin)):
        return [clash]
    sim_names = [s.name for s in group.specs if s.package == "dex_sim"]
    # A hand driver publishes joint states from its first cycle: it waits like the sim.
    sources = sim_names + [s.name for s in group.specs if s.executable in HAND_DRIVERS]
    # The watcher (monitor, test tap) must see trial 0 too: the sim waits for it as well.
    if hasattr(watcher, "get_name"):
        for i, spec in enumerate(group.specs):
            if spec.name in sim_names:
                waits = [n for n in str(spec.parameters.get("wait_nodes", "")).split(",") if n]
                if watcher.get_name() not in waits:
                    group.specs[i] = spec.with_parameters(
                        wait_nodes=",".join([*waits, watcher.get_name()]))
    group.start([s.name for s in group.specs if s.name not in sources])
    problems = wait_until_seen(group, watcher, spin, readiness_checks(group.specs), timeout)
    if not problems:
        group.start()
    return problems


def wait_until_seen(group: ProcessGroup, watcher: object, spin: Callable[[], None],
                    checks: list[tuple[str, str, int]], timeout: float = 60.0,
                    already_dead: frozenset[str] = frozenset()) -> list[str]:
    """Spin until ``watcher`` sees every endpoint in ``checks`` (``readiness_checks``), then
    0.5 s more so the new endpoints match both ways. Returns problems (a node other than
    ``already_dead`` died, or a timeout naming what is missing)."""
    deadline = time.monotonic() + timeout
    missing = checks
    while time.monotonic() < deadline:
        spin()
        dead = [c for c in group.dead() if c.name not in already_dead]
        if dead:
            return [group.describe_exit(c) for c in dead]
        missing = [
            (kind, topic, n)
            for kind, topic, n in checks
            if (watcher.count_publishers(topic) if kind == "pub" else watcher.count_subscribers(topic)) < n
        ]
        if not missing:
            break
    else:
        return [f"nodes not on the graph after {timeout:.0f} s: missing {missing}"]
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        spin()
    return []


@dataclass
class Restart:
    """One supervision event: ``died`` exited with ``how``; ``started`` were (re)started."""

    died: str
    how: str
    started: list[str]
    first_trial: int | None  # the trial node's first trial after the restart
    at_s: float  # since the run began (wall)


@dataclass
class RespawnPolicy:
    """Which nodes to (re)start when one dies, and when to give up.

    A node is restarted at most ``max_restarts`` times; after that its death ends the run as
    without supervision. A clean exit (code 0) is never restarted: the node chose to stop."""

    max_restarts: int = 3
    counts: dict[str, int] = field(default_factory=dict)

    def plan(self, dead: NodeSpec, code: int, specs: list[NodeSpec]) -> list[NodeSpec]:
        """The nodes to restart, in start order (empty: do not restart)."""
        if code == 0 or self.counts.get(dead.name, 0) >= self.max_restarts:
            return []
        self.counts[dead.name] = self.counts.get(dead.name, 0) + 1
        # The trial in flight is lost with its physics (a dead sim), its judge (a dead trial
        # node) or its controller's memory: the trial node starts it again, the controller
        # with it (a fresh memory and synchronizer), the sim last.
        if dead.package == "dex_sim" or runs_trials(dead) or is_controller(dead):
            return [*(s for s in specs if runs_trials(s) or is_controller(s)),
                    *([dead] if dead.package == "dex_sim" else [])]
        return [dead]


def is_controller(spec: NodeSpec) -> bool:
    return spec.package == "dex_policy"


def runs_trials(spec: NodeSpec) -> bool:
    """The trial node: it numbers the trials (``first_trial`` resumes them)."""
    return spec.executable == "trial_node"


@dataclass
class RunOutcome:
    problems: list[str]  # empty: the graph ran to its end (or was asked to stop)
    codes: dict[str, int | None]  # exit code of each node (its last process)
    restarts: list[Restart]
    finished: bool  # the trial node reported 'finished'
    interrupted: bool  # SIGINT/SIGTERM to this process
    note: str = ""  # why the run ended when no problem did (e.g. "dex_policy exited normally")


class _Stop(Exception):
    """SIGTERM/SIGINT received by the running command."""


def _raise_stop(_sig: int, _frame: object) -> None:
    raise _Stop()


def run_graph(
    group: ProcessGroup,
    watcher: object,
    spin: Callable[[], None],
    finished: Callable[[], bool],
    *,
    keep_running: bool = False,
    timeout_s: float = math.inf,
    settle_s: float = 1.0,
    settled: Callable[[], bool] = lambda: True,
    settle_max_s: float = 10.0,
    respawn: RespawnPolicy | None = None,
    trials_done: Callable[[], int] = lambda: 0,
    tick: Callable[[], None] | None = None,
    progress: Callable[[str], None] = lambda line: None,
    heartbeat_s: float = math.inf,
    heartbeat: Callable[[], str] = lambda: "running",
    handle_signals: bool = True,
) -> RunOutcome:
    """Start ``group`` staged, spin until ``finished()`` (unless ``keep_running``), settle (at
    least ``settle_s``, then until ``settled()`` — the recorder closed its bags — or
    ``settle_max_s``), stop every node (see the module docstring). ``trials_done()`` is the
    index of the first trial not yet ended (where a restarted trial node resumes); ``tick``
    runs every turn (fault injection); ``progress`` gets one line per event and ``heartbeat()``
    every ``heartbeat_s``. With ``handle_signals`` SIGINT/SIGTERM stop the run cleanly (the
    handlers are restored after)."""
    out = RunOutcome([], {}, [], False, False)
    old = None
    if handle_signals:
        old = (signal.signal(signal.SIGINT, _raise_stop), signal.signal(signal.SIGTERM, _raise_stop))
    t0 = time.monotonic()
    last_beat = t0
    try:
        out.problems += start_staged(group, watcher, spin)
        while not out.problems:
            spin()
            if tick is not None:
                tick()
            if finished():
                out.finished = True
                if not keep_running:
                    progress("all trials done; stopping the graph")
                    t_fin = time.monotonic()
                    while True:
                        spin()
                        waited = time.monotonic() - t_fin
                        if waited >= settle_s and (settled() or waited >= settle_max_s):
                            break
                    break
            dead = group.dead()
            if dead and not _supervise(group, dead, respawn, trials_done, out, t0, progress,
                                       watcher, spin):
                break
            now = time.monotonic()
            if now - t0 > timeout_s:
                out.problems.append(f"timeout: the trial node did not report 'finished' within "
                                    f"{timeout_s:.0f} s")
            elif now - last_beat > heartbeat_s:
                last_beat = now
                progress(f"{now - t0:.0f} s: {heartbeat()}")
    except _Stop:
        out.interrupted = True
    finally:
        if old is not None:  # no second Ctrl-C half-way through stopping the nodes
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            out.codes = group.stop()
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old[0])
                signal.signal(signal.SIGTERM, old[1])
    return out


def _supervise(group: ProcessGroup, dead: list[Child], respawn: RespawnPolicy | None,
               trials_done: Callable[[], int], out: RunOutcome, t0: float,
               progress: Callable[[str], None], watcher: object,
               spin: Callable[[], None]) -> bool:
    """Handle dead children; False ends the run (with a problem or a note)."""
    for c in dead:
        code = c.returncode()
        plan = respawn.plan(c.spec, code, group.specs) if respawn is not None else []
        if not plan:
            if code == 0:
                out.note = f"{c.name} exited normally; stopping the graph"
            else:
                out.problems.append(group.describe_exit(c))
                if respawn is not None:
                    out.problems.append(f"{c.name} was not restarted again (already restarted "
                                        f"{respawn.counts.get(c.name, 0)} times)")
            return False
        how = exit_text(c)
        first = trials_done()
        total = next((s.parameters.get("num_trials", 0) for s in group.specs
                      if runs_trials(s)), 0)
        if isinstance(total, int) and 0 < total <= first:
            out.note = (f"{c.name} died ({how}) after the last trial ended; nothing to resume, "
                        f"stopping the graph")
            return False
        # Like the first start: a restarted sim begins the trial protocol as soon as it sees
        # the trial node and the controller, so the watcher (monitor, recorder's peer) must
        # see them first, or the rerun trial goes unseen.
        sims = [s for s in plan if s.package == "dex_sim"]
        others = [s for s in plan if s.package != "dex_sim"]
        for spec in others:
            group.restart(spec.name, {"first_trial": first} if runs_trials(spec) else None)
        if sims and others:
            problems = wait_until_seen(group, watcher, spin, readiness_checks(others), 30.0,
                                       frozenset(s.name for s in sims))
            if problems:
                out.problems += problems
                return False
        for spec in sims:
            group.restart(spec.name)
        names = [s.name for s in plan]
        resumed = first if any(map(runs_trials, plan)) else None
        out.restarts.append(Restart(c.name, how, names, resumed,
                                    round(time.monotonic() - t0, 2)))
        progress(f"{c.name} died ({how}); restarted {', '.join(names)}"
                 + (f" (trials resume at trial {resumed})" if resumed is not None else ""))
    return True
