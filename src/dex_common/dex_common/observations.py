"""The policy observation layout (Dactyl's 22 inputs) and the one function that builds it.

Training (dex_policy.train / dex_sim.env), the policy node and the evaluator all call
``policy_observation`` so the layout cannot drift; the ONNX contract records
``POLICY_OBS_LAYOUT`` and the runtime checks it.
"""

from __future__ import annotations

import numpy as np

from dex_common.rotations import quat_conj, quat_mul, quat_normalize

POLICY_OBS_LAYOUT: list[tuple[str, int]] = [
    ("fingertip_pos", 15),
    ("cube_pos", 3),
    ("rel_goal_quat", 4),
]


def obs_dim() -> int:
    """Length of the policy observation vector (22)."""
    return sum(n for _, n in POLICY_OBS_LAYOUT)


def obs_slices() -> dict[str, slice]:
    """Name → slice into the observation vector."""
    out, i = {}, 0
    for name, n in POLICY_OBS_LAYOUT:
        out[name] = slice(i, i + n)
        i += n
    return out


def _check(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values: {a.tolist()}")
    return a


def relative_goal_quat(cube_quat: np.ndarray, goal_quat: np.ndarray) -> np.ndarray:
    """goal ⊗ conj(cube): the rotation still to apply (world frame), sign-canonical (w >= 0)."""
    c = quat_normalize(_check("cube_quat", cube_quat, (4,)))
    g = quat_normalize(_check("goal_quat", goal_quat, (4,)))
    rel = quat_mul(g, quat_conj(c))
    return -rel if rel[0] < 0 else rel


def policy_observation(
    fingertips: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray, goal_quat: np.ndarray
) -> np.ndarray:
    """float32[22] = [fingertips (5x3, registry fingertip order, m, world) | cube_pos (m) |
    rel_goal_quat (w,x,y,z)]. Raises ValueError on a wrong shape or a non-finite value."""
    ft = _check("fingertips", fingertips, (5, 3))
    cp = _check("cube_pos", cube_pos, (3,))
    rel = relative_goal_quat(cube_quat, goal_quat)
    return np.concatenate([ft.reshape(-1), cp, rel]).astype(np.float32)
