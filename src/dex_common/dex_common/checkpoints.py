"""Training checkpoints: atomic writes, and loads that never run code from the file.

An unrestricted ``torch.load`` unpickles arbitrary objects, so a crafted checkpoint passed to
``--resume`` could execute anything. Every checkpoint here holds only tensors and plain
data (dicts, lists, numbers, strings), which torch's restricted unpickler (``weights_only=True``)
accepts; anything else is refused with a clear error before any object is built.

torch is imported lazily: dex_common is shared by the nodes, which never need it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or holds more than tensors and plain data."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename): a crash mid-save leaves
    the previous checkpoint intact, never a truncated one."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with torch's restricted unpickler (tensors and plain data only)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's restricted unpickler names what it refused after "WeightsUnpickler error:".
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
        detail = detail.split(" Please use")[0].strip()  # not torch's allow-list advice
        if "global" in detail.lower():  # a class or function: building it could run code
            raise CheckpointError(
                f"refusing to load {path}: it holds objects other than tensors and plain data, "
                f"and unpickling them could run code ({detail})") from None
        raise CheckpointError(f"cannot read checkpoint {path}: not a torch checkpoint of "
                              f"tensors and plain data ({detail or e})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a dex checkpoint (top level is "
                              f"{type(state).__name__}, expected a dict)")
    return state
