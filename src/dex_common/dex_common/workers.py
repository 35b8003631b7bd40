"""Workers for independent, seeded work (teacher episodes, evaluation trials), on Ray.

A local Ray runtime by default (this machine's cores), or an existing cluster by its address
(``ray start --head`` on one machine, ``ray start --address=HEAD:6379`` on the others, then
``--ray-address HEAD:6379``): the same code either way. Each worker is an actor holding one CPU
and one torch thread that builds its own env and controller once (``init``), then runs jobs.
Every node of a cluster needs this project installed (``bash scripts/setup.sh``).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ADDRESS_HELP = ("Ray cluster to run the workers on (e.g. HEAD:6379, or 'auto' for the one this "
                "machine joined); default: a local Ray runtime on this machine's cores")


@functools.cache
def _actor_class() -> Any:
    """The Ray actor class, defined (and registered with Ray) once per process."""
    import ray

    @ray.remote(num_cpus=1)
    class Worker:
        def __init__(self, init: Callable[..., None], args: tuple[Any, ...]) -> None:
            import torch

            torch.set_num_threads(1)  # one core per worker: the workers are the parallelism
            init(*args)

        def run(self, fn: Callable[[Any], Any], job: Any) -> Any:
            return fn(job)

    return Worker


def importable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as the workers can import it. A function of a module run as a script
    (``python -m dex_policy.evaluate``) belongs to ``__main__``, which Ray pickles by value:
    each function then gets its own copy of the module globals, so what ``init`` sets is not
    what ``run`` reads. The same function of the module imported by its own name is shared."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if fn.__module__ != "__main__" or not name:
        return fn
    return getattr(importlib.import_module(name), fn.__qualname__)


def default_workers() -> int:
    """One worker per core of this machine."""
    return os.cpu_count() or 1


def start_runtime(workers: int, address: str | None = None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local runtime with at least
    ``workers`` CPUs; True if this call started it (then ``stop_runtime`` when done)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        # Logical CPUs: at least one per worker, so asking for more workers than cores
        # oversubscribes instead of waiting forever for a free CPU.
        ray.init(num_cpus=max(workers, default_workers()), include_dashboard=False,
                 object_store_memory=128 * 2**20, configure_logging=False)
    return True


def stop_runtime() -> None:
    import ray

    ray.shutdown()


class WorkerPool:
    """``workers`` Ray actors, each running ``init(*args)`` once (module-level functions: they
    are imported, not pickled by value, on the workers). Use as a context manager; it stops
    the Ray runtime at the end only if it started it."""

    def __init__(self, workers: int, init: Callable[..., None], args: tuple[Any, ...],
                 address: str | None = None) -> None:
        import ray

        self._ray = ray
        self._owns_runtime = start_runtime(workers, address)
        cls = _actor_class()
        init = importable(init)
        self.workers = [cls.remote(init, args) for _ in range(max(1, workers))]

    def call(self, fn: Callable[[Any], Any], job: Any = None) -> Any:
        """``fn(job)`` on the first worker (e.g. to ask how the workers are configured)."""
        return self._ray.get(self.workers[0].run.remote(importable(fn), job))

    def imap_unordered(self, fn: Callable[[Any], Any], jobs: Iterable[Any],
                       deadline: float | None = None) -> Iterator[Any]:
        """``fn(job)`` for every job, one job in flight per worker, results as they finish;
        raises ``TimeoutError`` when ``deadline`` (``time.monotonic``) passes first."""
        ray = self._ray
        fn = importable(fn)
        pending = list(jobs)[::-1]
        running: dict[Any, Any] = {}  # ObjectRef -> worker

        def submit(worker: Any) -> None:
            if pending:
                running[worker.run.remote(fn, pending.pop())] = worker

        for w in self.workers:
            submit(w)
        while running:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1, timeout=wait)
            if not done:
                raise TimeoutError("the deadline passed with jobs in flight")
            ref = done[0]
            worker = running.pop(ref)
            result = ray.get(ref)  # a worker's exception is raised here
            submit(worker)
            yield result

    def close(self) -> None:
        for w in self.workers:
            self._ray.kill(w)
        self.workers = []
        if self._owns_runtime:
            stop_runtime()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
