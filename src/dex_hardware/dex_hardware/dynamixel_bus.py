"""A Dynamixel Protocol 2.0 bus through ROBOTIS' dynamixel_sdk: the calls a hand driver makes.

Thin on purpose: the SDK builds and parses every byte; this class turns its result codes into
exceptions that name the servo and the failure, reads each servo's status ERR byte (the SDK's
group reader drops it, and its alert bit is how a servo says it has a hardware error), and
tells an unplugged adapter (``BusDisconnected``) from a servo that did not answer
(``BusError``).
"""

from __future__ import annotations

import termios
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dynamixel_sdk as sdk
import numpy as np
import serial

from dex_common import dynamixel as dxl


class BusError(RuntimeError):
    """A servo did not answer, answered garbage, or reported an instruction error."""

    def __init__(self, message: str, servo_id: int | None = None) -> None:
        super().__init__(message)
        self.servo_id = servo_id


class BusDisconnected(BusError):
    """The serial port itself failed (adapter unplugged, port gone)."""


@dataclass
class ReadResult:
    """One sync read: the field values per servo (ids order) and the servos' ERR bytes."""
    values: np.ndarray  # [n_servos, n_fields] int64
    errors: np.ndarray  # [n_servos] status ERR byte (bit 7: hardware error alert)
    stamp: float  # time.monotonic() when the reply was complete


class _Port(sdk.PortHandler):
    """The SDK's port, its reply timeout computed from this bus's USB latency timer (the SDK
    assumes the FTDI default, 16 ms; a port set lower can poll faster, an emulator or a loaded
    machine may need more)."""

    latency_ms = 16.0

    def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 - the SDK's name
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * self.latency_ms + 2.0


