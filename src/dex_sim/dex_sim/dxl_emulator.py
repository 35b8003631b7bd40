"""An emulated Dynamixel hand: Protocol 2.0 servos on a pseudo-terminal, moved by MuJoCo.

A real-hand driver opens the emulator's serial port (a pty, optionally behind a stable
symlink like ``/dev/ttyUSB0``) exactly as it opens a U2D2 adapter, and every byte it sends is
parsed, answered and acted on as the X-series servos of a LEAP hand would:

- a control table per servo (``dex_common.dynamixel`` addresses); EEPROM entries refuse writes
  while the torque is on (access error), as on the servo;
- ping, read, write, sync read/write, bulk read/write, reboot; status packets carry the alert
  bit while the servo's Hardware Error Status is set; a packet with a bad CRC gets a CRC-error
  status;
- the LEAP MuJoCo model behind it: Goal Position drives the position actuators (torque on),
  Goal Current caps their force (current-based position control), Position P Gain scales their
  stiffness; Present Position/Velocity/Current are read off the physics;
- faults to test a driver with: corrupted replies, a servo that stops answering, hardware-error
  bits (with the servo's Shutdown behaviour: torque off), overheating, unplug and replug.

Physics runs in real time by default (stepped up to the wall clock whenever a packet arrives);
``realtime=False`` leaves it to ``advance()`` for deterministic tests.
"""

from __future__ import annotations

import contextlib
import math
import os
import pty
import select
import struct
import threading
import time
import tty
from pathlib import Path

import mujoco
import numpy as np

from dex_common import dynamixel as dxl
from dex_description.registry import get_servo_map
from dex_sim.physics import HandCubeSim

# XC330-M288-T (LEAP hand): model number and roughly its torque constant (stall torque
# 0.93 N m at 1.8 A, 5 V).
XC330_M288_MODEL = 1240
XC330_TORQUE_PER_AMP = 0.52
NOMINAL_P_GAIN = 800  # the P gain at which the MuJoCo actuators have their modelled stiffness
_DEFAULTS = {  # factory values of the entries we emulate
    dxl.RETURN_DELAY_TIME: 250, dxl.OPERATING_MODE: dxl.OPERATING_MODE_POSITION,
    dxl.TEMPERATURE_LIMIT: 70, dxl.CURRENT_LIMIT: 910, dxl.SHUTDOWN: 0x34,
    dxl.STATUS_RETURN_LEVEL: 2, dxl.POSITION_P_GAIN: 800, dxl.POSITION_I_GAIN: 0,
    dxl.POSITION_D_GAIN: 0, dxl.GOAL_CURRENT: 910, dxl.PRESENT_INPUT_VOLTAGE: 50,
    dxl.PRESENT_TEMPERATURE: 30,
}


# Entries a write may not touch: model number, firmware, ID (fixed here), Hardware Error Status;
# and everything from Realtime Tick (120) on is state the servo reports.
_READ_ONLY = (0, 1, 6, 7, dxl.HARDWARE_ERROR_STATUS.address)
_FIRST_STATE = 120


class Servo:
    """One servo's control table (bytes) with typed access."""

    def __init__(self, servo_id: int, model_number: int, firmware: int = 52) -> None:
        self.table = bytearray(dxl.CONTROL_TABLE_SIZE)
        self.set(dxl.MODEL_NUMBER, model_number)
        self.set(dxl.FIRMWARE_VERSION, firmware)
        self.set(dxl.ID, servo_id)
        for f, v in _DEFAULTS.items():
            self.set(f, v)

    def get(self, f: dxl.Field) -> int:
        return dxl.decode(f, self.table[f.address:f.address + f.size])

    def set(self, f: dxl.Field, value: int) -> None:
        self.table[f.address:f.address + f.size] = dxl.encode(f, value)

    @property
    def torque(self) -> bool:
        return bool(self.table[dxl.TORQUE_ENABLE.address])


def _overlaps(address: int, length: int, f: dxl.Field) -> bool:
    return address < f.address + f.size and f.address < address + length


