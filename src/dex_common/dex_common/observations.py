"""The policy observation layout (Dactyl's inputs) and the one function that builds it.

Training (dex_policy.train / dex_sim.env), the policy node and the evaluator all call
``policy_observation`` so the layout cannot drift; the ONNX contract records the layout and the
runtime checks it.

The layout depends on the hand only through its fingertip count (registry
``fingertip_sites``): ``fingertip_pos`` is 3 x n_fingertips floats. Shadow (5 tips) gives
Dactyl's 22 floats (``POLICY_OBS_LAYOUT``, kept for compatibility); LEAP (4 tips) gives 19.
"""

from __future__ import annotations

import math

import numpy as np

from dex_common.rotations import _qconj, _qmul, _qnormalize
from dex_description.registry import HandSpec, get_hand

# The Shadow hand's layout (5 fingertips): 22 floats. Use ``policy_obs_layout(hand)`` for others.
POLICY_OBS_LAYOUT: list[tuple[str, int]] = [
    ("fingertip_pos", 15),
    ("cube_pos", 3),
    ("rel_goal_quat", 4),
]


def _spec(hand: HandSpec | str) -> HandSpec:
    return get_hand(hand) if isinstance(hand, str) else hand


def n_fingertips(hand: HandSpec | str = "shadow") -> int:
    """Number of fingertip sites of the hand (registry): Shadow 5, LEAP 4."""
    return len(_spec(hand).fingertip_sites)


def policy_obs_layout(hand: HandSpec | str = "shadow") -> list[tuple[str, int]]:
    """[(name, size)] of the policy observation for this hand (fingertip_pos = 3 x tips)."""
    return [("fingertip_pos", 3 * n_fingertips(hand)), ("cube_pos", 3), ("rel_goal_quat", 4)]


def obs_dim(hand: HandSpec | str = "shadow") -> int:
    """Length of the policy observation vector (Shadow 22, LEAP 19)."""
    return sum(n for _, n in policy_obs_layout(hand))


def obs_slices(hand: HandSpec | str = "shadow") -> dict[str, slice]:
    """Name → slice into the observation vector."""
    out, i = {}, 0
    for name, n in policy_obs_layout(hand):
        out[name] = slice(i, i + n)
        i += n
    return out


def _check(name: str, value: np.ndarray, shape: tuple[int, ...]) -> list[float]:
    """Validated external input → its values as a flat list of floats. Checked as Python floats:
    on a few values that is several times cheaper than numpy's isfinite/all."""
    a = np.asarray(value, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    v = a.ravel().tolist()
    if not all(map(math.isfinite, v)):
        raise ValueError(f"{name} contains non-finite values: {a.tolist()}")
    return v


def _relative_goal(c: list[float], g: list[float]) -> list[float]:
    """``relative_goal_quat`` on validated floats (normalizes both, as the public one does)."""
    rel = _qmul(_qnormalize(g), _qconj(_qnormalize(c)))
    return [-x for x in rel] if rel[0] < 0 else rel


def relative_goal_quat(cube_quat: np.ndarray, goal_quat: np.ndarray) -> np.ndarray:
    """goal ⊗ conj(cube): the rotation still to apply (world frame), sign-canonical (w >= 0)."""
    c = _check("cube_quat", cube_quat, (4,))
    g = _check("goal_quat", goal_quat, (4,))
    return np.array(_relative_goal(c, g))


def policy_observation(
    fingertips: np.ndarray,
    cube_pos: np.ndarray,
    cube_quat: np.ndarray,
    goal_quat: np.ndarray,
    hand: HandSpec | str = "shadow",
    checked: bool = True,
) -> np.ndarray:
    """float32[obs_dim(hand)] = [fingertips (n_tips x 3, registry fingertip order, m, world) |
    cube_pos (m) | rel_goal_quat (w,x,y,z)]. Shadow: 22 floats. Raises ValueError on a wrong
    shape (fingertips must be (n_fingertips(hand), 3)) or a non-finite value.

    ``checked=False`` skips those checks (same numbers): for float64 arrays of the right shapes
    that the caller made itself (the training env's own physics state, every step)."""
    if not checked:
        v = policy_observation_values(fingertips.ravel().tolist(), cube_pos.tolist(),
                                      cube_quat.tolist(), goal_quat.tolist())
    else:
        v = policy_observation_values(
            _check("fingertips", fingertips, (n_fingertips(hand), 3)),
            _check("cube_pos", cube_pos, (3,)), _check("cube_quat", cube_quat, (4,)),
            _check("goal_quat", goal_quat, (4,)))
    # One float64 → float32 rounding per value, exactly as concatenate(...).astype(float32).
    return np.array(v, dtype=np.float32)


def policy_observation_values(fingertips: list[float], cube_pos: list[float],
                              cube_quat: list[float], goal_quat: list[float]) -> list[float]:
    """``policy_observation`` before the float32 rounding, on finite floats (fingertips flat,
    registry order): for callers that append more values (the env's value observation)."""
    return fingertips + cube_pos + _relative_goal(cube_quat, goal_quat)