class DynamixelBus:
    """The servos ``ids`` on one serial port (Protocol 2.0). ``latency_timer_ms``: the USB
    adapter's latency timer, which sets how long a reply may take."""

    def __init__(self, port: str, baudrate: int, ids: Sequence[int],
                 latency_timer_ms: float = 16.0) -> None:
        self.port_name = port
        self.baudrate = int(baudrate)
        self.ids = [int(i) for i in ids]
        self.latency_ms = float(latency_timer_ms)
        self.ph = sdk.PacketHandler(2.0)
        self.port: sdk.PortHandler | None = None

    # ---- port --------------------------------------------------------------------------------
    def open(self) -> None:
        self.close()
        port = _Port(self.port_name)
        port.latency_ms = self.latency_ms
        try:
            ok = port.openPort() and port.setBaudRate(self.baudrate)
        except (serial.SerialException, OSError) as e:
            raise BusDisconnected(f"cannot open {self.port_name}: {e}") from e
        if not ok:
            raise BusDisconnected(f"cannot open {self.port_name} at {self.baudrate} baud")
        self.port = port

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.closePort()
            except (serial.SerialException, OSError):
                pass
            self.port = None

    def _port(self) -> sdk.PortHandler:
        if self.port is None:
            raise BusDisconnected(f"{self.port_name} is not open")
        return self.port

    def _call(self, fn, *args):  # noqa: ANN001, ANN202 - SDK call → its result tuple
        """One SDK call; a serial failure becomes ``BusDisconnected`` (and closes the port)."""
        try:
            return fn(*args)
        except (serial.SerialException, OSError, TypeError, termios.error) as e:
            # TypeError: the SDK reads from a closed pyserial port (fd None) on some paths.
            self.close()
            raise BusDisconnected(f"serial port {self.port_name} failed: {e}") from e

    def _drain(self) -> None:
        """After a failed transaction: wait out any late reply, then drop what arrived, so it
        is never taken for the answer to the next request (Protocol 2.0 replies do not say
        which request they answer)."""
        time.sleep(2e-3 * self.latency_ms + 2e-3)
        if self.port is not None:
            self._call(self.port.clearPort)

    def _check(self, result: int, error: int, what: str, servo_id: int | None) -> None:
        if result != sdk.COMM_SUCCESS:
            self._drain()
            raise BusError(f"{what}: {self.ph.getTxRxResult(result)}", servo_id)
        if error & 0x7F:
            raise BusError(f"{what}: servo {servo_id} {self.ph.getRxPacketError(error & 0x7F)}",
                           servo_id)

    # ---- instructions ------------------------------------------------------------------------
    def ping(self, servo_id: int) -> int:
        """Model number of ``servo_id`` (``BusError`` if it does not answer)."""
        model, result, error = self._call(self.ph.ping, self._port(), servo_id)
        self._check(result, error, f"ping {servo_id}", servo_id)
        return int(model)

    def missing(self) -> list[int]:
        """The servos of this bus that do not answer a ping."""
        out = []
        for i in self.ids:
            try:
                self.ping(i)
            except BusDisconnected:
                raise
            except BusError:
                out.append(i)
        return out

    def write(self, servo_id: int, field: dxl.Field, value: int) -> int:
        """Write one servo's field, wait for its status; returns its ERR byte (alert bit)."""
        data = list(dxl.encode(field, value))
        result, error = self._call(self.ph.writeTxRx, self._port(), servo_id, field.address,
                                   field.size, data)
        self._check(result, error, f"write {field.address} to servo {servo_id}", servo_id)
        return int(error)

    def read(self, servo_id: int, field: dxl.Field) -> int:
        data, result, error = self._call(self.ph.readTxRx, self._port(), servo_id,
                                         field.address, field.size)
        self._check(result, error, f"read {field.address} from servo {servo_id}", servo_id)
        if len(data) != field.size:
            self._drain()
            raise BusError(f"read {field.address} from servo {servo_id}: a {len(data)}-byte "
                           f"reply (a late answer to an earlier request?)", servo_id)
        return dxl.decode(field, bytes(data))

    def sync_write(self, field: dxl.Field, values: dict[int, int] | Iterable[int],
                   ids: Sequence[int] | None = None) -> None:
        """One sync-write packet: ``field`` of each servo (no replies on the bus)."""
        ids = self.ids if ids is None else list(ids)
        vals = values if isinstance(values, dict) else dict(zip(ids, values, strict=True))
        param: list[int] = []
        for i in ids:
            param += [i, *dxl.encode(field, vals[i])]
        if dxl.stuff(bytes(param)) != bytes(param):
            # The SDK's txPacket ignores addStuffing's longer packet and would send this
            # unstuffed: a header inside the packet, misread by every servo.
            raise BusError(f"sync write {field.address}: payload needs byte stuffing, which "
                           f"dynamixel_sdk's Python txPacket does not send; refused")
        result = self._call(self.ph.syncWriteTxOnly, self._port(), field.address, field.size,
                            param, len(param))
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"sync write {field.address}: {self.ph.getTxRxResult(result)}")

    def sync_read(self, fields: Sequence[dxl.Field]) -> ReadResult:
        """One sync read of the contiguous ``fields`` from every servo (ids order).

        A servo that does not answer (or answers with a bad CRC) raises ``BusError`` naming
        it; the replies before it are discarded."""
        start = fields[0].address
        length = fields[-1].address + fields[-1].size - start
        port = self._port()
        result = self._call(self.ph.syncReadTx, port, start, length, list(self.ids),
                            len(self.ids), False)
        if result != sdk.COMM_SUCCESS:
            raise BusError(f"sync read {start}+{length}: {self.ph.getTxRxResult(result)}")
        values = np.zeros((len(self.ids), len(fields)), np.int64)
        errors = np.zeros(len(self.ids), np.int64)
        for k, i in enumerate(self.ids):
            data, result, error = self._call(self.ph.readRx, port, i, length)
            if result != sdk.COMM_SUCCESS:
                self._drain()
                raise BusError(f"sync read {start}+{length}: servo {i}: "
                               f"{self.ph.getTxRxResult(result)}", i)
            raw = bytes(data)
            if len(raw) != length:  # a valid packet, but not this request's answer
                self._drain()
                raise BusError(f"sync read {start}+{length}: servo {i}: a {len(raw)}-byte "
                               f"reply (a late answer to an earlier request?)", i)
            for j, f in enumerate(fields):
                values[k, j] = dxl.decode(f, raw[f.address - start:f.address - start + f.size])
            errors[k] = error
        return ReadResult(values, errors, time.monotonic())

    def reboot(self, servo_id: int) -> None:
        result, error = self._call(self.ph.reboot, self._port(), servo_id)
        self._check(result, error, f"reboot {servo_id}", servo_id)
