"""Dynamixel Protocol 2.0: our codec against ROBOTIS' SDK, byte for byte; the emulated LEAP hand
on a real pseudo-terminal, driven by the SDK-based driver."""

from __future__ import annotations

import math
import os
import time

import dynamixel_sdk as sdk
import numpy as np
import pytest

from dex_common import dynamixel as dxl
from dex_description.registry import LEAP_SERVOS, get_hand, get_servo_map
from dex_hardware.dynamixel_bus import BusDisconnected, BusError, DynamixelBus
from dex_hardware.leap import LeapConfig, LeapHand
from dex_sim.dxl_emulator import EmulatedHand, PtyBus


class CapturePort:
    """Stands in for the SDK's PortHandler to capture the bytes it would send."""

    def __init__(self) -> None:
        self.sent = b""
        self.is_using = False
        self.baudrate = 4_000_000

    def clearPort(self) -> None:  # noqa: N802 - SDK API
        pass

    def writePort(self, packet: list[int]) -> int:  # noqa: N802
        self.sent += bytes(packet)
        return len(packet)

    def setPacketTimeout(self, n: int) -> None:  # noqa: N802
        pass


def test_crc_matches_sdk_and_known_vector() -> None:
    ph = sdk.PacketHandler(2.0)
    # e-Manual's ping example: FF FF FD 00 01 03 00 01 -> CRC 0x4E19 (bytes 19 4E)
    assert dxl.crc16(bytes.fromhex("FFFFFD0001030001")) == 0x4E19
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 300):
        data = rng.integers(0, 256, n).tolist()
        assert dxl.crc16(bytes(data)) == ph.updateCRC(0, data, n)


def test_instruction_packets_equal_the_sdks() -> None:
    """A write packet built by our codec equals the SDK's bytes on the wire."""
    port = CapturePort()
    sdk.PacketHandler(2.0).writeTxOnly(port, 3, 116, 4, [0x10, 0x08, 0, 0])
    assert port.sent == dxl.packet(3, dxl.WRITE, bytes([116, 0, 0x10, 0x08, 0, 0]))
    (p,) = dxl.PacketParser().feed(port.sent)
    assert (p.servo_id, p.instruction, p.params) == (3, dxl.WRITE, bytes([116, 0, 16, 8, 0, 0]))


@pytest.mark.parametrize("body", [b"\x03\xff\xff\xfd\x10", b"\x03\xff\xff\xff\xfd\xff\xff\xfd",
                                  b"\x03\xfd\xff\xff\xfd\xfd"])
def test_byte_stuffing_equals_the_sdks_and_round_trips(body: bytes) -> None:
    ph = sdk.PacketHandler(2.0)
    raw = [0xFF, 0xFF, 0xFD, 0, 1, *divmod(len(body) + 2, 256)[::-1], *body, 0, 0]
    theirs = ph.addStuffing(raw)
    assert bytes(theirs[7:-2]) == dxl.stuff(body)
    assert dxl.unstuff(dxl.stuff(body)) == body


def test_sdk_sends_unstuffed_packets_so_the_bus_refuses_such_payloads(emulated) -> None:
    """dynamixel_sdk's Python txPacket drops addStuffing's result when stuffing lengthens the
    packet (it rebinds a local list), so a payload holding FF FF FD goes out unstuffed, with
    a length the servo misreads. Our bus refuses to send such a payload rather than let the
    SDK corrupt it (no LEAP write needs one: positions, gains and currents are < 0xFFFF)."""
    port = CapturePort()
    sdk.PacketHandler(2.0).writeTxOnly(port, 3, 116, 4, [0xFF, 0xFF, 0xFD, 0x00])
    assert port.sent != dxl.packet(3, dxl.WRITE, bytes([116, 0, 0xFF, 0xFF, 0xFD, 0]))
    assert b"\xff\xff\xfd\x00" in port.sent[4:]  # a second header inside the packet
    b = _bus(emulated[1].port)
    with pytest.raises(BusError, match="stuffing"):
        b.sync_write(dxl.GOAL_POSITION, {i: 0x00FDFFFF for i in b.ids})
    b.close()


def test_stuffed_status_replies_reach_the_sdk_intact(emulated) -> None:
    """Goal Current -1 (FF FF) then a Goal Velocity byte FD: the servo side stuffs the reply
    and the SDK removes it again."""
    hand, pty = emulated
    b = _bus(pty.port)
    b.write(2, dxl.GOAL_CURRENT, -1)
    b.write(2, dxl.Field(104, 4), 0xFD)
    data, result, error = b.ph.readTxRx(b.port, 2, 102, 6)
    assert result == sdk.COMM_SUCCESS and bytes(data) == b"\xff\xff\xfd\x00\x00\x00"
    b.close()


