"""CommandGuard: rejects malformed and absurd commands (holding the last safe one), clamps small
overshoots to the limits, and rate-limits jumps by default."""

import numpy as np
import pytest

from dex_description.registry import get_hand
from dex_hardware.safety import ABSURD_MARGIN_RAD, MAX_STEP_RAD, CommandGuard, default_targets

SPEC = get_hand("shadow")
LO, HI = SPEC.actuator_limits()


def test_initial_last_safe_is_default_pose_within_limits():
    g = CommandGuard("shadow")
    np.testing.assert_allclose(g.last_safe, default_targets(SPEC))
    assert g.last_safe.shape == (SPEC.n_actuators,)
    assert np.all(g.last_safe >= LO) and np.all(g.last_safe <= HI)


def test_valid_command_passes_unchanged():
    g = CommandGuard("shadow", max_delta=None)
    cmd = (LO + HI) / 2
    ok, out, reason = g.check(cmd)
    assert ok and reason == ""
    np.testing.assert_array_equal(out, cmd)
    np.testing.assert_array_equal(g.last_safe, cmd)


def test_out_of_range_is_clamped_and_reported():
    g = CommandGuard("shadow", max_delta=None)
    cmd = HI + 0.2
    cmd[0] = LO[0] - 0.9
    ok, out, reason = g.check(cmd)
    assert ok
    np.testing.assert_array_equal(out[1:], HI[1:])
    assert out[0] == LO[0]
    assert "clamped" in reason and SPEC.actuator_names[0] in reason
    assert g.n_clamped == 1


@pytest.mark.parametrize(
    "bad, word",
    [
        ([0.0] * (SPEC.n_actuators - 1), "shape"),
        ([0.0] * (SPEC.n_actuators + 1), "shape"),
        ([[0.0] * SPEC.n_actuators], "shape"),
        ([float("nan")] + [0.0] * (SPEC.n_actuators - 1), "non-finite"),
        ([0.0] * (SPEC.n_actuators - 1) + [float("inf")], "non-finite"),
        (["a"] * SPEC.n_actuators, "not numeric"),
        (None, "shape"),
    ],
)
def test_bad_command_rejected_and_last_safe_held(bad, word):
    g = CommandGuard("shadow", max_delta=None)
    good = (LO + HI) / 2
    assert g.check(good)[0]
    ok, out, reason = g.check(bad)
    assert not ok
    assert word in reason and "holding" in reason
    np.testing.assert_array_equal(out, good)
    np.testing.assert_array_equal(g.last_safe, good)
    assert g.n_rejected == 1


def test_nan_reason_names_the_actuator():
    g = CommandGuard("shadow", max_delta=None)
    cmd = np.zeros(SPEC.n_actuators)
    cmd[5] = np.nan
    ok, _, reason = g.check(cmd)
    assert not ok and SPEC.actuator_names[5] in reason


def test_rate_limit():
    g = CommandGuard("shadow", max_delta=0.1)
    start = g.last_safe
    ok, out, reason = g.check(HI)
    assert ok and "rate-limited" in reason
    assert np.all(np.abs(out - start) <= 0.1 + 1e-12)
    assert np.any(out != start)


def test_bad_parameters_raise():
    with pytest.raises(ValueError):
        CommandGuard("shadow", max_delta=-1.0)
    with pytest.raises(ValueError):
        CommandGuard("shadow", initial=[0.0, 1.0])
    with pytest.raises(KeyError):
        CommandGuard("no_such_hand")


@pytest.mark.parametrize("value", [1e9, -1e9])
def test_absurd_target_is_rejected_not_clamped(value):
    # Clamping 1e9 would execute it: the hand slams to its limits and drops the cube.
    g = CommandGuard("shadow")
    before = g.last_safe
    cmd = before.copy()
    cmd[3] = value
    ok, out, reason = g.check(cmd)
    assert not ok and "absurd" in reason and SPEC.actuator_names[3] in reason
    np.testing.assert_array_equal(out, before)
    # Just inside the margin is still a (clamped) target.
    cmd[3] = HI[3] + 0.9 * ABSURD_MARGIN_RAD if value > 0 else LO[3] - 0.9 * ABSURD_MARGIN_RAD
    ok, out, reason = g.check(cmd)
    assert ok and "clamped" in reason


def test_jumps_are_rate_limited_by_default_and_converge():
    g = CommandGuard("shadow")
    start, goal = g.last_safe, HI.copy()
    ok, out, reason = g.check(goal)
    assert ok and "rate-limited" in reason and g.n_rate_limited == 1
    assert np.max(np.abs(out - start)) == pytest.approx(MAX_STEP_RAD)
    for _ in range(20):  # the same command repeated reaches its target
        ok, out, _ = g.check(goal)
    np.testing.assert_allclose(out, goal)
