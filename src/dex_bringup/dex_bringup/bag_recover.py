"""``dex bag-recover DIR``: make the bags of a killed recorder readable (like ``ros2 bag reindex``).

A recorder killed mid-trial leaves its bag without ``metadata.yaml`` and its MCAP file without a
summary, so no rosbag2 reader opens it. This reads the MCAP file record by record (the ``mcap``
library's stream reader) up to its last complete chunk, writes those messages into a fresh
rosbag2 (same writer as the recorder), and keeps the original beside it as ``<bag>.damaged``:
nothing is deleted. The outcome the recorder would have written at the trial's end is taken from
the last /trial/status in the bag, marked ``recovered: true``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from dex_bringup.bagging import RosbagsSink, read_bag

STATUS_TOPIC = "/trial/status"


@dataclass
class Recovery:
    bag: Path
    state: str  # "intact" | "recovered" | "unreadable"
    messages: int = 0
    topics: int = 0
    tail_bytes: int = 0  # bytes after the last complete record (what the kill cut off)
    note: str = ""

    def line(self) -> str:
        if self.state == "recovered":
            return (f"{self.bag}: recovered {self.messages} messages on {self.topics} topics "
                    f"({self.tail_bytes} bytes of an unfinished chunk lost; the original is "
                    f"{self.bag.name}.damaged)")
        return f"{self.bag}: {self.state}" + (f" ({self.note})" if self.note else "")


def bag_dirs(root: Path) -> list[Path]:
    """``root`` if it is a bag (holds an .mcap file), else the bags directly inside it."""
    if any(root.glob("*.mcap")):
        return [root]
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.endswith((".damaged", ".recovering"))
                  and any(p.glob("*.mcap")))


def scan_mcap(path: Path) -> tuple[dict[int, tuple[str, str]], list[tuple[int, int, bytes]], int]:
    """(channel id -> (topic, msgtype), [(channel id, log time ns, data)], tail bytes) of every
    complete record, stopping at the first truncated or corrupt one."""
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    messages: list[tuple[int, int, bytes]] = []
    size = path.stat().st_size
    good = 0
    with open(path, "rb") as f:
        reader = StreamReader(f, emit_chunks=False)
        try:
            for rec in reader.records:
                if isinstance(rec, Schema):
                    schemas[rec.id] = rec.name
                elif isinstance(rec, Channel):
                    channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                elif isinstance(rec, Message) and rec.channel_id in channels:
                    messages.append((rec.channel_id, rec.log_time, bytes(rec.data)))
                good = f.tell()
        except (McapError, EOFError, ValueError, OSError):
            pass  # the kill cut a record: keep everything before it
    return channels, messages, max(0, size - good)


def last_status_values(messages: list[tuple[int, int, bytes]],
                       channels: dict[int, tuple[str, str]]) -> dict[str, str]:
    """The values of the last ``trial`` status recorded (empty if none)."""
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    for cid, _, data in reversed(messages):
        topic, msgtype = channels[cid]
        if topic != STATUS_TOPIC:
            continue
        msg = ts.deserialize_cdr(data, msgtype)
        for st in msg.status:
            if st.name == "trial":
                return {kv.key: kv.value for kv in st.values}
    return {}


def recover(bag: Path) -> Recovery:
    if (bag / "metadata.yaml").is_file():
        try:
            read_bag(bag)
            return Recovery(bag, "intact")
        except Exception as e:  # noqa: BLE001 - any reader failure: try to rebuild it
            note = f"metadata.yaml present but unreadable: {e}"
    else:
        note = ""
    files = sorted(bag.glob("*.mcap"))
    if not files:
        return Recovery(bag, "unreadable", note="no .mcap file")
    channels, messages, tail = scan_mcap(files[0])
    if not channels:
        return Recovery(bag, "unreadable", tail_bytes=tail,
                        note="no complete chunk: nothing was flushed before the kill")
    work = bag.with_name(bag.name + ".recovering")
    shutil.rmtree(work, ignore_errors=True)
    sink = RosbagsSink(work.parent)
    name = work.name
    for cid, t, data in messages:
        topic, msgtype = channels[cid]
        sink.write(name, topic, msgtype, t, data)
    outcome = last_status_values(messages, channels)
    outcome.update(recovered="true", recovered_messages=str(len(messages)),
                   recover_note=(note or "recorder stopped before closing the bag") +
                   f"; {tail} bytes after the last complete record lost")
    sink.close(name, outcome)
    damaged = bag.with_name(bag.name + ".damaged")
    bag.rename(damaged)
    work.rename(bag)
    return Recovery(bag, "recovered", len(messages), len({c for c, _, _ in messages}), tail)


def main(paths: list[str]) -> int:
    """Recover every bag under each path; exit 1 if any stays unreadable."""
    bad = 0
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            print(f"{root}: not a directory")
            bad += 1
            continue
        bags = bag_dirs(root)
        if not bags:
            print(f"{root}: no bags (directories with an .mcap file) here")
        for bag in bags:
            r = recover(bag)
            print(r.line())
            bad += r.state == "unreadable"
    return 1 if bad else 0
