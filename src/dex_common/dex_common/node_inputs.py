"""Input messages and parameters as the graph's nodes check them (pure: no ROS import; the
messages are read by attribute only). Shared by the trial node and the controller node so both
refuse the same bad input with the same words."""

from __future__ import annotations

import math

import numpy as np

# pose_source / judge_source parameter values -> the topic carrying that cube pose.
POSE_TOPICS = {"gt": "/object/pose_gt", "vision": "/object/pose"}


class InputError(ValueError):
    """An input set a node cannot act on or judge (the hand holds)."""


def joint_positions_in_order(names: list[str], positions: list[float],
                             expected: list[str]) -> np.ndarray:
    """Positions in registry order (reordered by name if needed); InputError on unknown or
    missing names, a length mismatch, or NaN/Inf."""
    if len(positions) != len(names):
        raise InputError(f"joint_states has {len(names)} names but {len(positions)} positions")
    if list(names) == expected:
        q = np.asarray(positions, float)
    else:
        unknown = [n for n in names if n not in expected]
        if unknown:
            raise InputError(f"unknown joint names {unknown}; expected the registry joints "
                             f"{expected}")
        missing = [n for n in expected if n not in names]
        if missing:
            raise InputError(f"joint_states lacks joints {missing}")
        if len(set(names)) != len(names):
            raise InputError("joint_states repeats a joint name")
        index = {n: i for i, n in enumerate(names)}
        q = np.asarray([positions[index[n]] for n in expected], float)
    if not np.all(np.isfinite(q)):
        bad = [expected[i] for i in np.flatnonzero(~np.isfinite(q))]
        raise InputError(f"joint_states has NaN/Inf positions for {bad}")
    return q


def joint_velocities_or_none(js: object, expected: list[str]) -> np.ndarray | None:
    """Velocities of a JointState in registry order when it carries a finite one for every
    joint (sources may leave ``velocity`` empty); None otherwise."""
    if len(js.velocity) != len(js.name):
        return None
    try:
        return joint_positions_in_order(list(js.name), list(js.velocity), expected)
    except InputError:
        return None


def pose_arrays(msg: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A PoseStamped's position and unit quaternion (w, x, y, z); InputError when not finite or
    the quaternion is zero."""
    p, o = msg.pose.position, msg.pose.orientation
    pos = np.array([p.x, p.y, p.z], float)
    quat = np.array([o.w, o.x, o.y, o.z], float)
    n = float(np.linalg.norm(quat))
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))) or n < 1e-6:
        raise InputError(f"{what} pose is not finite or has a zero quaternion")
    return pos, quat / n


# ---- parameter checks: each returns a problem sentence, or "" ------------------------------------
class CheckedParams:
    """A node's parameter values checked one at a time: ``take(name, check, default, ...)``
    records ``check``'s problem and gives the default for a bad value, else the value."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values
        self.problems: list[str] = []

    def __getitem__(self, name: str) -> object:
        return self.values[name]

    def take(self, name: str, check: object, default: object, *args: object,
             **kwargs: object) -> object:
        problem = check(name, self.values[name], *args, **kwargs)
        if problem:
            self.problems.append(problem)
            return default
        return self.values[name]


def not_bool(name: str, value: object) -> str:
    return "" if isinstance(value, bool) else f"{name} must be true or false; got {value!r}"


def not_count(name: str, value: object, minimum: int = 0) -> str:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    return "" if ok else f"{name} must be an integer >= {minimum}; got {value!r}"


def not_in(name: str, value: object, allowed: object) -> str:
    return "" if value in allowed else f"{name} must be one of {sorted(allowed)}; got {value!r}"


def not_seconds(name: str, value: object, low: float, high: float, closed_low: bool = False
                ) -> str:
    """A number of seconds in (low, high) — [low, high) with ``closed_low``."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value) and (low <= value if closed_low else low < value)
          and value < high)
    bracket = "[" if closed_low else "("
    return "" if ok else f"{name} must be in {bracket}{low:g}, {high:g}) s; got {value!r}"
