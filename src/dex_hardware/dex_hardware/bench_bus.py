"""Benchmark the LEAP driver's control cycle against the emulated hand on a pseudo-terminal.

    dex-hardware-bench [--seconds 5] [--json out.json]

Measures, in one run:
- the cycle rate the driver sustains flat out (one sync read of current/velocity/position from
  16 servos + one guarded sync write of goal positions), and its p50/p99 cycle time;
- command-to-motion latency: from the write of a step in goal position to the first read whose
  position moved 0.02 rad toward it;
- the protocol's bytes per cycle and the cycle rate the physical bus would allow at the
  configured baud rate (10 bits per byte on the wire), so the report says how far the emulated
  bus (a pty, no wire time) is from that limit. Latency of a real U2D2 adapter (USB latency
  timer, 1-16 ms) is not modelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dex_common import dynamixel as dxl
from dex_hardware.leap import STATE_FIELDS, LeapConfig, LeapHand


def run(seconds: float, baudrate: int) -> dict:
    from dex_sim.dxl_emulator import EmulatedHand, PtyBus  # the emulator needs the sim

    hand = EmulatedHand("leap")
    with tempfile.TemporaryDirectory() as tmp, PtyBus(hand, Path(tmp) / "ttyLEAP") as bus:
        drv = LeapHand(LeapConfig(port=bus.port, baudrate=baudrate))
        drv.connect()
        drv.configure()
        here = drv.read().positions
        drv.reset_guard(here)
        drv.command(here)
        drv.torque(True, verify=True)
        # Flat-out cycles.
        times = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            drv.read()
            drv.command(here)
            times.append(time.perf_counter() - t0)
        # Command-to-motion latency: steps of +-0.3 rad on every joint.
        lat = []
        for k in range(10):
            goal = here + (0.3 if k % 2 == 0 else 0.0)
            start = drv.read().positions
            t0 = time.perf_counter()
            drv.command(goal)
            while time.perf_counter() - t0 < 1.0:
                p = drv.read().positions
                if np.median(np.abs(p - start)) > 0.02:
                    lat.append(time.perf_counter() - t0)
                    break
            time.sleep(0.3)
        drv.torque(False)
        drv.close()
        bytes_in, bytes_out = bus.bytes_in, bus.bytes_out
    n = len(drv.ids)
    read_len = STATE_FIELDS[-1].address + STATE_FIELDS[-1].size - STATE_FIELDS[0].address
    per_cycle = dxl.bytes_per_cycle(n, read_len, dxl.GOAL_POSITION.size)
    wire_s = per_cycle["total"] * 10 / baudrate
    t = np.asarray(times)
    return {
        "cycles": len(t), "rate_hz": len(t) / t.sum(),
        "cycle_p50_ms": 1e3 * float(np.median(t)), "cycle_p99_ms": 1e3 * float(np.percentile(t, 99)),
        "latency_p50_ms": 1e3 * float(np.median(lat)) if lat else None,
        "latency_samples": len(lat),
        "bytes_per_cycle": per_cycle, "baudrate": baudrate,
        "wire_time_per_cycle_ms": 1e3 * wire_s, "wire_limit_hz": 1 / wire_s,
        "emulated_over_wire_limit": (len(t) / t.sum()) * wire_s,
        "bytes_seen": {"to_servos": bytes_in, "from_servos": bytes_out},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--baudrate", type=int, default=4_000_000)
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    r = run(a.seconds, a.baudrate)
    b = r["bytes_per_cycle"]
    print(f"driver cycle (sync read 16 x 10 B + sync write 16 x 4 B) on the emulated bus:\n"
          f"  {r['rate_hz']:.0f} cycles/s over {r['cycles']} cycles; p50 {r['cycle_p50_ms']:.2f} "
          f"ms, p99 {r['cycle_p99_ms']:.2f} ms")
    if r["latency_p50_ms"] is not None:
        print(f"  command-to-motion (0.02 rad) p50 {r['latency_p50_ms']:.1f} ms "
              f"({r['latency_samples']} steps)")
    print(f"protocol bytes per cycle: {b['total']} (sync read {b['sync_read']}, 16 status "
          f"{b['status']}, sync write {b['sync_write']})\n"
          f"  at {r['baudrate']:,} baud: {r['wire_time_per_cycle_ms']:.2f} ms on the wire "
          f"-> at most {r['wire_limit_hz']:.0f} cycles/s; the emulated rate is "
          f"{r['emulated_over_wire_limit']:.2f}x that limit (a real bus adds servo return "
          f"delays and the USB adapter's latency)")
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