class EmulatedHand:
    """The servos of one hand and the physics they move (thread-safe: one lock)."""

    def __init__(self, hand: str = "leap", realtime: bool = True,
                 model_number: int = XC330_M288_MODEL,
                 torque_per_amp: float = XC330_TORQUE_PER_AMP) -> None:
        self.sim = HandCubeSim(hand, render=False)
        self.spec = self.sim.spec
        self.map = get_servo_map(hand)
        self.kt = float(torque_per_amp)
        self.servos = {i: Servo(i, model_number) for i in self.map.ids}
        self.actuator_of = {sid: a for a, sid in enumerate(self.map.ids)}
        self.lock = threading.RLock()
        m, ix = self.sim.model, self.sim.idx
        self._act = np.asarray(ix.actuator_ids)
        self._act_matrix = self.spec.actuation_matrix()  # joints -> actuators (read per packet)
        self._kp0 = m.actuator_gainprm[self._act, 0].copy()
        self._bias0 = m.actuator_biasprm[self._act, 1].copy()
        self._lo, self._hi = self.spec.actuator_limits()
        ticks = self.map.to_servo(self.sim.actuator_targets()) * dxl.TICKS_PER_REV / (2 * math.pi)
        for sid, a in self.actuator_of.items():
            self.servos[sid].set(dxl.GOAL_POSITION, round(ticks[a]))
        for a in range(len(self._act)):
            self._apply_gains(a)
        self.realtime = realtime
        self._t0 = time.monotonic()
        self._steps = 0
        # Faults
        self.silent: set[int] = set()
        self.corrupt_replies = 0  # the next N status packets go out with a wrong CRC
        self.late_replies = 0  # the answers to the next N instructions go out ...
        self.reply_delay_s = 0.0  # ... this late (a driver's timeout must not take them later)
        self.log: list[tuple[str, int]] = []  # (instruction name, servo id) received
        self.crc_errors = 0  # instruction packets that arrived with a bad CRC
        self._refresh_present()

    # ---- physics ----------------------------------------------------------------------------
    def advance(self, seconds: float | None = None) -> None:
        """Step the physics by ``seconds``, or (None) up to the wall clock in real-time mode
        (at most 0.2 s of catch-up per call, so a stalled process does not replay minutes)."""
        dt = self.spec.timestep
        with self.lock:
            if seconds is None:
                if not self.realtime:
                    return
                due = int((time.monotonic() - self._t0) / dt)
                n, self._steps = min(due - self._steps, int(0.2 / dt)), due
            else:
                n = round(seconds / dt)
            if n <= 0:
                return
            self._limp()
            mujoco.mj_step(self.sim.model, self.sim.data, nstep=n)
            self._refresh_present()

    def _limp(self) -> None:
        """A servo with torque off exerts nothing: its actuator follows the joint."""
        q = None
        for sid, s in self.servos.items():
            if not s.torque:
                if q is None:
                    q = self._actuator_positions()
                a = self.actuator_of[sid]
                self.sim.data.ctrl[self._act[a]] = q[a]

    def _actuator_positions(self) -> np.ndarray:
        return self._act_matrix @ self.sim.joint_positions()

    def _refresh_present(self) -> None:
        d = self.sim.data
        q = self._actuator_positions()
        qd = self._act_matrix @ self.sim.joint_velocities()
        ticks = np.rint(self.map.to_servo(q) * dxl.TICKS_PER_REV / (2 * math.pi))
        vel = np.rint(np.asarray(self.map.signs) * qd * 60 / (2 * math.pi)
                      / dxl.VELOCITY_UNIT_RPM)
        force = d.actuator_force[self._act] * np.asarray(self.map.signs)
        for sid, s in self.servos.items():
            a = self.actuator_of[sid]
            s.set(dxl.PRESENT_POSITION, int(ticks[a]))
            s.set(dxl.PRESENT_VELOCITY, int(vel[a]))
            s.set(dxl.PRESENT_CURRENT, int(np.clip(round(force[a] / self.kt * 1000),
                                                   -32768, 32767)) if s.torque else 0)

    def _apply_gains(self, a: int) -> None:
        """Goal Current (capped by Current Limit) → actuator force limit; P gain → stiffness."""
        s = self.servos[self.map.ids[a]]
        m, i = self.sim.model, self._act[a]
        amps = min(abs(s.get(dxl.GOAL_CURRENT)), s.get(dxl.CURRENT_LIMIT)) / 1000.0
        m.actuator_forcelimited[i] = 1
        m.actuator_forcerange[i] = (-amps * self.kt, amps * self.kt)
        scale = s.get(dxl.POSITION_P_GAIN) / NOMINAL_P_GAIN
        m.actuator_gainprm[i, 0] = self._kp0[a] * scale
        m.actuator_biasprm[i, 1] = self._bias0[a] * scale

    def _apply_goal(self, a: int) -> None:
        s = self.servos[self.map.ids[a]]
        if s.torque:
            angle = s.get(dxl.GOAL_POSITION) * 2 * math.pi / dxl.TICKS_PER_REV
            q = (angle - self.map.offsets[a]) * self.map.signs[a]
            self.sim.data.ctrl[self._act[a]] = min(max(q, self._lo[a]), self._hi[a])

    # ---- faults ------------------------------------------------------------------------------
    def set_hardware_error(self, servo_id: int, bits: int) -> None:
        """Raise (or with 0 clear) Hardware Error Status bits; bits the servo's Shutdown entry
        names switch its torque off, as the firmware does."""
        with self.lock:
            s = self.servos[servo_id]
            s.set(dxl.HARDWARE_ERROR_STATUS, bits)
            if bits & s.get(dxl.SHUTDOWN):
                s.set(dxl.TORQUE_ENABLE, 0)

    def set_temperature(self, servo_id: int, celsius: int) -> None:
        """Present Temperature; past the Temperature Limit the servo flags overheating."""
        with self.lock:
            s = self.servos[servo_id]
            s.set(dxl.PRESENT_TEMPERATURE, celsius)
            if celsius > s.get(dxl.TEMPERATURE_LIMIT):
                self.set_hardware_error(servo_id, s.get(dxl.HARDWARE_ERROR_STATUS)
                                        | dxl.HW_OVERHEATING)

    def goal_positions(self) -> np.ndarray:
        """Goal Position of each actuator's servo (ticks, registry actuator order)."""
        return np.array([self.servos[sid].get(dxl.GOAL_POSITION) for sid in self.map.ids])

    def value(self, servo_id: int, f: dxl.Field) -> int:
        with self.lock:
            return self.servos[servo_id].get(f)

    # ---- protocol ----------------------------------------------------------------------------
    def handle(self, p: dxl.Packet | dxl.PacketError) -> list[bytes]:
        """The status packets the bus carries in answer to one received packet."""
        self.advance()
        with self.lock:
            if isinstance(p, dxl.PacketError):
                self.crc_errors += 1
                sid = p.raw[4] if len(p.raw) > 4 else None
                if sid in self.servos and sid not in self.silent:
                    return self._finish([self._status(sid, dxl.ERR_CRC)])
                return []
            self.log.append((dxl.INSTRUCTION_NAMES.get(p.instruction, hex(p.instruction)),
                             p.servo_id))
            handler = self._HANDLERS.get(p.instruction)
            if handler is None:
                return self._finish([self._status(p.servo_id, dxl.ERR_INSTRUCTION)]
                                    if self._answers(p.servo_id) else [])
            return self._finish(handler(self, p))

    def _finish(self, replies: list[bytes]) -> list[bytes]:
        out = []
        for r in replies:
            if self.corrupt_replies > 0:
                self.corrupt_replies -= 1
                r = r[:-1] + bytes([r[-1] ^ 0xFF])
            out.append(r)
        return out

    def _answers(self, sid: int) -> bool:
        return sid in self.servos and sid not in self.silent

    def _status(self, sid: int, error: int = 0, params: bytes = b"") -> bytes:
        if self.servos[sid].get(dxl.HARDWARE_ERROR_STATUS):
            error |= dxl.ERR_ALERT
        return dxl.status_packet(sid, error, params)

    def _read(self, sid: int, address: int, length: int) -> bytes:
        if address + length > dxl.CONTROL_TABLE_SIZE or length == 0:
            return self._status(sid, dxl.ERR_DATA_RANGE)
        return self._status(sid, 0, bytes(self.servos[sid].table[address:address + length]))

    def _write(self, sid: int, address: int, data: bytes) -> int:
        """Write into one servo's table with its side effects; returns the error number."""
        s = self.servos[sid]
        if address + len(data) > dxl.CONTROL_TABLE_SIZE or not data:
            return dxl.ERR_DATA_RANGE
        if s.torque and address < 64:
            return dxl.ERR_ACCESS  # EEPROM while the torque is on
        if any(address <= r < address + len(data) for r in _READ_ONLY) \
                or address + len(data) > _FIRST_STATE:
            return dxl.ERR_ACCESS  # read-only entries (and IDs stay fixed here)
        s.table[address:address + len(data)] = data
        a = self.actuator_of[sid]
        if _overlaps(address, len(data), dxl.TORQUE_ENABLE):
            if s.torque and s.get(dxl.HARDWARE_ERROR_STATUS):
                s.set(dxl.TORQUE_ENABLE, 0)  # a servo in error stays off until rebooted
                return dxl.ERR_RESULT_FAIL
            self._apply_goal(a)
        if any(_overlaps(address, len(data), f)
               for f in (dxl.GOAL_CURRENT, dxl.CURRENT_LIMIT, dxl.POSITION_P_GAIN)):
            self._apply_gains(a)
        if _overlaps(address, len(data), dxl.GOAL_POSITION):
            self._apply_goal(a)
        return 0

    def _ping(self, p: dxl.Packet) -> list[bytes]:
        ids = sorted(self.servos) if p.servo_id == dxl.BROADCAST_ID else [p.servo_id]
        return [self._status(i, 0, bytes(self.servos[i].table[0:3]))
                for i in ids if self._answers(i)]

    def _read_one(self, p: dxl.Packet) -> list[bytes]:
        if not self._answers(p.servo_id):
            return []
        if len(p.params) != 4:
            return [self._status(p.servo_id, dxl.ERR_DATA_LENGTH)]
        address, length = struct.unpack("<HH", p.params)
        return [self._read(p.servo_id, address, length)]

    def _write_one(self, p: dxl.Packet) -> list[bytes]:
        if p.servo_id == dxl.BROADCAST_ID:
            for sid in self.servos:
                self._write(sid, p.params[0] | p.params[1] << 8, p.params[2:])
            return []
        if not self._answers(p.servo_id):
            return []
        if len(p.params) < 3:
            return [self._status(p.servo_id, dxl.ERR_DATA_LENGTH)]
        err = self._write(p.servo_id, p.params[0] | p.params[1] << 8, p.params[2:])
        return [self._status(p.servo_id, err)]

    def _sync_read(self, p: dxl.Packet) -> list[bytes]:
        address, length = struct.unpack("<HH", p.params[:4])
        return [self._read(i, address, length) for i in p.params[4:] if self._answers(i)]

    def _sync_write(self, p: dxl.Packet) -> list[bytes]:
        address, length = struct.unpack("<HH", p.params[:4])
        body = p.params[4:]
        for k in range(0, len(body) - length, 1 + length):
            sid = body[k]
            if sid in self.servos and sid not in self.silent:
                self._write(sid, address, body[k + 1:k + 1 + length])
        return []

    def _bulk_read(self, p: dxl.Packet) -> list[bytes]:
        out = []
        for k in range(0, len(p.params) - 4, 5):
            sid, address, length = p.params[k], *struct.unpack("<HH", p.params[k + 1:k + 5])
            if self._answers(sid):
                out.append(self._read(sid, address, length))
        return out

    def _bulk_write(self, p: dxl.Packet) -> list[bytes]:
        k = 0
        while k + 5 <= len(p.params):
            sid, address, length = p.params[k], *struct.unpack("<HH", p.params[k + 1:k + 5])
            if sid in self.servos and sid not in self.silent:
                self._write(sid, address, p.params[k + 5:k + 5 + length])
            k += 5 + length
        return []

    def _reboot(self, p: dxl.Packet) -> list[bytes]:
        if not self._answers(p.servo_id):
            return []
        s = self.servos[p.servo_id]
        reply = [self._status(p.servo_id)]
        s.set(dxl.HARDWARE_ERROR_STATUS, 0)
        s.set(dxl.TORQUE_ENABLE, 0)
        return reply

    _HANDLERS = {dxl.PING: _ping, dxl.READ: _read_one, dxl.WRITE: _write_one,
                 dxl.SYNC_READ: _sync_read, dxl.SYNC_WRITE: _sync_write,
                 dxl.BULK_READ: _bulk_read, dxl.BULK_WRITE: _bulk_write, dxl.REBOOT: _reboot}


