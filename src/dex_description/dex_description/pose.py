"""The relaxed hand pose used at reset (and as the MJCF keyframe ``home``), per hand profile.

Fingers slightly curled, thumb lifted a little off the palm's side, wrist straight: the cube
placed at ``cube.rest_pos`` settles on the flat palm without touching the fingers or thumb.
The curled fingers and lifted thumb form a loose fence around the cube.
"""

from __future__ import annotations

import numpy as np

from dex_description.registry import HandSpec

# Relaxed targets by actuator name (rad). Anything not listed is 0. Coupled J0 = J2 + J1.
_RELAXED: dict[str, float] = {
    "FFJ3": 0.25,
    "MFJ3": 0.25,
    "RFJ3": 0.25,
    "LFJ3": 0.25,
    "FFJ0": 0.5,
    "MFJ0": 0.5,
    "RFJ0": 0.5,
    "LFJ0": 0.5,
    "THJ4": 0.35,
    "THJ1": 0.2,
}


# LEAP (dex_leap): fingers curled at mcp/pip/dip, thumb lifted by th_cmc and slightly curled.
_RELAXED_LEAP: dict[str, float] = {
    **{
        f"{f}_{j}": v
        for f in ("if", "mf", "rf")
        for j, v in (("mcp", 0.35), ("pip", 0.35), ("dip", 0.25))
    },
    "th_cmc": 0.6,
    "th_mcp": 0.3,
    "th_ipl": 0.2,
}
_RELAXED_BY_HAND: dict[str, dict[str, float]] = {"dex_shadow": _RELAXED, "dex_leap": _RELAXED_LEAP}


def default_actuator_targets(hand: HandSpec) -> np.ndarray:
    """Relaxed actuator targets (registry actuator order), clipped to the actuator limits."""
    lo, hi = hand.actuator_limits()
    relaxed = _RELAXED_BY_HAND.get(hand.name, {})
    t = np.array([relaxed.get(n, 0.0) for n in hand.actuator_names], dtype=float)
    return np.clip(t, lo, hi)


def default_joint_positions(hand: HandSpec) -> np.ndarray:
    """Joint angles (registry joint order) matching :func:`default_actuator_targets`; a coupled
    actuator's target is split evenly between its joints (the equal J1/J2 stiffness does that)."""
    index = {n: i for i, n in enumerate(hand.joint_names)}
    q = np.zeros(hand.n_joints)
    for act, t in zip(hand.actuators, default_actuator_targets(hand), strict=True):
        for jn in act.joints:
            q[index[jn]] = t / len(act.joints)
    lo, hi = hand.joint_limits()
    return np.clip(q, lo, hi)
