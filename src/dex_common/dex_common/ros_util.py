"""The only rclpy module of dex_common: stamp conversion, the /diagnostics helper, QoS profiles.

Everything else in dex_common is pure (no rclpy) so it is unit-tested and used offline.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Mapping

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

# QoS: state (joint states, poses, commands, status): reliable, keep last 10.
STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# The same for the writers of the state a trial is judged and recorded by (the sim's joint
# states and cube pose): a reliable KEEP_LAST writer drops its oldest samples when its history
# is full, so a reader that lags (the recorder on a busy machine) lost steps from a bag with
# depth 10 (2 of 101 once in CI). 100 samples cost a few tens of KB.
STATE_WRITER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# Images: reliable (best-effort loses most large images on loopback), keep last 5.
IMAGE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
DIAGNOSTICS_QOS = STATE_QOS
# The actuator targets topic every hand takes (sim, real-hand drivers, ros2_control's
# forward_command_controller of that name); registry actuator order, rad.
COMMAND_TOPIC = "/hand_position_controller/commands"
# What the controller node runs (controller kind, model hash, pose source, hand, fault), as one
# diagnostic_msgs/DiagnosticStatus, latched (transient local): the trial node records it in
# every trial and starts no trial before a healthy controller is on the graph.
POLICY_INFO_TOPIC = "/policy/info"
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
localhost_qos = STATE_QOS  # name used in the brief; state QoS is the default for topics here

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
STALE = DiagnosticStatus.STALE

_NS = 1_000_000_000


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time → integer nanoseconds (exact)."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def stamp_to_float(stamp: Time) -> float:
    """builtin_interfaces/Time → float seconds: the double nearest to the exact value (integer
    ns divided once, so 0.091 s comes back as ``0.091``, not ``0.09100000000000001``)."""
    return stamp_to_ns(stamp) / 1e9


def ns_to_stamp(ns: int) -> Time:
    sec, nsec = divmod(int(ns), _NS)  # floor division keeps nanosec in [0, 1e9) for t < 0
    return Time(sec=sec, nanosec=nsec)


def float_to_stamp(t: float) -> Time:
    """Float seconds → builtin_interfaces/Time, rounded to the nearest nanosecond.

    Rounding (not truncating) makes both round trips exact: ``float_to_stamp(stamp_to_float(s))
    == s`` for any stamp below ~10^6 s, and ``stamp_to_float(float_to_stamp(t)) == t`` for any t
    that is the double nearest a whole number of ns (e.g. ``k / 1000`` for ms sim stamps)."""
    if not math.isfinite(t):
        raise ValueError(f"stamp must be finite; got {t!r}")
    sec = math.floor(t)
    nsec = round((t - sec) * _NS)
    if nsec >= _NS:  # rounding carried into the next second
        sec, nsec = sec + 1, nsec - _NS
    if not -(2**31) <= sec < 2**31:
        raise ValueError(f"stamp {t} s out of the int32 seconds range of builtin_interfaces/Time")
    return Time(sec=int(sec), nanosec=int(nsec))


def key_values(values: Mapping[str, object]) -> list[KeyValue]:
    """Dict → KeyValue list; values become strings (floats with repr-level precision)."""
    return [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


class DiagnosticsPublisher:
    """Publishes DiagnosticStatus entries on /diagnostics.

    ``report(name, level, message, values)`` stores the latest status under ``name`` and
    publishes it at once; ``report(..., immediate=False)`` only stores it (for values updated
    every control step, which would otherwise flood /diagnostics). A 1 Hz timer on a *steady* clock
    republishes all latest statuses, so diagnostics keep flowing when sim time is paused or
    use_sim_time is set (a ROS-clock timer would stop with /clock). ``refresh``, when given, is
    called before each periodic publication: a node whose status is computed (watchdogs,
    staleness) reports it there with ``immediate=False``."""

    def __init__(
        self,
        node: Node,
        hardware_id: str = "",
        period_s: float = 1.0,
        topic: str = "/diagnostics",
        refresh: Callable[[], None] | None = None,
    ) -> None:
        self.node = node
        self.hardware_id = hardware_id or node.get_name()
        self._pub = node.create_publisher(DiagnosticArray, topic, DIAGNOSTICS_QOS)
        self._lock = threading.Lock()
        self._latest: dict[str, DiagnosticStatus] = {}
        self._clock = Clock(clock_type=ClockType.STEADY_TIME)
        self.published = 0
        self._refresh = refresh
        self._timer = node.create_timer(period_s, self._periodic, clock=self._clock)

    def _periodic(self) -> None:
        if self._refresh is not None:
            self._refresh()
        self.publish_all()

    def report(
        self,
        name: str,
        level: int | bytes,
        message: str,
        values: Mapping[str, object] | None = None,
        immediate: bool = True,
    ) -> DiagnosticStatus:
        lvl = level if isinstance(level, bytes) else bytes([int(level)])
        st = DiagnosticStatus(
            level=lvl,
            name=name,
            message=str(message),
            hardware_id=self.hardware_id,
            values=key_values(values or {}),
        )
        with self._lock:
            self._latest[name] = st
        if immediate:
            self._publish([st])
        return st

    def latest(self) -> dict[str, DiagnosticStatus]:
        with self._lock:
            return dict(self._latest)

    def publish_all(self) -> None:
        with self._lock:
            statuses = list(self._latest.values())
        if statuses:
            self._publish(statuses)

    def _publish(self, statuses: list[DiagnosticStatus]) -> None:
        msg = DiagnosticArray(status=statuses)
        # Header stamp: the node's clock (sim time under use_sim_time) so tools can order it.
        msg.header.stamp = self.node.get_clock().now().to_msg()
        try:
            self._pub.publish(msg)
            self.published += 1
        except Exception as e:  # publishing during shutdown can raise RCLError; never crash
            self.node.get_logger().debug(f"diagnostics publish failed: {e}")

    def destroy(self) -> None:
        self.node.destroy_timer(self._timer)
        self.node.destroy_publisher(self._pub)


try:
    from rclpy._rclpy_pybind11 import RCLError
except ImportError:  # pragma: no cover - other rclpy layouts
    RCLError = RuntimeError


def publish_or_warn(node: Node, pub: object, msg: object) -> None:
    """Publish; a failure (RCLError: the context shutting down, a transient DDS failure) is a
    throttled warning, never a crash."""
    try:
        pub.publish(msg)
    except RCLError as e:
        node.get_logger().warning(f"publish on {pub.topic_name} failed: {e}",
                                  throttle_duration_sec=1.0)


def offer_to_sync(node: Node, sync: object, stream: int, msg: object
                  ) -> tuple[bool, tuple[float, float] | None, list]:
    """Give a stamped message to ``sync`` (an ``ApproxTimeSynchronizer``) judged by ``node``'s
    clock: (accepted, the time jump it confirmed as (old, new) or None, the sets it completed)."""
    jumps = sync.total("clock_jumps")
    sets = sync.add(stream, stamp_to_float(msg.header.stamp), msg, now=clock_now(node))
    jump = sync.last_jump if sync.total("clock_jumps") != jumps else None
    return sync.accepted, jump, sets


def declare_dynamic(node: Node, name: str, default: object) -> object:
    """Declare a parameter with dynamic typing and return its value: a wrongly typed override
    (slop:=abc) is then reported by the node's own validation instead of crashing the node
    inside declare_parameter."""
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default,
                                  ParameterDescriptor(dynamic_typing=True)).value


def clock_now(node: Node) -> float | None:
    """The node's current time (s) as the judge of input stamps: ROS time (sim time from /clock
    under use_sim_time, else the wall clock); None while a sim clock has not started (0)."""
    ns = node.get_clock().now().nanoseconds
    return ns * 1e-9 if ns > 0 else None


def make_executor() -> rclpy.executors.Executor:
    try:  # ~5x the throughput of the default executor for many small callbacks
        from rclpy.experimental.events_executor import EventsExecutor

        return EventsExecutor()
    except Exception:  # pragma: no cover - fall back on rclpy builds without it
        return rclpy.executors.SingleThreadedExecutor()


class StopRequest:
    """SIGINT/SIGTERM set a flag that the spin loop checks between slices, so a signal never
    lands inside a callback (half-published set, render interrupted) and the context stays
    valid for the shutdown summary."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.signal is not None:  # second signal: the user means it
            raise KeyboardInterrupt
        self.signal = signum


