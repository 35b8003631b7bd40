"""Dynamixel Protocol 2.0 (pure): packets, CRC-16, byte stuffing, the X-series control table.

The real-hand driver talks to servos through ROBOTIS' ``dynamixel_sdk``; this module is an
independent implementation of the same wire format for the servo side (the emulated hand the
driver is tested against, ``dex_sim.dxl_emulator``) and for reading captured bytes. Tested
against the SDK byte for byte, so a disagreement between the two shows up in the tests.

Packet layout (ROBOTIS e-Manual, "Protocol 2.0"):

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAM... | CRC_L CRC_H

``LEN`` counts INST, the (stuffed) parameters and the CRC. A status packet is an instruction
packet whose INST is 0x55, followed by an ERR byte. Inside INST..PARAM, every ``FF FF FD`` gets
an extra ``FD`` (byte stuffing) so a payload never looks like a header. The CRC (polynomial
0x8005, initial value 0, MSB first) covers everything from the header to the last parameter.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE

# Instructions
PING, READ, WRITE, REG_WRITE, ACTION, FACTORY_RESET, REBOOT, CLEAR = (
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x10)
STATUS = 0x55
SYNC_READ, SYNC_WRITE, FAST_SYNC_READ = 0x82, 0x83, 0x8A
BULK_READ, BULK_WRITE, FAST_BULK_READ = 0x92, 0x93, 0x9A
INSTRUCTION_NAMES = {PING: "ping", READ: "read", WRITE: "write", REG_WRITE: "reg_write",
                     ACTION: "action", FACTORY_RESET: "factory_reset", REBOOT: "reboot",
                     CLEAR: "clear", STATUS: "status", SYNC_READ: "sync_read",
                     SYNC_WRITE: "sync_write", FAST_SYNC_READ: "fast_sync_read",
                     BULK_READ: "bulk_read", BULK_WRITE: "bulk_write",
                     FAST_BULK_READ: "fast_bulk_read"}

# Status ERR byte: bit 7 (alert) = the servo's Hardware Error Status is non-zero; bits 0-6 = the
# processing result of this instruction.
ERR_ALERT = 0x80
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_DATA_RANGE, ERR_DATA_LENGTH, ERR_DATA_LIMIT, \
    ERR_ACCESS = 1, 2, 3, 4, 5, 6, 7

# Hardware Error Status (address 70) bits.
HW_INPUT_VOLTAGE, HW_OVERHEATING, HW_ENCODER, HW_ELECTRICAL_SHOCK, HW_OVERLOAD = (
    1 << 0, 1 << 2, 1 << 3, 1 << 4, 1 << 5)
HW_ERROR_NAMES = {HW_INPUT_VOLTAGE: "input voltage", HW_OVERHEATING: "overheating",
                  HW_ENCODER: "motor encoder", HW_ELECTRICAL_SHOCK: "electrical shock",
                  HW_OVERLOAD: "overload"}


@dataclass(frozen=True)
class Field:
    """One control-table entry: address, size in bytes, signed or not, EEPROM or RAM."""
    address: int
    size: int
    signed: bool = False

    @property
    def eeprom(self) -> bool:
        """EEPROM entries (below 64) are writable only with torque off."""
        return self.address < 64


# X-series control table (XC330 / XL330 / XM430 share these addresses), the entries we use.
MODEL_NUMBER = Field(0, 2)
FIRMWARE_VERSION = Field(6, 1)
ID = Field(7, 1)
BAUD_RATE = Field(8, 1)
RETURN_DELAY_TIME = Field(9, 1)  # unit: 2 us
OPERATING_MODE = Field(11, 1)  # 3 position, 5 current-based position
TEMPERATURE_LIMIT = Field(31, 1)
CURRENT_LIMIT = Field(38, 2)
SHUTDOWN = Field(63, 1)  # which hardware errors switch the torque off
TORQUE_ENABLE = Field(64, 1)
LED = Field(65, 1)
STATUS_RETURN_LEVEL = Field(68, 1)
HARDWARE_ERROR_STATUS = Field(70, 1)
POSITION_D_GAIN = Field(80, 2)
POSITION_I_GAIN = Field(82, 2)
POSITION_P_GAIN = Field(84, 2)
GOAL_CURRENT = Field(102, 2, signed=True)  # mA on XC330 (1 unit = 1 mA)
GOAL_POSITION = Field(116, 4, signed=True)
PRESENT_CURRENT = Field(126, 2, signed=True)
PRESENT_VELOCITY = Field(128, 4, signed=True)  # 0.229 rev/min per unit
PRESENT_POSITION = Field(132, 4, signed=True)  # 4096 per revolution, 2048 = pi
PRESENT_INPUT_VOLTAGE = Field(144, 2)  # 0.1 V
PRESENT_TEMPERATURE = Field(146, 1)  # deg C
CONTROL_TABLE_SIZE = 256

OPERATING_MODE_POSITION = 3
OPERATING_MODE_CURRENT_POSITION = 5
TICKS_PER_REV = 4096
VELOCITY_UNIT_RPM = 0.229


def encode(field: Field, value: int) -> bytes:
    """``value`` as the field's little-endian bytes (range-checked)."""
    fmt = {1: "b", 2: "h", 4: "i"}[field.size]
    return struct.pack("<" + (fmt if field.signed else fmt.upper()), int(value))


