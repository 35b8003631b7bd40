"""Command-line options derived from a config dataclass, so a default is written once.

    OPTIONS = {"n_envs": ("--envs", "parallel envs"), "adr": ("--adr", "vectorised ADR")}
    add_config_options(parser, PPOConfig, OPTIONS)
    cfg = PPOConfig(**config_kwargs(parser.parse_args(), OPTIONS))

Each option's type and default come from the dataclass field (a bool field with default False
becomes a flag); the help text shows the default. A CLI only chooses which fields it exposes and
under what name.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

Options = dict[str, tuple[str, str]]  # field name -> (option, help)


def field_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default value of a dataclass (default_factory called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def add_config_options(p: argparse.ArgumentParser, cls: type, options: Options) -> None:
    defaults = field_defaults(cls)
    for name, (option, text) in options.items():
        if name not in defaults:
            raise KeyError(f"{cls.__name__} has no field {name!r} with a default")
        d = defaults[name]
        if isinstance(d, bool):
            if d:
                raise ValueError(f"{cls.__name__}.{name}: a flag must default to False")
            p.add_argument(option, dest=_dest(option), action="store_true", help=text)
        elif isinstance(d, int | float | str):
            p.add_argument(option, dest=_dest(option), type=type(d), default=d,
                           help=f"{text} (default: {d})" if text else f"default: {d}")
        else:
            raise TypeError(f"{cls.__name__}.{name}: no option for a {type(d).__name__}")


def config_kwargs(args: argparse.Namespace, options: Options) -> dict[str, Any]:
    """The parsed options as keyword arguments of the dataclass."""
    return {name: getattr(args, _dest(option)) for name, (option, _) in options.items()}


def this_machine() -> str:
    """What ran a job, for a model's provenance (``dex.compute``): CPU count, model and
    architecture as this machine reports them, e.g. "cpu x2 (AMD EPYC 7B13, x86_64)"."""
    import os
    import platform

    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f
                         if ln.startswith("model name")), "")
    except OSError:
        pass
    details = ", ".join(x for x in (name or platform.processor(), platform.machine()) if x)
    return f"cpu x{os.cpu_count() or 1}" + (f" ({details})" if details else "")