class PtyBus:
    """Serves an ``EmulatedHand`` on a pseudo-terminal, from a thread.

    ``port`` is the device a driver opens: the pty's own ``/dev/pts/N``, or ``link`` (a
    symlink kept pointing at the current pty, e.g. a stable path a driver is configured with,
    which survives ``unplug()``/``replug()`` as a USB adapter's by-id path does)."""

    def __init__(self, hand: EmulatedHand, link: str | Path | None = None) -> None:
        self.hand = hand
        self.link = Path(link) if link else None
        self.bytes_in = self.bytes_out = 0
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self._stop = threading.Event()
        self.pts = ""

    @property
    def port(self) -> str:
        return str(self.link) if self.link else self.pts

    def start(self) -> PtyBus:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.pts = os.ttyname(self._slave)
        if self.link:
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.pts)
            tmp.replace(self.link)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="dxl-emulator", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        parser = dxl.PacketParser()
        fd = self._master
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], 0.05)
                if not ready:
                    self.hand.advance()
                    continue
                data = os.read(fd, 4096)
            except OSError:
                return
            self.bytes_in += len(data)
            for p in parser.feed(data):
                out = b"".join(self.hand.handle(p))
                if out and self.hand.late_replies > 0:
                    self.hand.late_replies -= 1
                    time.sleep(self.hand.reply_delay_s)
                if out:
                    self.bytes_out += len(out)
                    try:
                        os.write(fd, out)
                    except OSError:
                        return

    def unplug(self) -> None:
        """As pulling the USB cable: the port disappears and open handles fail."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def replug(self) -> PtyBus:
        """A new pty (the servos keep their state, as they keep power)."""
        return self.start()

    stop = unplug

    def __enter__(self) -> PtyBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.unplug()