def test_sync_write_and_sync_read_packets_equal_the_sdks() -> None:
    port, ph = CapturePort(), sdk.PacketHandler(2.0)
    param = [0, 0, 8, 0, 0, 1, 0xFF, 0x0F, 0, 0]
    ph.syncWriteTxOnly(port, 116, 4, param, len(param))
    assert port.sent == dxl.packet(dxl.BROADCAST_ID, dxl.SYNC_WRITE,
                                   b"\x74\x00\x04\x00" + bytes(param))
    port.sent = b""
    ph.syncReadTx(port, 126, 10, [0, 1, 2], 3, False)
    assert port.sent == dxl.packet(dxl.BROADCAST_ID, dxl.SYNC_READ, bytes([126, 0, 10, 0, 0, 1, 2]))


def test_parser_resyncs_after_noise_and_a_bad_crc() -> None:
    good = dxl.status_packet(5, 0, b"\x01\x02")
    bad = bytearray(good)
    bad[-1] ^= 0x01
    parser = dxl.PacketParser()
    out = parser.feed(b"\x00\x13" + bytes(bad) + good[:6])
    out += parser.feed(good[6:])
    assert isinstance(out[0], dxl.PacketError) and "CRC" in str(out[0])
    assert isinstance(out[1], dxl.Packet) and out[1].error == 0 and out[1].params == b"\x01\x02"
    assert parser.skipped == 2


def test_servo_map_matches_leap_ids() -> None:
    """LEAP's convention: MCP side of index is ID 0 (our if_rot), MCP forward of ring is 9
    (rf_mcp), DIP of ring is 11 (rf_dip); pi is the open hand."""
    spec = get_hand("leap")
    m = get_servo_map("leap")
    by_name = dict(zip(spec.actuator_names, m.ids, strict=True))
    assert by_name["if_rot"] == 0 and by_name["if_mcp"] == 1
    assert by_name["rf_mcp"] == 9 and by_name["rf_dip"] == 11
    assert sorted(by_name[f"{f}_rot"] for f in ("if", "mf", "rf")) == list(m.side_to_side)
    assert sorted(m.ids) == list(range(16))
    q = np.linspace(-0.3, 0.3, 16)
    assert np.allclose(m.from_servo(m.to_servo(q)), q)
    assert np.allclose(m.to_servo(np.zeros(16)), math.pi)
    with pytest.raises(KeyError, match="no servo map"):
        get_servo_map("shadow")


@pytest.fixture
def emulated():
    hand = EmulatedHand("leap")
    bus = PtyBus(hand).start()
    yield hand, bus
    bus.unplug()


# The emulator answers from a Python thread: on a loaded machine that can take longer than a
# servo's microseconds, so these buses allow the reply time of a 40 ms latency timer.
LATENCY_MS = 40.0


def _bus(port: str) -> DynamixelBus:
    b = DynamixelBus(port, 4_000_000, list(LEAP_SERVOS.ids), latency_timer_ms=LATENCY_MS)
    b.open()
    return b


def test_sdk_pings_reads_and_writes_the_emulated_servos(emulated) -> None:
    hand, pty = emulated
    b = _bus(pty.port)
    assert b.ping(0) == 1240 and b.missing() == []
    r = b.sync_read([dxl.PRESENT_CURRENT, dxl.PRESENT_VELOCITY, dxl.PRESENT_POSITION])
    assert r.values.shape == (16, 3) and np.all(r.errors == 0)
    # Present Position is the model's pose in servo ticks (pi = 2048 = open hand).
    expect = LEAP_SERVOS.to_servo(hand.spec.actuation_matrix() @ hand.sim.joint_positions())
    assert np.allclose(r.values[:, 2] * 2 * math.pi / 4096, expect, atol=2e-3)
    with pytest.raises(BusError, match="not available") as e:  # EEPROM, torque on
        b.sync_write(dxl.TORQUE_ENABLE, [1] * 16)
        b.write(4, dxl.OPERATING_MODE, 5)
    assert e.value.servo_id == 4
    b.close()


def test_servos_follow_goal_position_under_the_current_limit(emulated) -> None:
    hand, pty = emulated
    b = _bus(pty.port)
    b.sync_write(dxl.TORQUE_ENABLE, [1] * 16)
    goal = np.full(16, 2048 + 250)  # every joint 0.38 rad closed
    b.sync_write(dxl.GOAL_POSITION, goal.tolist())
    time.sleep(0.6)
    pos = b.sync_read([dxl.PRESENT_POSITION]).values[:, 0]
    assert np.all(np.abs(pos - goal) < 25), pos - goal
    # A 1 mA current cap leaves the fingers unable to hold against gravity and contact.
    b.sync_write(dxl.GOAL_CURRENT, [1] * 16)
    b.sync_write(dxl.GOAL_POSITION, [2048 + 900] * 16)
    time.sleep(0.5)
    weak = b.sync_read([dxl.PRESENT_POSITION]).values[:, 0]
    assert np.mean(np.abs(weak - (2048 + 900))) > 200
    b.close()