def spin(executor: rclpy.executors.Executor, stop: StopRequest | None = None,
         keep_running: Callable[[], bool] | None = None) -> None:
    """Spin until shutdown, a stop request or ``keep_running()`` turns false. EventsExecutor.spin()
    (and spin_until_future_complete without a timeout) in this rclpy build hangs without firing
    timers and ignores signals, so spin in bounded slices; each slice drains all ready events."""
    never = rclpy.task.Future()
    while (executor.context.ok() and (stop is None or stop.signal is None)
           and (keep_running is None or keep_running())):
        executor.spin_until_future_complete(never, timeout_sec=0.1)


def run_node(build: Callable[[], Node], name: str,
             start_errors: tuple[type[BaseException], ...] = (ValueError, KeyError),
             on_exit: Callable[[Node], None] | None = None,
             args: list[str] | None = None,
             keep_running: Callable[[Node], bool] | None = None) -> int:
    """A node process's main: init, build the node (``start_errors`` → a fatal log line and
    exit code 2: bad parameters, missing files), spin until SIGINT/SIGTERM (checked between
    executor slices) or until ``keep_running(node)`` is false (a node that has finished its
    work), then ``on_exit(node)`` and a clean shutdown. Returns the exit code."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        node = build()
    except start_errors as e:
        rclpy.logging.get_logger(name).fatal(f"{name} cannot start: {e}")
        rclpy.try_shutdown()
        return 2
    executor = make_executor()
    executor.add_node(node)
    try:
        spin(executor, stop, None if keep_running is None else lambda: keep_running(node))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # a second signal, or the context was shut down from elsewhere
    finally:
        executor.remove_node(node)
        if on_exit is not None:
            on_exit(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
