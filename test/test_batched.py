"""BatchedHandCube (MuJoCo Warp) vs HandCubeSim (CPU MuJoCo): parity on a short fixed-action
rollout, and independent worlds. Runs for real on Warp's CPU device when no GPU is present.

Cost: the first BatchedHandCube JIT-compiles ~43 Warp modules (~55-65 s on 2 cores with a cold
~/.cache/warp; ~3 s warm). The rollout itself is ~5 s on the CPU device.

Tolerances: Warp runs float32, CPU MuJoCo float64. On the hold rollout (cube resting on the palm
with ~12 contacts, 240 physics steps) the observed max differences are ~1e-6 rad / m and ~1e-5 in
the quaternion; float32 round-off (1.2e-7 relative) accumulated over 240 steps bounds a drift of a
few 1e-5, so 1e-4 (joints, cube position) and 1e-3 (quaternion, amplified through the stiff
contacts) leave margin while still catching any real mismatch (wrong order, wrong actuator,
wrong timestep or substeps would be off by 1e-2 or more). A world whose fingers move flicks the
cube, which is chaotic (contact make/break), so there only the joints are compared, loosely, after
the first control period.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco_warp  # noqa: E402,F401  (installed by scripts/test.sh: requirements-test.txt)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dex_hardware.safety import default_targets  # noqa: E402
from dex_sim.batched import BatchedHandCube, cpu_reference  # noqa: E402

N_STEPS = 6
SEEDS = [3, 11, 7]  # worlds 0, 1 hold the default pose; world 2 moves


@pytest.fixture(scope="module")
def rollout():
    b = BatchedHandCube("shadow", n_envs=len(SEEDS), device=None)
    spec = b.spec
    lo, hi = spec.actuator_limits()
    d0 = default_targets(spec)
    sign = np.where(np.arange(spec.n_actuators) % 2 == 0, -1.0, 1.0)

    def action(w: int, k: int) -> np.ndarray:
        if w < 2:
            return d0.copy()
        return np.clip(d0 + 0.15 * (k + 1) / N_STEPS * (hi - lo) * sign, lo, hi)

    b.reset(SEEDS)
    traj = []
    for k in range(N_STEPS):
        b.set_targets(np.stack([action(w, k) for w in range(len(SEEDS))]))
        b.step_control()
        b.check_overflow()
        traj.append((b.joint_positions(), *b.cube_pose()))
    cpu = cpu_reference()
    ref = []
    for w, seed in enumerate(SEEDS):
        cpu.reset(seed)
        rw = []
        for k in range(N_STEPS):
            cpu.set_targets(action(w, k))
            cpu.step_control()
            rw.append((cpu.joint_positions(), *cpu.cube_pose()))
        ref.append(rw)
    return b, traj, ref


def _qdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(min(np.abs(a - b).max(), np.abs(a + b).max()))  # q and -q are the same rotation


def test_hold_rollout_parity(rollout) -> None:
    b, traj, ref = rollout
    for w in (0, 1):
        for k in range(N_STEPS):
            jb, pb, qb = traj[k][0][w], traj[k][1][w], traj[k][2][w]
            jc, pc, qc = ref[w][k]
            assert np.abs(jb - jc).max() < 1e-4, (w, k, np.abs(jb - jc).max())
            assert np.abs(pb - pc).max() < 1e-4, (w, k, np.abs(pb - pc).max())
            assert _qdiff(qb, qc) < 1e-3, (w, k, _qdiff(qb, qc))
        # the cube stayed on the palm (a real contact-rich rollout, not free fall)
        assert traj[-1][1][w][2] > 0.03
    assert (b.contact_counts()[:2] >= 4).all()


def test_worlds_are_independent(rollout) -> None:
    _, traj, ref = rollout
    # world 2 moved its fingers: far from the held worlds, yet worlds 0/1 still match their own
    # CPU rollout (checked above) — nothing leaks between worlds.
    assert np.abs(traj[-1][0][2] - traj[-1][0][0]).max() > 0.05
    # moving world: joints track the same targets as on CPU after the first control period
    assert np.abs(traj[0][0][2] - ref[2][0][0]).max() < 1e-2
    # different seeds placed the cubes differently
    assert np.abs(traj[0][1][0] - traj[0][1][1]).max() > 1e-4


def test_set_targets_validation(rollout) -> None:
    b, _, _ = rollout
    before = b.actuator_targets()
    bad = before.copy()
    bad[1, 3] = np.nan
    bad[0, :] = 1e3  # clamped to the upper limits
    ok = b.set_targets(bad)
    assert ok.tolist() == [True, False, True]
    after = b.actuator_targets()
    np.testing.assert_array_equal(after[1], before[1])  # non-finite row holds
    np.testing.assert_allclose(after[0], b.spec.actuator_limits()[1])
    with pytest.raises(ValueError):
        b.set_targets(np.zeros((5, 20)))
