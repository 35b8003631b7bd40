"""The LEAP hand on its Dynamixel bus (pure: no rclpy): start-up settings, state, commands.

Defaults are LEAP_Hand_API's: 16 XC330 servos, IDs 0-15, 4 Mbaud; current-based position
control (operating mode 5) with position P = 800, D = 200, I = 0, the P and D of the three
side-to-side (MCP abduction) servos x 0.75; Goal Current 350 mA (the Lite hand; up to 550 on the
full one); Return Delay Time 0. Angles: registry (model) radians; the servo map in
``dex_description.registry`` (IDs, signs, offsets: pi is the open hand) converts.

Every target written passes this hand's ``CommandGuard`` (finite, inside the joint limits, at
most ``max_step`` rad from the last one): nothing else writes Goal Position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from dex_common import dynamixel as dxl
from dex_description.registry import LEAP_SERVOS, get_hand, get_servo_map
from dex_hardware.dynamixel_bus import BusError, DynamixelBus
from dex_hardware.safety import CommandGuard

STATE_FIELDS = (dxl.PRESENT_CURRENT, dxl.PRESENT_VELOCITY, dxl.PRESENT_POSITION)  # 126..135
RAD_PER_TICK = 2 * math.pi / dxl.TICKS_PER_REV
RAD_S_PER_VELOCITY_UNIT = dxl.VELOCITY_UNIT_RPM * 2 * math.pi / 60


@dataclass
class LeapConfig:
    port: str = "/dev/ttyUSB0"
    baudrate: int = 4_000_000
    hand: str = "leap"
    operating_mode: int = dxl.OPERATING_MODE_CURRENT_POSITION
    p_gain: int = 800
    i_gain: int = 0
    d_gain: int = 200
    side_gain_scale: float = 0.75  # P and D of the side-to-side servos
    side_ids: tuple[int, ...] = LEAP_SERVOS.side_to_side
    current_limit_ma: int = 350  # Goal Current: Lite hand 300-350, full hand up to 550
    return_delay_time: int = 0  # unit 2 us
    rate_hz: float = 100.0  # control loop: one sync read + one sync write per cycle
    latency_timer_ms: float = 16.0  # the USB adapter's latency timer: how long a reply may take
    max_step: float = 0.5  # rad per written command (the guard's rate limit)
    watchdog_s: float = 0.25  # no fresh command for this long: hold
    ramp_speed: float = 0.5  # rad/s toward the safe pose at start-up and shutdown
    max_temperature_c: int = 65  # safe stop before the servos' own 70 C limit
    status_every: int = 25  # cycles between hardware-error/temperature polls
    max_bus_errors: int = 10  # consecutive failed cycles before a safe stop
    reconnect_period_s: float = 1.0

    def validate(self) -> None:
        problems = []
        if self.baudrate <= 0:
            problems.append(f"baudrate must be > 0, got {self.baudrate}")
        if self.operating_mode not in (dxl.OPERATING_MODE_POSITION,
                                       dxl.OPERATING_MODE_CURRENT_POSITION):
            problems.append(f"operating_mode must be 3 (position) or 5 (current-based "
                            f"position), got {self.operating_mode}")
        for name in ("p_gain", "i_gain", "d_gain"):
            if not 0 <= getattr(self, name) <= 16383:
                problems.append(f"{name} must be in [0, 16383], got {getattr(self, name)}")
        if not 0 < self.side_gain_scale <= 1:
            problems.append(f"side_gain_scale must be in (0, 1], got {self.side_gain_scale}")
        if not 0 < self.current_limit_ma <= 1750:
            problems.append(f"current_limit_ma must be in (0, 1750], got "
                            f"{self.current_limit_ma}")
        if not 0 <= self.return_delay_time <= 254:
            problems.append(f"return_delay_time must be in [0, 254], got "
                            f"{self.return_delay_time}")
        for name in ("rate_hz", "max_step", "watchdog_s", "ramp_speed", "reconnect_period_s",
                     "latency_timer_ms"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a positive number, got {v!r}")
        if self.status_every < 1 or self.max_bus_errors < 1:
            problems.append("status_every and max_bus_errors must be >= 1")
        ids = get_servo_map(self.hand).ids
        if not set(self.side_ids) <= set(ids):
            problems.append(f"side_ids {self.side_ids} are not all servos of {self.hand}: {ids}")
        if problems:
            raise ValueError("LEAP driver parameters: " + "; ".join(problems))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class HandReading:
    """One read of every servo, in registry actuator (= LEAP joint) order."""
    positions: np.ndarray  # rad (model convention)
    velocities: np.ndarray  # rad/s
    currents_ma: np.ndarray
    stamp: float  # time.monotonic() at the end of the read
    alert_ids: list[int]  # servos whose status carried the hardware-error alert bit


class LeapHand:
    """Driver of one LEAP hand: connect, configure, read, command (through the guard)."""

    def __init__(self, config: LeapConfig | None = None, bus: DynamixelBus | None = None) -> None:
        self.config = cfg = config or LeapConfig()
        cfg.validate()
        self.spec = get_hand(cfg.hand)
        self.map = get_servo_map(cfg.hand)
        self.ids = list(self.map.ids)  # bus order = registry actuator order
        self.bus = bus or DynamixelBus(cfg.port, cfg.baudrate, self.ids, cfg.latency_timer_ms)
        self.guard = CommandGuard(self.spec, max_delta=cfg.max_step)
        self.names = {sid: self.spec.actuator_names[a] for a, sid in enumerate(self.ids)}
        self._signs = np.asarray(self.map.signs)

    def servo_label(self, servo_id: int) -> str:
        return f"servo {servo_id} ({self.names.get(servo_id, '?')})"

    # ---- start-up ----------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the port and check every servo answers (``BusError`` names the missing)."""
        self.bus.open()
        missing = self.bus.missing()
        if missing:
            raise BusError(f"{len(missing)} of {len(self.ids)} servos do not answer on "
                           f"{self.config.port}: " + ", ".join(map(self.servo_label, missing)),
                           missing[0])

    def configure(self) -> None:
        """Torque off, LEAP's settings, then verify them by reading back (torque stays off:
        ``start`` ramps from where the hand is)."""
        cfg, b = self.config, self.bus
        b.sync_write(dxl.TORQUE_ENABLE, [0] * len(self.ids))
        b.sync_write(dxl.OPERATING_MODE, [cfg.operating_mode] * len(self.ids))
        b.sync_write(dxl.RETURN_DELAY_TIME, [cfg.return_delay_time] * len(self.ids))
        side = set(cfg.side_ids)

        def gain(g: int) -> list[int]:
            return [round(g * cfg.side_gain_scale) if i in side else g for i in self.ids]

        b.sync_write(dxl.POSITION_P_GAIN, gain(cfg.p_gain))
        b.sync_write(dxl.POSITION_I_GAIN, [cfg.i_gain] * len(self.ids))
        b.sync_write(dxl.POSITION_D_GAIN, gain(cfg.d_gain))
        b.sync_write(dxl.GOAL_CURRENT, [cfg.current_limit_ma] * len(self.ids))
        modes = b.sync_read([dxl.OPERATING_MODE]).values[:, 0]
        wrong = [self.servo_label(i) for i, m in zip(self.ids, modes, strict=True)
                 if m != cfg.operating_mode]
        if wrong:
            raise BusError(f"operating mode did not take on {', '.join(wrong)}")
        p = b.sync_read([dxl.POSITION_P_GAIN]).values[:, 0]
        if list(p) != gain(cfg.p_gain):
            raise BusError(f"position P gains read back {list(p)}, wrote {gain(cfg.p_gain)}")

    def torque(self, on: bool, verify: bool = False) -> None:
        """Torque on/off on every servo; ``verify`` reads Torque Enable back (``BusError``
        naming the servos that did not take it)."""
        self.bus.sync_write(dxl.TORQUE_ENABLE, [int(on)] * len(self.ids))
        if verify:
            got = self.bus.sync_read([dxl.TORQUE_ENABLE]).values[:, 0]
            wrong = [self.servo_label(i) for i, t in zip(self.ids, got, strict=True)
                     if t != int(on)]
            if wrong:
                raise BusError(f"torque {'on' if on else 'off'} did not take on "
                               + ", ".join(wrong))

    # ---- cycle -------------------------------------------------------------------------------
    def read(self) -> HandReading:
        r = self.bus.sync_read(STATE_FIELDS)
        cur, vel, pos = r.values[:, 0], r.values[:, 1], r.values[:, 2]
        alert = [i for i, e in zip(self.ids, r.errors, strict=True) if e & dxl.ERR_ALERT]
        return HandReading(self.map.from_servo(pos * RAD_PER_TICK),
                           self._signs * vel * RAD_S_PER_VELOCITY_UNIT,
                           cur.astype(float) * self._signs, r.stamp, alert)

    def command(self, targets: np.ndarray) -> tuple[bool, np.ndarray, str]:
        """Guard, then write Goal Position. Returns the guard's (ok, written targets, reason);
        a rejected command writes the last safe one."""
        ok, safe, reason = self.guard.check(targets)
        ticks = np.rint(self.map.to_servo(safe) / RAD_PER_TICK).astype(int)
        self.bus.sync_write(dxl.GOAL_POSITION, ticks.tolist())
        return ok, safe, reason

    def reset_guard(self, targets: np.ndarray) -> None:
        """The guard's last safe command becomes ``targets`` (e.g. where the hand is now), so a
        ramp starts from the real pose, not from a stale command."""
        lo, hi = self.guard.lower, self.guard.upper
        self.guard.reset(np.clip(np.asarray(targets, float), lo, hi))

    def health(self) -> dict[int, str]:
        """Problems per servo: hardware error bits, temperature over the limit."""
        hw = self.bus.sync_read([dxl.HARDWARE_ERROR_STATUS]).values[:, 0]
        temp = self.bus.sync_read([dxl.PRESENT_TEMPERATURE]).values[:, 0]
        out = {}
        for i, bits, t in zip(self.ids, hw, temp, strict=True):
            msgs = []
            if bits:
                msgs.append(f"hardware error: {dxl.describe_hardware_error(int(bits))}")
            if t > self.config.max_temperature_c:
                msgs.append(f"temperature {t} C > {self.config.max_temperature_c} C")
            if msgs:
                out[int(i)] = "; ".join(msgs)
        return out

    def reboot(self, servo_ids: list[int]) -> None:
        """Clear hardware errors (the servo restarts with its torque off)."""
        for i in servo_ids:
            self.bus.reboot(i)

    def close(self) -> None:
        self.bus.close()
