"""The real hand's control loop and safety layer (pure: no rclpy), independent of any policy.

One ``tick()`` per control period: read every servo, decide the target, write it through the
driver's ``CommandGuard``. States:

    disconnected -> starting -> ready -> running <-> holding
                      (ramp)    (safe pose; waits for the first command)
    any -> fault      hardware error, over-temperature, servos silent for max_bus_errors cycles:
                      the hand holds its last safe targets, commands are refused; ``recover()``
    any -> estopped   ``estop()``: torque off at once; ``recover()``
    any -> stopping -> off   ``shutdown()``: ramp to the safe pose, then torque off
    port lost -> disconnected: reconnects every reconnect_period_s without a restart, then
                      ramps to the safe pose and reports how long it was gone and how many
                      commands arrived meanwhile (none of them is replayed).

Watchdog: while running, no fresh command for ``watchdog_s`` → holding (the last safe targets)
until the next command. Nothing reaches the bus except through ``LeapHand.command``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dex_common import dynamixel as dxl
from dex_hardware.dynamixel_bus import BusDisconnected, BusError
from dex_hardware.leap import HandReading, LeapHand
from dex_hardware.safety import default_targets

OK, WARN, ERROR = 0, 1, 2


@dataclass
class LoopStatus:
    state: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)


class HandLoop:
    def __init__(self, hand: LeapHand, clock: Callable[[], float] = time.monotonic,
                 safe_pose: np.ndarray | None = None) -> None:
        self.hand = hand
        self.cfg = hand.config
        self.clock = clock
        self.safe_pose = (default_targets(hand.spec) if safe_pose is None
                          else np.asarray(safe_pose, float))
        self.state = "disconnected"
        self.level, self.message = WARN, "not connected yet"
        self.reading: HandReading | None = None
        self.target: np.ndarray | None = None  # last targets written
        self._pending: tuple[np.ndarray, float] | None = None
        self._last_cmd_t = -np.inf
        self._next_connect = -np.inf
        self._cycle = 0
        self._bus_errors = 0
        self._configured = False
        self._lost_at: float | None = None
        self._missed = 0
        self.counts = {"cycles": 0, "bus_errors": 0, "commands": 0, "rejected": 0,
                       "reconnects": 0, "watchdog_holds": 0}
        self.faults: dict[int, str] = {}

    # ---- inputs ------------------------------------------------------------------------------
    def submit(self, targets: np.ndarray) -> None:
        """A command from the controller (registry actuator order, rad); taken at the next
        tick. Counted as missed while the hand cannot take commands."""
        self.counts["commands"] += 1
        if self.state == "disconnected":
            self._missed += 1
        self._pending = (np.asarray(targets, float), self.clock())

    def estop(self, reason: str = "e-stop requested") -> bool:
        """Torque off now. True if every servo confirmed it (read back)."""
        self._set("estopped", ERROR, f"{reason}: torque off")
        try:
            self.hand.torque(False, verify=True)
            return True
        except BusError as e:
            self.message += f" (write failed: {e}; the hand may still hold its pose)"
            return False

    def recover(self) -> str:
        """Leave fault / e-stop: reboot servos that report hardware errors, then start again
        (configure, ramp to the safe pose)."""
        if self.state not in ("fault", "estopped", "off"):
            return f"nothing to recover from (state {self.state})"
        try:
            bad = [i for i in self.faults if "hardware error" in self.faults[i]]
            self.hand.reboot(bad)
            self.faults = {}
            self._start()
            return f"recovered; rebooted {bad}" if bad else "recovered"
        except BusError as e:
            self._set("fault", ERROR, f"recovery failed: {e}")
            return self.message

    def shutdown(self) -> None:
        """Ramp to the safe pose, then torque off (``tick`` until ``state == 'off'``)."""
        if self.state in ("ready", "running", "holding", "starting"):
            self._set("stopping", OK, "ramping to the safe pose before torque off")
        elif self.state != "off":
            self.state = "off"

    # ---- the cycle ---------------------------------------------------------------------------
    def tick(self) -> LoopStatus:
        now = self.clock()
        self._cycle += 1
        self.counts["cycles"] += 1
        if self.state in ("disconnected",):
            if now >= self._next_connect:
                self._next_connect = now + self.cfg.reconnect_period_s
                self._try_connect(now)
            return self.status()
        if self.state == "off":
            return self.status()
        try:
            self._cycle_on_bus(now)
        except BusDisconnected as e:
            self._lost(now, str(e))
        except BusError as e:  # a status poll or a write failed: counted, never a crash
            self.counts["bus_errors"] += 1
            if self.state not in ("fault", "estopped") and self.level == OK:
                self.level, self.message = WARN, f"bus error: {e}"
        return self.status()

    def _cycle_on_bus(self, now: float) -> None:
        try:
            self.reading = self.hand.read()
            self._bus_errors = 0
        except BusDisconnected:
            raise
        except BusError as e:
            self.counts["bus_errors"] += 1
            self._bus_errors += 1
            if self._bus_errors >= self.cfg.max_bus_errors and self.state != "fault":
                missing = self.hand.bus.missing()
                who = (", ".join(map(self.hand.servo_label, missing)) if missing
                       else "replies corrupted")
                self._fault(f"{self._bus_errors} failed reads in a row ({e}); silent: {who}")
            elif self.state != "fault" and self.level == OK:
                self.level, self.message = WARN, f"bus error, holding: {e}"
        if self.state == "estopped":
            return
        if self._bus_errors == 0 and self.reading is not None and (
                self.reading.alert_ids or self._cycle % self.cfg.status_every == 0):
            problems = self.hand.health()
            if problems:
                self.faults = problems
                if self.state != "fault":
                    self._fault("; ".join(f"{self.hand.servo_label(i)}: {m}"
                                          for i, m in problems.items()))
        self._write(self._decide(now))

    def _decide(self, now: float) -> np.ndarray:
        last = self.hand.guard.last_safe
        if self.state in ("starting", "stopping"):
            step = self.cfg.ramp_speed / self.cfg.rate_hz
            d = self.safe_pose - last
            target = last + np.clip(d, -step, step)
            if np.all(np.abs(d) <= step):
                if self.state == "starting":
                    self._set("ready", OK, "at the safe pose; waiting for commands")
                else:  # the last ramp step, then torque off
                    _, self.target, _ = self.hand.command(target)
                    self.hand.torque(False, verify=True)
                    self._set("off", OK, "shut down: safe pose reached, torque off")
            return target
        if self.state == "fault":
            return last
        if self._pending is not None and now - self._pending[1] > self.cfg.watchdog_s:
            self._pending = None  # sent while the hand ramped or was away: too old to apply
        if self._pending is not None:
            cmd, t = self._pending
            self._pending = None
            self._last_cmd_t = t
            if self.state != "running":
                self._set("running", OK, "following commands")
            return cmd
        if self.state == "running" and now - self._last_cmd_t > self.cfg.watchdog_s:
            self.counts["watchdog_holds"] += 1
            self._set("holding", WARN, f"no command for {1000 * (now - self._last_cmd_t):.0f} "
                                       f"ms (watchdog {1000 * self.cfg.watchdog_s:.0f} ms): "
                                       f"holding the last safe targets")
        return last

    def _write(self, targets: np.ndarray) -> None:
        if self.state == "off":
            return
        ok, self.target, reason = self.hand.command(targets)
        if not ok:
            self.counts["rejected"] += 1
            self.level, self.message = WARN, f"command rejected: {reason}"
        elif self.state == "running" and self.level == WARN:
            self.level, self.message = OK, "following commands"

    # ---- connection --------------------------------------------------------------------------
    def _try_connect(self, now: float) -> None:
        try:
            self.hand.connect()
            self._start()
        except BusError as e:
            self.hand.close()
            self.level, self.message = ERROR, f"cannot reach the hand: {e}; retrying"
            return
        if self._lost_at is not None:
            self.counts["reconnects"] += 1
            self.message = (f"reconnected after {now - self._lost_at:.1f} s; {self._missed} "
                            f"command(s) arrived meanwhile and were not applied; ramping to "
                            f"the safe pose")
            self.level = WARN
            self._lost_at, self._missed = None, 0

    def _start(self) -> None:
        """Configure (when the servos' settings are not ours yet), then torque on where the
        hand is and ramp to the safe pose."""
        modes = self.hand.bus.sync_read([dxl.OPERATING_MODE]).values[:, 0]
        if not self._configured or np.any(modes != self.cfg.operating_mode):
            self.hand.configure()
            self._configured = True
        self.reading = self.hand.read()
        self.hand.reset_guard(self.reading.positions)
        self.hand.command(self.reading.positions)  # goal = here, before the torque comes on
        self.hand.torque(True, verify=True)
        self._pending = None
        self._set("starting", OK, "torque on; ramping to the safe pose")

    def _lost(self, now: float, why: str) -> None:
        self.hand.close()
        self._lost_at = now
        self._next_connect = now + self.cfg.reconnect_period_s
        self._set("disconnected", ERROR, f"serial link lost ({why}); reconnecting")

    def _fault(self, why: str) -> None:
        self._set("fault", ERROR, f"safe stop: {why}; holding the last safe targets; "
                                  f"commands refused until recover")

    def _set(self, state: str, level: int, message: str) -> None:
        self.state, self.level, self.message = state, level, message

    def status(self) -> LoopStatus:
        v = {k: str(n) for k, n in self.counts.items()}
        v["state"] = self.state
        if self.reading is not None:
            v["max_current_ma"] = f"{np.max(np.abs(self.reading.currents_ma)):.0f}"
        if self.faults:
            v["faults"] = "; ".join(f"{self.hand.servo_label(i)}: {m}"
                                    for i, m in self.faults.items())
        return LoopStatus(self.state, self.level, self.message, v)
