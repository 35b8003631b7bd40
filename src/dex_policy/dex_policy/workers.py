"""Process pools for independent, seeded work (teacher episodes, evaluation trials)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.pool import Pool
from typing import Any


def _init(init: Callable[..., None], args: tuple[Any, ...]) -> None:
    import torch

    torch.set_num_threads(1)  # one core per process: the pool is the parallelism
    init(*args)


def worker_pool(workers: int, init: Callable[..., None], args: tuple[Any, ...]) -> Pool:
    """``workers`` spawned processes (no forked torch/MuJoCo thread state), each with one torch
    thread, running ``init(*args)`` once to build its own env and controller."""
    ctx = multiprocessing.get_context("spawn")
    return ctx.Pool(max(1, workers), _init, (init, args))