def decode(field: Field, data: bytes) -> int:
    fmt = {1: "b", 2: "h", 4: "i"}[field.size]
    return struct.unpack("<" + (fmt if field.signed else fmt.upper()), bytes(data))[0]


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/BUYPASS (poly 0x8005, init 0, not reflected): Protocol 2.0's checksum."""
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert 0xFD after every FF FF FD (the INST..PARAM field)."""
    out = bytearray()
    run = 0  # length of the FF FF FD prefix matched so far
    for b in body:
        out.append(b)
        if run < 2:
            run = run + 1 if b == 0xFF else 0
        else:  # seen FF FF
            if b == 0xFD:
                out.append(0xFD)
                run = 0
            else:
                run = 2 if b == 0xFF else 0
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Remove the 0xFD that stuffing put after each FF FF FD."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and i >= 2 and body[i - 2] == 0xFF and body[i - 1] == 0xFF \
                and i + 1 < len(body) and body[i + 1] == 0xFD:
            i += 1  # skip the stuffed byte
        i += 1
    return bytes(out)


def packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A whole instruction (or, with ``STATUS``, status) packet: header, stuffing, CRC."""
    body = stuff(bytes([instruction]) + bytes(params))
    head = HEADER + bytes([servo_id]) + struct.pack("<H", len(body) + 2)
    crc = crc16(head + body)
    return head + body + struct.pack("<H", crc)


def status_packet(servo_id: int, error: int = 0, params: bytes = b"") -> bytes:
    return packet(servo_id, STATUS, bytes([error]) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """A parsed packet: ``params`` unstuffed; for a status packet ``error`` is the ERR byte
    (and not part of ``params``)."""
    servo_id: int
    instruction: int
    params: bytes
    error: int | None = None
    raw: bytes = b""


class PacketError(ValueError):
    """A framed packet whose CRC or length is wrong."""

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(message)
        self.raw = raw


class PacketParser:
    """Splits a byte stream into packets. Bytes before a header are skipped (line noise); a
    packet with a bad CRC is reported as ``PacketError`` and skipped, so the stream resyncs."""

    MAX_LENGTH = 1024

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0  # bytes discarded while looking for a header

    def feed(self, data: bytes) -> list[Packet | PacketError]:
        self._buf += data
        out: list[Packet | PacketError] = []
        while True:
            i = self._buf.find(HEADER)
            if i < 0:
                keep = 3  # a header may be split across reads
                self.skipped += max(0, len(self._buf) - keep)
                del self._buf[:max(0, len(self._buf) - keep)]
                return out
            self.skipped += i
            del self._buf[:i]
            if len(self._buf) < 7:
                return out
            length = self._buf[5] | self._buf[6] << 8
            if length < 3 or length > self.MAX_LENGTH:
                out.append(PacketError(f"impossible length {length}", bytes(self._buf[:7])))
                del self._buf[:4]  # skip this header; look for the next one
                continue
            total = 7 + length
            if len(self._buf) < total:
                return out
            raw = bytes(self._buf[:total])
            del self._buf[:total]
            want = raw[-2] | raw[-1] << 8
            got = crc16(raw[:-2])
            if want != got:
                out.append(PacketError(f"CRC mismatch (packet {want:#06x}, computed {got:#06x})",
                                       raw))
                continue
            body = unstuff(raw[7:-2])
            inst = body[0]
            if inst == STATUS:
                if len(body) < 2:
                    out.append(PacketError("status packet without an error byte", raw))
                    continue
                out.append(Packet(raw[4], inst, bytes(body[2:]), body[1], raw))
            else:
                out.append(Packet(raw[4], inst, bytes(body[1:]), None, raw))


def describe_hardware_error(bits: int) -> str:
    """Hardware Error Status bits → words (``"overload, overheating"``)."""
    names = [n for b, n in HW_ERROR_NAMES.items() if bits & b]
    return ", ".join(names) if names else "none"


def bytes_per_cycle(n_servos: int, read_len: int, write_len: int) -> dict[str, int]:
    """Bytes on the wire for one control cycle: one sync read of ``read_len`` bytes from each
    servo (instruction + a status packet per servo) and one sync write of ``write_len`` bytes
    to each. Stuffing is ignored (payload-dependent, rare)."""
    # header (4), id, length (2), instruction, CRC (2): 10 bytes around every instruction's
    # parameters; a status packet adds the error byte.
    sync_read = 10 + 4 + n_servos  # address, length, one id per servo
    status = 11 + read_len
    sync_write = 10 + 4 + n_servos * (1 + write_len)
    return {"sync_read": sync_read, "status": n_servos * status, "sync_write": sync_write,
            "total": sync_read + n_servos * status + sync_write}
