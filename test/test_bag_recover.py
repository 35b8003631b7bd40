"""A recorder killed with SIGKILL mid-trial: its bag is unreadable until ``dex bag-recover``
rebuilds it from the MCAP chunks on disk; what the kill cost is measured and bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dex_bringup.bag_recover import bag_dirs, recover
from dex_bringup.bagging import read_bag
from dex_bringup.cli import main as dex_main

# A child writing one trial's bag through the recorder's own sink (RosbagsSink, MCAP): camera
# images (64 KiB each, so 1 MiB chunks fill every ~16) and a /trial/status per step.
WRITER = textwrap.dedent("""
    import sys, time
    from rclpy.serialization import serialize_message
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import Image
    from dex_bringup.bagging import RosbagsSink

    sink = RosbagsSink(sys.argv[1])
    img = Image(height=128, width=128, encoding="rgb8", step=384, data=bytes(128 * 384))
    for k in range(10_000):
        t = 1_000_000_000 + k * 80_000_000
        img.header.stamp.sec, img.header.stamp.nanosec = divmod(t, 1_000_000_000)
        sink.write("trial_000", "/cameras/cam0/image_raw", "sensor_msgs/msg/Image", t,
                   serialize_message(img))
        st = DiagnosticArray(status=[DiagnosticStatus(name="trial", message="running", values=[
            KeyValue(key="trial", value="0"), KeyValue(key="seed", value="4"),
            KeyValue(key="steps", value=str(k + 1))])])
        sink.write("trial_000", "/trial/status", "diagnostic_msgs/msg/DiagnosticArray", t,
                   serialize_message(st))
        print(k + 1, flush=True)
        if k >= 120:
            time.sleep(0.01)  # waits for the kill
""")


def test_sigkilled_recorder_bag_is_recovered(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bags"
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    written = 0
    for line in child.stdout:
        written = int(line)
        if written >= 150:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    time.sleep(0.1)
    bag = out / "trial_000"
    with pytest.raises(FileNotFoundError, match="dex bag-recover"):
        read_bag(bag)  # as the recorder left it: no metadata, no MCAP summary

    assert dex_main(["bag-recover", str(out)]) == 0
    line = capsys.readouterr().out
    assert "recovered" in line and "trial_000.damaged" in line
    counts, custom = read_bag(bag)
    n_images = counts["/cameras/cam0/image_raw"]
    # Everything in complete chunks survived: at most the open 1 MiB chunk (16 images) and
    # what was still in the file buffer was lost.
    assert written - 17 - 16 <= n_images <= written, (n_images, written)
    n_status = counts["/trial/status"]
    assert n_status in (n_images - 1, n_images)  # a chunk may end between a step's two messages
    assert custom["recovered"] == "true" and custom["trial"] == "0" and custom["seed"] == "4"
    assert int(custom["steps"]) == n_status  # the last status that reached the disk
    assert (out / "trial_000.damaged").is_dir()  # the original is kept
    print(f"SIGKILL after {written} steps: {n_images} recovered, {written - n_images} lost")

    # A second pass finds it intact and changes nothing.
    assert recover(bag).state == "intact"
    assert bag_dirs(out) == [bag]
