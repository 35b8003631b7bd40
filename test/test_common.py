"""dex_common pure cores: rotations, trial rules, observations, action decoding, stats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dex_common.actions import MAX_DELTA, ActionDecoder, max_delta_of
from dex_common.observations import (
    POLICY_OBS_LAYOUT,
    obs_dim,
    obs_slices,
    policy_observation,
    relative_goal_quat,
)
from dex_common.rotations import (
    axis_angle_to_quat,
    canonical,
    mat_to_quat,
    quat_conj,
    quat_mul,
    quat_normalize,
    quat_to_mat,
    random_quat,
    rotation_distance,
    rotation_distances,
)
from dex_common.stats import RollingStats
from dex_common.trial import (
    DROP_PENALTY,
    SUCCESS_BONUS,
    TrialConfig,
    TrialTracker,
    default_drop_height,
)
from dex_description.registry import get_hand

HAND = get_hand("shadow")
REST = np.array(HAND.cube.rest_pos)
ID = np.array([1.0, 0.0, 0.0, 0.0])


# ---- rotations -------------------------------------------------------------------------------
def test_quat_mul_matches_matrix_product_and_inverse() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b = random_quat(rng), random_quat(rng)
        np.testing.assert_allclose(
            quat_to_mat(quat_mul(a, b)), quat_to_mat(a) @ quat_to_mat(b), atol=1e-12
        )
        np.testing.assert_allclose(quat_mul(a, quat_conj(a)), ID, atol=1e-12)
        r = quat_to_mat(a)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0)
        np.testing.assert_allclose(mat_to_quat(r), canonical(a), atol=1e-10)


def test_axis_angle_and_rotation_distance() -> None:
    q = axis_angle_to_quat(np.array([0, 0, 2.0]), math.pi / 2)
    np.testing.assert_allclose(quat_to_mat(q) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    for ang in (0.0, 1e-7, 0.3, 0.4, 2.0, math.pi):
        qa = axis_angle_to_quat(np.array([1.0, 2.0, 3.0]), ang)
        assert rotation_distance(ID, qa) == pytest.approx(ang, abs=1e-9)
        assert rotation_distance(ID, -qa) == pytest.approx(ang, abs=1e-9)  # sign-invariant
    # More than π about an axis is the same as less than π the other way.
    assert rotation_distance(ID, axis_angle_to_quat(np.array([0, 1.0, 0]), 1.5 * math.pi)) == (
        pytest.approx(0.5 * math.pi)
    )
    a, b = random_quat(np.random.default_rng(1)), random_quat(np.random.default_rng(2))
    assert rotation_distance(a, b) == pytest.approx(rotation_distance(b, a))
    with pytest.raises(ValueError):
        quat_normalize(np.zeros(4))
    with pytest.raises(ValueError):
        rotation_distance(ID, np.array([np.nan, 0, 0, 1]))
    # The row-wise form gives the scalar one's angles, signs and broadcasting included.
    rng = np.random.default_rng(3)
    qs = np.array([random_quat(rng) for _ in range(20)])
    rs = np.array([random_quat(rng) for _ in range(20)]) * rng.choice([-1.0, 1.0], (20, 1))
    np.testing.assert_allclose(rotation_distances(qs, rs),
                               [rotation_distance(a, b) for a, b in zip(qs, rs, strict=True)],
                               atol=1e-12)
    np.testing.assert_allclose(rotation_distances(qs, ID), [rotation_distance(a, ID) for a in qs],
                               atol=1e-12)
    with pytest.raises(ValueError):
        axis_angle_to_quat(np.zeros(3), 1.0)


def test_random_quat_is_uniform_on_so3() -> None:
    # For uniform rotations the angle to a fixed rotation has density (1 - cos θ)/π:
    # mean = π/2 + 2/π, and the rotated x axis is uniform on the sphere (mean ≈ 0).
    rng = np.random.default_rng(3)
    qs = np.array([random_quat(rng) for _ in range(20000)])
    assert np.all(qs[:, 0] >= 0) and np.allclose(np.linalg.norm(qs, axis=1), 1.0)
    ang = 2 * np.arccos(np.clip(qs[:, 0], 0, 1))  # distance to the identity
    assert rotation_distance(ID, qs[0]) == pytest.approx(ang[0])
    assert ang.mean() == pytest.approx(math.pi / 2 + 2 / math.pi, abs=0.02)
    frac = np.mean(ang < 0.4)  # P(θ < 0.4) = (0.4 - sin 0.4)/π ≈ 0.0034
    assert frac == pytest.approx((0.4 - math.sin(0.4)) / math.pi, abs=0.0015)
    xs = np.array([quat_to_mat(q)[:, 0] for q in qs[:3000]])
    np.testing.assert_allclose(xs.mean(axis=0), 0.0, atol=0.05)
    # Same seed → same sequence.
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    np.testing.assert_array_equal(random_quat(r1), random_quat(r2))


# ---- trial rules -----------------------------------------------------------------------------
def _cfg(**kw) -> TrialConfig:
    return TrialConfig(**kw)


def test_trial_config_defaults_and_validation() -> None:
    c = TrialConfig()
    assert (c.success_threshold, c.goals_per_trial, c.goal_timeout_s) == (0.4, 50, 8.0)
    assert c.control_period == HAND.control_period
    assert c.drop_height == pytest.approx(default_drop_height(HAND))
    assert c.drop_height < HAND.cube.rest_pos[2] - HAND.cube.size / 2
    assert c.steps_per_goal == 100
    bad = [
        {"success_threshold": 0.0},
        {"success_threshold": 4.0},
        {"goals_per_trial": 0},
        {"goals_per_trial": 2.5},
        {"goal_timeout_s": -1.0},
        {"goal_timeout_s": float("nan")},
        {"control_period": 0.0},
        {"drop_height": float("inf")},
        {"drop_height": "low"},
        {"goal_timeout_s": 0.01},  # shorter than one control period
    ]
    for kw in bad:
        with pytest.raises(ValueError, match=next(iter(kw))):
            TrialConfig(**kw)
    with pytest.raises(ValueError) as e:  # every bad field named at once
        TrialConfig(success_threshold=-1, goals_per_trial=0)
    assert "success_threshold" in str(e.value) and "goals_per_trial" in str(e.value)


def test_trial_success_gives_bonus_and_new_goal() -> None:
    tr = TrialTracker(_cfg())
    g0 = tr.start(seed=5, cube_quat=ID)
    d0 = rotation_distance(ID, g0)
    # Halfway towards the goal: shaping reward = d0 - d1 exactly.
    half = quat_normalize(ID + canonical(g0) * np.sign(canonical(g0)[0]))
    ev = tr.step(0.08, REST, half)
    assert ev.state == "running" and not ev.ended
    assert ev.reward == pytest.approx(d0 - rotation_distance(half, g0))
    assert ev.rotation_error == pytest.approx(rotation_distance(half, g0))
    ev = tr.step(0.16, REST, g0)  # at the goal
    assert ev.state == "success" and ev.successes == 1 and ev.goal_index == 1
    assert ev.reward == pytest.approx(rotation_distance(half, g0) + SUCCESS_BONUS)
    assert ev.goal_changed and not np.allclose(ev.goal, g0)
    np.testing.assert_array_equal(tr.goal, ev.goal)
    # The next step's shaping is measured against the new goal.
    ev2 = tr.step(0.24, REST, g0)
    assert ev2.reward == pytest.approx(0.0, abs=1e-12)
    assert ev2.rotation_error == pytest.approx(rotation_distance(g0, ev.goal))


def test_trial_goal_sequence_depends_only_on_seed() -> None:
    a, b, c = TrialTracker(), TrialTracker(), TrialTracker()
    assert np.array_equal(a.start(3), b.start(3, cube_quat=ID))
    assert not np.array_equal(a.goal, c.start(4))
    seq_a, seq_b = [], []
    for k in range(5):  # reach each goal; the next goals also agree
        seq_a.append(a.step(0.08 * (k + 1), REST, a.goal).goal)
        seq_b.append(b.step(0.08 * (k + 1), REST, b.goal).goal)
    np.testing.assert_array_equal(seq_a, seq_b)


def test_far90_goals_are_each_at_least_90_degrees_from_the_last() -> None:
    far = TrialTracker(TrialConfig(goal_rule="far90", goals_per_trial=1000))
    uni = TrialTracker(TrialConfig(goals_per_trial=1000))
    assert np.array_equal(far.start(7), uni.start(7))  # the first goal is uniform under both
    gaps = {"far90": [], "uniform": []}
    for tr, name in ((far, "far90"), (uni, "uniform")):
        prev = tr.goal
        for k in range(200):
            g = tr.step(0.08 * (k + 1), REST, tr.goal).goal
            gaps[name].append(rotation_distance(prev, g))
            prev = g
    assert min(gaps["far90"]) >= math.pi / 2
    # Uniform goals come closer than 90 deg about 18% of the time: the rule really changes them.
    assert 0.08 < np.mean(np.array(gaps["uniform"]) < math.pi / 2) < 0.3
    with pytest.raises(ValueError, match="goal_rule"):
        TrialConfig(goal_rule="nearby")


def test_trial_drop_ends_with_penalty_and_is_checked_first() -> None:
    tr = TrialTracker(_cfg())
    g = tr.start(1, cube_quat=ID)
    ev = tr.step(0.08, REST, ID)
    assert ev.state == "running"
    low = REST - [0, 0, 0.2]
    ev = tr.step(0.16, low, g)  # at the goal, but below the drop height
    assert ev.state == "dropped" and ev.ended and ev.end_reason == "dropped"
    assert ev.reward == pytest.approx(rotation_distance(ID, g) + DROP_PENALTY)
    assert ev.successes == 0
    again = tr.step(0.24, REST, g)  # after the end: the final event again, reward 0
    assert again.state == "dropped" and again.reward == 0.0 and again.steps == ev.steps


def _away(goal: np.ndarray) -> np.ndarray:
    """An orientation 2.5 rad from ``goal``."""
    return quat_mul(goal, axis_angle_to_quat(np.array([1.0, 0, 0]), 2.5))


def test_trial_timeout_after_goal_timeout_of_stamps() -> None:
    tr = TrialTracker(_cfg())
    tr.start(2, cube_quat=ID, stamp=10.0)
    n = 0
    while True:
        n += 1
        ev = tr.step(10.0 + n * 0.08, REST, _away(tr.goal))
        if ev.ended:
            break
        assert ev.state == "running"
    assert ev.state == "timeout" and ev.end_reason == "timeout" and n == 100  # 8 s / 80 ms
    assert ev.reward == pytest.approx(0.0, abs=1e-12)  # no bonus, no penalty
    # Reaching a goal restarts the clock for the next one (no stamp: first step − period).
    tr.start(2)
    t = 0.0
    for _ in range(99):
        t += 0.08
        assert tr.step(t, REST, _away(tr.goal)).state == "running"
    t += 0.08
    assert tr.step(t, REST, tr.goal).state == "success"  # just in time, at the 100th step
    for _ in range(99):
        t += 0.08
        assert tr.step(t, REST, _away(tr.goal)).state == "running"
    t += 0.08
    assert tr.step(t, REST, _away(tr.goal)).state == "timeout"


def test_trial_completes_at_goals_per_trial() -> None:
    tr = TrialTracker(TrialConfig(goals_per_trial=50))
    tr.start(11)
    for k in range(1, 51):
        ev = tr.step(0.08 * k, REST, tr.goal)
        if k < 50:
            assert ev.state == "success" and not ev.ended
    assert ev.state == "completed" and ev.ended and ev.end_reason == "completed"
    assert ev.successes == 50 and ev.steps == 50 and ev.goal_index == 49


def test_trial_rewards_match_numpy_rotation_distance() -> None:
    """The tracker's scalar fast path gives the same distances and rewards as the public
    (validated) rotation_distance on the twice-normalized cube quaternion."""
    rng = np.random.default_rng(5)
    tr = TrialTracker(TrialConfig(success_threshold=0.05))
    goal = tr.start(9)
    d_prev = None
    for i in range(40):
        q = rng.normal(size=4) * 3.0
        ev = tr.step(0.08 * (i + 1), REST, q)
        d = rotation_distance(quat_normalize(q), goal)
        assert ev.rotation_error == d
        assert ev.reward == (0.0 if d_prev is None else d_prev - d)
        d_prev = d
        if ev.state == "success":
            goal = ev.goal
            d_prev = rotation_distance(quat_normalize(q), goal)


def test_trial_step_trusted_judges_like_step() -> None:
    """The env's unchecked path gives the same events, bit for bit, including goal changes,
    drops and the idempotent end; goals are shared read-only with the events."""
    rng = np.random.default_rng(7)
    a = TrialTracker(TrialConfig(success_threshold=1.2))
    b = TrialTracker(TrialConfig(success_threshold=1.2))
    a.start(3)
    b.start(3)
    for i in range(60):
        pos = REST + rng.normal(scale=0.01, size=3)
        if i == 50:
            pos[2] = -1.0  # a drop ends the trial
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        ea = a.step(0.08 * (i + 1), pos, q)
        eb = b.step_trusted(0.08 * (i + 1), float(pos[2]), q.tolist())
        assert ea.goal.tolist() == eb.goal.tolist()
        assert ea._replace(goal=None) == eb._replace(goal=None)
    assert eb.end_reason == "dropped" and a.last_event.successes >= 1
    with pytest.raises(ValueError):
        eb.goal[0] = 2.0  # read-only: the tracker's own goal
    with pytest.raises(RuntimeError):
        TrialTracker().step_trusted(0.08, 0.1, [1.0, 0.0, 0.0, 0.0])


def test_trial_rejects_bad_input() -> None:
    tr = TrialTracker()
    with pytest.raises(RuntimeError):
        tr.step(0.0, REST, ID)
    with pytest.raises(RuntimeError):
        _ = tr.goal
    tr.start(0)
    with pytest.raises(ValueError):
        tr.step(0.08, REST, np.array([np.nan, 0, 0, 1]))
    with pytest.raises(ValueError):
        tr.step(0.08, np.array([0, np.nan, 0]), ID)
    with pytest.raises(ValueError):
        tr.step(0.08, REST, np.zeros(4))
    tr.step(0.08, REST, ID)
    with pytest.raises(ValueError):
        tr.step(0.08, REST, ID)  # stamp did not advance
    with pytest.raises(ValueError, match="cube_pos"):
        tr.step(0.16, np.zeros(2), ID)
    with pytest.raises(ValueError, match="cube_quat"):
        tr.step(0.16, REST, np.zeros(3))
    with pytest.raises(ValueError, match="cube_quat"):
        tr.step(0.16, REST, np.array([0, 0, np.inf, 1]))
    with pytest.raises(ValueError):
        tr.start(-1)


# ---- scalar fast paths: bit-identical to the numpy reference ---------------------------------------
def _ref_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _ref_normalize(q: np.ndarray) -> np.ndarray:
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def test_single_quaternion_fast_paths_match_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        a, b = rng.normal(size=4) * rng.uniform(0.2, 5.0), rng.normal(size=4)
        assert np.array_equal(quat_mul(a, b), _ref_mul(a, b))
        assert np.array_equal(quat_normalize(a), _ref_normalize(a))
        an, bn = _ref_normalize(a), _ref_normalize(b)
        rel = _ref_mul(an * np.array([1.0, -1.0, -1.0, -1.0]), bn)
        ref_d = float(2.0 * np.arctan2(np.linalg.norm(rel[1:]), abs(rel[0])))
        assert rotation_distance(a, b) == pytest.approx(ref_d, abs=1e-12)
        batch = np.stack([a, b])  # the batched (numpy) path agrees with the single one
        assert np.array_equal(quat_normalize(batch)[1], quat_normalize(b))
        assert np.array_equal(quat_mul(batch, batch[::-1])[0], quat_mul(a, b))
        c = _ref_normalize(a)
        assert np.array_equal(canonical(a), -c if c[0] < 0 else c)
        ref_rel = _ref_mul(_ref_normalize(b), _ref_normalize(a) * np.array([1.0, -1, -1, -1]))
        assert np.array_equal(relative_goal_quat(a, b), -ref_rel if ref_rel[0] < 0 else ref_rel)


def test_single_quaternion_fast_paths_still_validate() -> None:
    for bad in ([np.nan, 0, 0, 1], [np.inf, 0, 0, 0]):
        with pytest.raises(ValueError, match="not finite"):
            quat_normalize(np.array(bad))
        with pytest.raises(ValueError, match="not finite"):
            rotation_distance(np.array(bad), ID)
    with pytest.raises(ValueError, match="zero quaternion"):
        quat_normalize(np.zeros(4))
    with pytest.raises(ValueError, match="zero quaternion"):
        rotation_distance(ID, np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        quat_mul(np.zeros(3), ID)
    with pytest.raises(ValueError, match="single quaternions"):
        rotation_distance(np.zeros((2, 4)) + ID, ID)


def test_policy_observation_equals_numpy_reference() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        tips, pos = rng.normal(size=(5, 3)), rng.normal(size=3)
        cube, goal = rng.normal(size=4), random_quat(rng)
        ref = np.concatenate([tips.reshape(-1), pos, relative_goal_quat(cube, goal)])
        assert np.array_equal(policy_observation(tips, pos, cube, goal), ref.astype(np.float32))
        # The unchecked fast path (the env's own state) gives the same bits.
        assert np.array_equal(policy_observation(tips, pos, cube, goal, checked=False),
                              ref.astype(np.float32))


# ---- observations -----------------------------------------------------------------------------
def test_policy_observation_layout_and_relative_goal() -> None:
    assert POLICY_OBS_LAYOUT == [("fingertip_pos", 15), ("cube_pos", 3), ("rel_goal_quat", 4)]
    assert obs_dim() == 22
    rng = np.random.default_rng(0)
    tips = rng.normal(size=(5, 3))
    pos = np.array([0.01, 0.03, 0.06])
    cube, goal = random_quat(rng), random_quat(rng)
    obs = policy_observation(tips, pos, -cube, goal)  # sign of the cube quat must not matter
    assert obs.dtype == np.float32 and obs.shape == (22,)
    sl = obs_slices()
    np.testing.assert_allclose(obs[sl["fingertip_pos"]], tips.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(obs[sl["cube_pos"]], pos, rtol=1e-6)
    rel = obs[sl["rel_goal_quat"]].astype(np.float64)
    assert rel[0] >= 0
    # rel ⊗ cube = goal (up to sign), and the angle of rel is the distance to the goal.
    assert rotation_distance(quat_mul(rel, cube), goal) < 1e-5
    assert 2 * math.acos(min(1.0, rel[0])) == pytest.approx(rotation_distance(cube, goal), abs=1e-5)
    np.testing.assert_allclose(relative_goal_quat(cube, cube), ID, atol=1e-12)


def test_policy_observation_validation() -> None:
    tips, pos = np.zeros((5, 3)), np.zeros(3)
    with pytest.raises(ValueError, match="fingertips"):
        policy_observation(np.zeros((4, 3)), pos, ID, ID)
    with pytest.raises(ValueError, match="cube_pos"):
        policy_observation(tips, np.zeros(2), ID, ID)
    with pytest.raises(ValueError, match="goal_quat"):
        policy_observation(tips, pos, ID, np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        policy_observation(tips, np.array([0, np.inf, 0]), ID, ID)


# ---- actions ------------------------------------------------------------------------------------
def test_action_decoder_bins_ema_and_relative_targets() -> None:
    dec = ActionDecoder(HAND, bins=11, max_delta=0.15, ema=0.3)
    n = HAND.n_actuators
    assert n == 20
    np.testing.assert_allclose(dec.bin_values[[0, 5, 10]], [-0.15, 0.0, 0.15])
    lo, hi = HAND.actuator_limits()
    mid = (lo + hi) / 2
    dec.reset(mid)
    up = np.full(n, 10)
    t1 = dec.decode(up)
    np.testing.assert_allclose(t1, mid + 0.7 * 0.15)  # s1 = 0.3*0 + 0.7*0.15
    # Manual recurrence: s = 0.3 s + 0.7 delta; target = clip(target + s).
    s_, tgt, clipped = np.full(n, 0.105), t1.copy(), False
    for b in (10, 10, 5, 5, 0, 3):
        s_ = 0.3 * s_ + 0.7 * (-0.15 + b * 0.03)
        tgt = np.clip(tgt + s_, lo, hi)
        clipped |= bool(np.any(tgt == hi))
        np.testing.assert_allclose(dec.decode(np.full(n, b)), tgt, atol=1e-12)
    np.testing.assert_allclose(dec.smoothed_delta, s_)
    assert clipped  # the narrow THJ3 range hit its limit on the way
    d = dec.describe()
    assert d == {"mode": "relative", "bins": 11, "max_delta": 0.15, "ema": 0.3,
                 "actuators": HAND.actuator_names}


def test_action_decoder_clips_to_registry_limits_without_windup() -> None:
    dec = ActionDecoder("shadow", ema=0.0)
    assert dec.max_delta == 0.3  # Shadow's own action scale (max_delta_of)
    lo, hi = HAND.actuator_limits()
    dec.reset(hi + 1.0)  # out-of-range start is clipped
    np.testing.assert_array_equal(dec.targets, hi)
    for _ in range(20):
        t = dec.decode(np.full(20, 10))
    np.testing.assert_array_equal(t, hi)
    t = dec.decode(np.zeros(20, dtype=int))  # reversing acts at once (no wind-up past hi)
    np.testing.assert_allclose(t, np.maximum(hi - 0.3, lo))
    for _ in range(50):
        t = dec.decode(np.zeros(20, dtype=int))
    np.testing.assert_array_equal(t, lo)


def test_action_scale_is_per_hand_unless_given() -> None:
    # Shadow's fingers need 0.3 rad per step to reach the cube within a plan; LEAP keeps
    # Dactyl's 0.15. An explicit max_delta always wins, and a model's contract records its own.
    assert max_delta_of("shadow") == max_delta_of(HAND) == 0.3
    assert max_delta_of("leap") == MAX_DELTA == 0.15
    assert ActionDecoder("leap").max_delta == 0.15
    assert ActionDecoder("shadow").describe()["max_delta"] == 0.3
    assert ActionDecoder("shadow", max_delta=0.15).bin_values[-1] == 0.15
    assert HAND.facts_hash() == get_hand("shadow").facts_hash()  # not a hand fact: no new hash


def test_action_decoder_validation() -> None:
    dec = ActionDecoder(HAND)
    with pytest.raises(RuntimeError):
        dec.decode(np.full(20, 5))
    dec.reset(np.zeros(20))
    for bad in (np.full(19, 5), np.full(20, 11), np.full(20, -1), np.full(20, 2.5),
                np.array(["a"] * 20)):
        with pytest.raises(ValueError):
            dec.decode(bad)
    assert dec.decode(np.full(20, 5.0)).shape == (20,)  # whole floats accepted
    with pytest.raises(ValueError):
        dec.reset(np.full(20, np.nan))
    with pytest.raises(ValueError):
        dec.reset(np.zeros(24))
    for kw in ({"bins": 1}, {"max_delta": 0.0}, {"ema": 1.0}, {"ema": -0.1}):
        with pytest.raises(ValueError):
            ActionDecoder(HAND, **kw)


# ---- stats ---------------------------------------------------------------------------------------
def test_rolling_stats_window_and_percentiles() -> None:
    s = RollingStats(window=100)
    assert math.isnan(s.p50_ms) and s.summary()["count"] == 0
    for v in range(1, 1001):
        s.add(v / 1000.0)  # 1..1000 ms
    s.add(float("nan"))
    assert s.count == 1000 and len(s) == 100 and s.rejected == 1
    sm = s.summary()
    assert sm["max_ms"] == pytest.approx(1000.0)
    assert sm["p50_ms"] == pytest.approx(950.5)
    assert sm["mean_ms"] == pytest.approx(950.5)
    assert 990 < sm["p99_ms"] <= 1000
    assert s.as_strings("step_")["step_count"] == "1000"
    with pytest.raises(ValueError):
        RollingStats(0)


def test_no_rclpy_in_pure_modules() -> None:
    import pathlib

    import dex_common

    root = pathlib.Path(dex_common.__file__).parent
    for f in root.glob("*.py"):
        if f.name != "ros_util.py":
            assert "rclpy" not in f.read_text(), f"{f.name} imports rclpy"


# ---- ros_util (the one rclpy module) ---------------------------------------------------------------
def test_stamp_round_trip_exact_for_ms_sim_stamps() -> None:
    from dex_common.ros_util import float_to_stamp, stamp_to_float, stamp_to_ns

    for k in list(range(0, 200_000, 7)) + [10**8 - 1]:  # ms multiples up to ~28 h of sim time
        t = k / 1000
        st = float_to_stamp(t)
        assert stamp_to_ns(st) == k * 1_000_000, t
        assert stamp_to_float(st) == t
        assert 0 <= st.nanosec < 1_000_000_000
        assert float_to_stamp(stamp_to_float(st)) == st
    st = float_to_stamp(-0.5)
    assert (st.sec, st.nanosec) == (-1, 500_000_000)
    assert float_to_stamp(1.9999999999).sec == 2  # rounding carries into the seconds
    with pytest.raises(ValueError):
        float_to_stamp(float("nan"))


def test_diagnostics_publisher_immediate_and_steady_timer_under_sim_time(dds_env) -> None:
    import time

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from dex_common.ros_util import STATE_QOS, WARN, DiagnosticsPublisher

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        # use_sim_time with no /clock: a ROS-clock timer would never fire.
        node = rclpy.create_node("diag_test", context=ctx,
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        listener = rclpy.create_node("diag_listener", context=ctx)
        got: list[DiagnosticArray] = []
        listener.create_subscription(DiagnosticArray, "/diagnostics", got.append, STATE_QOS)
        diag = DiagnosticsPublisher(node, "hand0", period_s=0.2)
        ex = SingleThreadedExecutor(context=ctx)
        ex.add_node(node)
        ex.add_node(listener)
        deadline = time.monotonic() + 5.0
        while listener.count_publishers("/diagnostics") == 0 and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        diag.report("sync", WARN, "dropping", {"dropped_overflow": 3, "ok": False, "x": 0.5})
        while len(got) < 3 and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        assert len(got) >= 3, "immediate publish + steady-clock republish expected"
        st = got[0].status[0]
        assert (st.name, st.level, st.message, st.hardware_id) == ("sync", WARN, "dropping",
                                                                   "hand0")
        assert {kv.key: kv.value for kv in st.values} == {
            "dropped_overflow": "3", "ok": "false", "x": "0.5"}
        assert all(a.status[0].name == "sync" for a in got)
        diag.destroy()
        ex.shutdown()
        node.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_the_pose_gate_rejects_jumps_no_cube_can_make_and_follows_a_real_move() -> None:
    from dex_common.pose_gate import PoseJumpGate
    from dex_common.rotations import axis_angle_to_quat

    z = np.array([0.0, 0.0, 1.0])
    p0 = np.array([0.0, 0.0, 0.1])
    gate = PoseJumpGate(max_angular_speed=25.0, max_linear_speed=3.0, confirm=2)
    assert gate.check(0.0, p0, axis_angle_to_quat(z, 0.0)).plausible  # no reference yet
    v = gate.check(0.08, p0, axis_angle_to_quat(z, 0.4))  # 5 rad/s: fingers can
    assert v.plausible and v.angular_speed == pytest.approx(5.0)
    flip = gate.check(0.16, p0, axis_angle_to_quat(z, 0.4 + math.pi))  # 39 rad/s: a face flip
    assert not flip.plausible and flip.angular_speed == pytest.approx(math.pi / 0.08)
    assert gate.check(0.24, p0, axis_angle_to_quat(z, 0.5)).plausible  # measured from 0.08
    assert not gate.check(0.32, p0 + [0.3, 0, 0], axis_angle_to_quat(z, 0.5)).plausible  # 3.75 m/s
    # The cube really was moved (put back by hand): two estimates that agree with each other
    # become the new reference; the first of them is still rejected.
    gate.reset()
    gate.check(1.0, p0, axis_angle_to_quat(z, 0.0))
    assert not gate.check(1.08, p0, axis_angle_to_quat(z, 2.5)).plausible
    assert gate.check(1.16, p0, axis_angle_to_quat(z, 2.55)).plausible
    assert gate.check(1.24, p0, axis_angle_to_quat(z, 2.6)).plausible
    assert not gate.check(1.24, p0, axis_angle_to_quat(z, 2.6)).plausible  # dt 0: impossible
    assert gate.rejected == 4
    with pytest.raises(ValueError):
        PoseJumpGate(max_angular_speed=0.0)