def test_driver_reports_silent_servos_corrupt_replies_and_hardware_errors(emulated) -> None:
    hand, pty = emulated
    b = _bus(pty.port)
    hand.corrupt_replies = 1
    with pytest.raises(BusError, match="Incorrect status packet"):
        b.ping(3)
    assert b.ping(3) == 1240  # the next exchange is clean
    hand.silent.add(7)
    with pytest.raises(BusError) as e:
        b.sync_read([dxl.PRESENT_POSITION])
    assert e.value.servo_id == 7 and b.missing() == [7]
    hand.silent.clear()
    hand.set_hardware_error(12, dxl.HW_OVERLOAD)
    r = b.sync_read([dxl.PRESENT_POSITION])
    assert [i for i, err in zip(b.ids, r.errors, strict=True) if err & dxl.ERR_ALERT] == [12]
    assert b.read(12, dxl.HARDWARE_ERROR_STATUS) == dxl.HW_OVERLOAD
    b.reboot(12)
    assert b.read(12, dxl.HARDWARE_ERROR_STATUS) == 0
    b.close()


def test_a_late_reply_is_never_taken_for_the_next_answer(emulated) -> None:
    """A reply that misses the driver's timeout (a slow USB adapter) arrives while the driver
    already asks the next question; Protocol 2.0 replies do not say which request they answer.
    The driver waits it out and drops it, so the next read gets its own answer."""
    hand, pty = emulated
    b = _bus(pty.port)
    truth = b.read(3, dxl.PRESENT_TEMPERATURE)
    hand.late_replies, hand.reply_delay_s = 1, (2 * LATENCY_MS + 2 + 30) / 1000  # past timeout
    with pytest.raises(BusError, match="no status packet"):
        b.read(3, dxl.PRESENT_POSITION)  # 4 bytes, late
    assert b.read(3, dxl.PRESENT_TEMPERATURE) == truth  # 1 byte: its own, not the stale one
    r = b.sync_read([dxl.PRESENT_POSITION])
    assert r.values.shape == (16, 1)
    b.close()


def test_unplug_is_a_disconnect_and_replug_serves_the_same_servos(tmp_path) -> None:
    hand = EmulatedHand("leap")
    pty = PtyBus(hand, link=tmp_path / "ttyUSB0").start()
    b = _bus(pty.port)
    b.sync_write(dxl.GOAL_CURRENT, [123] * 16)
    b.ping(0)  # a round trip: the unanswered sync write has been handled
    pty.unplug()
    assert not os.path.exists(pty.port)
    with pytest.raises(BusDisconnected):
        for _ in range(3):
            b.sync_read([dxl.PRESENT_POSITION])
    with pytest.raises(BusDisconnected, match="cannot open"):
        b.open()
    pty.replug()
    b.open()
    assert b.read(5, dxl.GOAL_CURRENT) == 123  # the servos kept power and their tables
    b.close()
    pty.unplug()


def _configured(port: str, **cfg: object) -> LeapHand:
    drv = LeapHand(LeapConfig(port=port, **cfg))
    drv.connect()
    drv.configure()
    return drv


def test_leap_configure_writes_leaps_settings(emulated) -> None:
    hand, pty = emulated
    drv = _configured(pty.port, current_limit_ma=300)
    for sid in range(16):
        side = sid in (0, 4, 8)
        assert hand.value(sid, dxl.OPERATING_MODE) == 5
        assert hand.value(sid, dxl.POSITION_P_GAIN) == (600 if side else 800)
        assert hand.value(sid, dxl.POSITION_D_GAIN) == (150 if side else 200)
        assert hand.value(sid, dxl.POSITION_I_GAIN) == 0
        assert hand.value(sid, dxl.GOAL_CURRENT) == 300
        assert hand.value(sid, dxl.RETURN_DELAY_TIME) == 0
        assert hand.value(sid, dxl.TORQUE_ENABLE) == 0
    drv.close()


def test_leap_command_goes_through_the_guard(emulated) -> None:
    hand, pty = emulated
    drv = _configured(pty.port, max_step=0.1)
    here = drv.read().positions
    drv.reset_guard(here)
    ok, written, _ = drv.command(here + 1.0)  # a jump: rate limited to 0.1 rad
    assert ok and np.allclose(written, np.clip(here + 0.1, *drv.guard.spec.actuator_limits()))
    ok, held, reason = drv.command(np.full(16, np.nan))
    assert not ok and "non-finite" in reason and np.allclose(held, written)
    drv.read()  # a round trip: the emulator has handled the (unanswered) sync writes
    ticks = hand.goal_positions()
    assert np.allclose(LEAP_SERVOS.from_servo(ticks * 2 * math.pi / 4096), written, atol=2e-3)
    drv.close()


def test_config_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="operating_mode.*current_limit_ma"):
        LeapConfig(operating_mode=1, current_limit_ma=0).validate()
    with pytest.raises(ValueError, match="side_ids"):
        LeapConfig(side_ids=(0, 40)).validate()


def test_bytes_per_cycle() -> None:
    # 16 servos: sync read of 10 bytes (current, velocity, position), sync write of 4.
    c = dxl.bytes_per_cycle(16, 10, 4)
    assert c == {"sync_read": 30, "status": 16 * 21, "sync_write": 94,
                 "total": 30 + 336 + 94}


def test_bus_bench_runs_and_reports_the_wire_limit(capsys) -> None:
    from dex_hardware.bench_bus import main

    assert main(["--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "cycles/s" in out and "460" in out and "at most 870 cycles/s" in out
