"""One way to open an ONNX model for the nodes: ONNX Runtime on the CPU, with session options
chosen for a few shared cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: str | Path, threads: int = 2) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads.

    Idle ORT threads spin-wait by default. On 2 cores shared with the sim's renderer, that
    spinning steals the cores the other nodes need. With it turned off for every session, in
    ``dex bench`` the perception node's inference p99 went from 12-16 ms to 8-9 ms and the loop
    latency p99 from 62-86 ms to 16-17 ms (docs/performance.md)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
