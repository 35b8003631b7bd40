"""Quaternion helpers. Quaternions are numpy arrays (w, x, y, z), Hamilton convention,
matching MuJoCo's ``qpos`` order for free joints. All functions accept float arrays of shape (4,)
(``quat_mul``/``quat_conj``/``quat_normalize`` also accept (..., 4) batches)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

_EPS = 1e-12
_MIN_NORM = 1e-9  # below this a quaternion is "zero" and cannot be normalized

# ---- fast paths on single quaternions as Python floats ------------------------------------------
# The env / tracker / observation hot path handles one 4-vector at a time, where each numpy call
# costs microseconds of overhead; scalar math is ~10x cheaper. Every expression below evaluates
# the same IEEE operations in the same order as the numpy versions (sum of squares left to right,
# as numpy's reduce / dot do for 3-4 elements), so results are bit-identical. Inputs are TRUSTED
# (already validated: 4 finite floats); the public functions below validate, then call these.


def _qmul(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Hamilton product a ⊗ b of two (w, x, y, z) float sequences."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return [
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ]


def _qconj(q: Sequence[float]) -> list[float]:
    w, x, y, z = q
    return [w, -x, -y, -z]


def _qnormalize(q: Sequence[float]) -> list[float]:
    """Unit quaternion of 4 finite floats; ValueError for a (near-)zero one."""
    w, x, y, z = q
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if n < _MIN_NORM:
        raise ValueError("cannot normalize a zero quaternion")
    return [w / n, x / n, y / n, z / n]


def _finite4(q: object, name: str = "q") -> list[float]:
    """Validated external single quaternion → list of 4 finite floats (unnormalized)."""
    a = np.asarray(q, dtype=np.float64)
    if a.shape != (4,):
        raise ValueError(f"{name} must have shape (4,) (w, x, y, z); got {a.shape}")
    v = a.tolist()
    if not all(map(math.isfinite, v)):
        raise ValueError(f"quaternion is not finite: {a}")
    return v


def _rotation_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Angle (rad) between two UNIT quaternions given as floats (see ``rotation_distance``)."""
    w, x, y, z = _qmul(_qconj(a), b)
    return 2.0 * math.atan2(math.sqrt(x * x + y * y + z * z), abs(w))


def _as_quat(q: np.ndarray, name: str = "q") -> np.ndarray:
    a = np.asarray(q, dtype=np.float64)
    if a.shape[-1:] != (4,):
        raise ValueError(f"{name} must have shape (..., 4) (w, x, y, z); got {a.shape}")
    return a


# The Hamilton product as 16 signed products a[i] * b[j], four per output component in the
# order the scalar formulas in ``_qmul`` add them: summing each four left to right (numpy's
# reduction over 4 values) gives the same bits, in six array operations for any number of rows.
_MUL_I = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
_MUL_J = np.array([0, 1, 2, 3, 1, 0, 3, 2, 2, 3, 0, 1, 3, 2, 1, 0])
_MUL_SIGN = np.array([1.0, -1, -1, -1, 1, 1, 1, -1, 1, -1, 1, 1, 1, 1, -1, 1])


def _qmul_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``_qmul`` of [..., 4] float64 arrays (broadcast), unchecked."""
    p = a[..., _MUL_I] * b[..., _MUL_J] * _MUL_SIGN
    return p.reshape(*p.shape[:-1], 4, 4).sum(axis=-1)


def quat_mul(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Hamilton product q1 ⊗ q2 (apply q2 first, then q1)."""
    a = _as_quat(q1, "q1")
    b = _as_quat(q2, "q2")
    if a.shape == (4,) and b.shape == (4,):  # the common single case: scalar math
        return np.array(_qmul(a.tolist(), b.tolist()))
    return _qmul_rows(a, b)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (= inverse for a unit quaternion)."""
    a = _as_quat(q)
    return a * np.array([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion; raises ValueError for a (near-)zero or non-finite quaternion."""
    a = _as_quat(q)
    if a.shape == (4,):  # the common single case: scalar math
        return np.array(_qnormalize(_finite4(a)))
    if not np.all(np.isfinite(a)):
        raise ValueError(f"quaternion is not finite: {a}")
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(n < _MIN_NORM):
        raise ValueError("cannot normalize a zero quaternion")
    return a / n


def canonical(q: np.ndarray) -> np.ndarray:
    """Sign-canonical unit quaternion (w >= 0); q and -q are the same rotation."""
    a = quat_normalize(q)
    if a.shape == (4,):
        return -a if a[0] < 0.0 else a
    return np.where(a[..., :1] < 0.0, -a, a)


def rotation_distance(q1: np.ndarray, q2: np.ndarray) -> float:
    """Angle (rad, in [0, π]) of the rotation taking q1 to q2; invariant to the sign of each."""
    a = _as_quat(q1, "q1")
    b = _as_quat(q2, "q2")
    if a.shape != (4,) or b.shape != (4,):
        raise ValueError("rotation_distance takes single quaternions of shape (4,)")
    # 2*acos(|<a,b>|) loses precision near 0; atan2 of the relative rotation's parts does not.
    # |w| makes it sign-invariant and keeps the angle in [0, π].
    return _rotation_distance(_qnormalize(_finite4(a, "q1")), _qnormalize(_finite4(b, "q2")))


def rotation_distances(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """``rotation_distance`` row by row: angles (rad) between unit quaternions [..., 4]
    (broadcast), with the same atan2 form (precise near 0, sign-invariant)."""
    rel = _qmul_rows(quat_conj(q1), _as_quat(q2, "q2"))
    return 2.0 * np.arctan2(np.linalg.norm(rel[..., 1:], axis=-1), np.abs(rel[..., 0]))


def random_quat(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed rotation on SO(3) (normalized 4-D Gaussian), sign-canonical w >= 0."""
    while True:
        q = rng.standard_normal(4)
        n = np.linalg.norm(q)
        if n > 1e-6:
            q = q / n
            return -q if q[0] < 0 else q


def axis_angle_to_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` rad about ``axis`` (any non-zero length)."""
    ax = np.asarray(axis, dtype=np.float64)
    if ax.shape != (3,):
        raise ValueError(f"axis must have shape (3,); got {ax.shape}")
    n = np.linalg.norm(ax)
    if not np.isfinite(n) or n < _EPS or not np.isfinite(angle):
        raise ValueError(f"axis must be finite and non-zero and angle finite; got {ax}, {angle}")
    h = 0.5 * float(angle)
    return np.concatenate([[np.cos(h)], np.sin(h) * ax / n])


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix R with v_world = R @ v_body."""
    w, x, y, z = quat_normalize(_as_quat(q))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w >= 0) of a 3x3 rotation matrix (Shepperd's method, stable)."""
    r = np.asarray(m, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise ValueError(f"expected a finite 3x3 rotation matrix; got shape {r.shape}")
    t = np.trace(r)
    if t > max(r[0, 0], r[1, 1], r[2, 2]):
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], _EPS))
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * np.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], _EPS))
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], _EPS))
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    return canonical(np.array(q))
