"""ADR (dex_sim.adr): boundary moves, limits, sampling, queues, entropy, resume, VectorADR."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from dex_sim.adr import (
    ADR,
    ENTROPY_FLOOR_WIDTH,
    ADRParam,
    Boundary,
    VectorADR,
    adr_param_from_range,
    default_adr_params,
)


def params() -> list[ADRParam]:
    return [ADRParam("friction_scale", 1.0, 0.02, 0.5, 1.1),
            ADRParam("mass_scale", 1.0, 0.1, 0.8, 1.5),
            ADRParam("noise", 0.0, 0.001, 0.0, 0.01)]


def feed(adr: ADR, b: Boundary, value: float, n: int) -> list:
    return [adr.report(b, value) for _ in range(n)]


def test_expand_above_t_high_and_shrink_below_t_low() -> None:
    adr = ADR(params(), queue_size=4)
    hi, lo = Boundary("friction_scale", "high"), Boundary("friction_scale", "low")
    feed(adr, hi, 25, 4)
    assert adr.ranges()["friction_scale"] == pytest.approx((1.0, 1.02))
    feed(adr, lo, 20, 4)  # mean == t_high expands too
    assert adr.ranges()["friction_scale"] == pytest.approx((0.98, 1.02))
    feed(adr, hi, 3, 4)
    assert adr.ranges()["friction_scale"] == pytest.approx((0.98, 1.0))
    feed(adr, lo, 15, 4)  # between thresholds: no change
    assert adr.ranges()["friction_scale"] == pytest.approx((0.98, 1.0))
    feed(adr, lo, 10, 4)  # mean == t_low is not below t_low: no change
    assert adr.ranges()["friction_scale"] == pytest.approx((0.98, 1.0))
    assert [(h["side"], h["action"]) for h in adr.history] == [
        ("high", "expand"), ("low", "expand"), ("high", "shrink")]
    assert adr.counters["expansions"] == 2 and adr.counters["shrinks"] == 1
    assert adr.counters["decisions"] == 5
    assert adr.ranges()["mass_scale"] == (1.0, 1.0)  # untouched


def test_never_past_nominal_or_limits() -> None:
    adr = ADR(params(), queue_size=1)
    for side in ("low", "high"):
        feed(adr, Boundary("mass_scale", side), 0, 5)  # shrinking a collapsed range
    assert adr.ranges()["mass_scale"] == (1.0, 1.0)
    assert adr.history == []  # clamped no-ops are not changes
    feed(adr, Boundary("mass_scale", "high"), 30, 20)
    feed(adr, Boundary("mass_scale", "low"), 30, 20)
    assert adr.ranges()["mass_scale"] == pytest.approx((0.8, 1.5))
    feed(adr, Boundary("mass_scale", "high"), 0, 40)
    assert adr.ranges()["mass_scale"] == pytest.approx((0.8, 1.0))
    # noise: nominal == lower limit, the low side can never move
    feed(adr, Boundary("noise", "low"), 30, 5)
    assert adr.ranges()["noise"] == (0.0, 0.0)


def test_episode_ranges_boundary_frequency_and_pinning() -> None:
    adr = ADR(params(), p_boundary=0.5)
    adr._lo["mass_scale"], adr._hi["mass_scale"] = 0.9, 1.2
    rng = np.random.default_rng(0)
    n, hits = 4000, 0
    sides: dict[Boundary, int] = {}
    for _ in range(n):
        r, b = adr.episode_ranges(rng)
        if b is None:
            assert r == adr.ranges()
            continue
        hits += 1
        sides[b] = sides.get(b, 0) + 1
        v = adr.value(b)
        assert r[b.name] == (v, v)
        assert all(r[k] == adr.ranges()[k] for k in r if k != b.name)
    assert abs(hits / n - 0.5) < 0.03  # 4σ ≈ 0.032
    assert len(sides) == 6 and min(sides.values()) > hits / 6 * 0.8  # uniform over boundaries
    assert adr.counters["episodes"] == n and adr.counters["boundary_episodes"] == hits
    never = ADR(params(), p_boundary=0.0)
    assert all(never.episode_ranges(rng)[1] is None for _ in range(200))
    always = ADR(params(), p_boundary=1.0)
    assert all(always.episode_ranges(rng)[1] is not None for _ in range(200))


def test_queue_decides_only_when_full_then_clears() -> None:
    adr = ADR(params(), queue_size=5)
    b = Boundary("friction_scale", "high")
    assert feed(adr, b, 30, 4) == [None] * 4
    assert adr.queue(b) == [30.0] * 4 and adr.ranges()["friction_scale"] == (1.0, 1.0)
    assert adr.report(None, 30) is None  # a normal episode touches no queue
    rec = adr.report(b, 30)
    assert rec is not None and rec["action"] == "expand" and rec["mean"] == 30
    assert adr.queue(b) == []
    # queues are per boundary: other boundary's results do not count towards this one
    feed(adr, Boundary("friction_scale", "low"), 0, 4)
    assert adr.queue(b) == [] and len(adr.queue(Boundary("friction_scale", "low"))) == 4
    # mean over the whole queue decides: 4 × 30 + 1 × 0 → 24 ≥ 20 → expand
    feed(adr, b, 30, 4)
    assert adr.report(b, 0)["action"] == "expand"
    assert adr.ranges()["friction_scale"][1] == pytest.approx(1.04)
    rec = feed(adr, b, 12, 5)[-1]  # in between → keep, queue still cleared
    assert rec["action"] == "keep" and adr.queue(b) == []


def test_entropy_formula_and_growth() -> None:
    adr = ADR(params(), queue_size=1)
    assert adr.entropy() == pytest.approx(math.log(ENTROPY_FLOOR_WIDTH))
    assert math.isnan(adr.entropy_active())
    values = [adr.entropy()]
    for b in [Boundary("friction_scale", "high"), Boundary("mass_scale", "low"),
              Boundary("mass_scale", "high"), Boundary("noise", "high")]:
        adr.report(b, 25)
        values.append(adr.entropy())
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    w = [0.02, 0.2, 0.001]
    assert adr.entropy() == pytest.approx(np.mean(np.log(w)))
    assert adr.entropy_active() == pytest.approx(np.mean(np.log(w)))
    adr.report(Boundary("noise", "high"), 0)  # noise collapses again → floored
    expect = (math.log(0.02) + math.log(0.2) + math.log(ENTROPY_FLOOR_WIDTH)) / 3
    assert adr.entropy() == pytest.approx(expect)
    assert adr.entropy_active() == pytest.approx((math.log(0.02) + math.log(0.2)) / 2)
    with pytest.raises(ValueError, match="floor"):
        adr.entropy(floor=0.0)


def run(adr: ADR, rng: np.random.Generator, n: int) -> list:
    out = []
    for _ in range(n):
        r, b = adr.episode_ranges(rng)
        s = float(rng.integers(0, 40))
        out.append((r, b, adr.report(b, s)))
    return out


def test_state_dict_round_trip_resumes_identically() -> None:
    a = ADR(params(), queue_size=6, t_low=12)
    rng = np.random.default_rng(3)
    run(a, rng, 300)
    state = json.loads(json.dumps(a.state_dict()))  # must be JSON-serialisable
    rng_state = rng.bit_generator.state
    assert any(len(q) for q in state["queues"].values())  # non-trivial queues are saved
    assert a.history  # and some changes happened
    b = ADR(params(), queue_size=6, t_low=12)
    b.load_state_dict(state)
    c = ADR.from_state_dict(state)
    assert b.ranges() == a.ranges() == c.ranges() and b.history == a.history
    ra = run(a, rng, 300)
    rng.bit_generator.state = rng_state
    rb = run(b, rng, 300)
    assert ra == rb and a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="config"):
        ADR(params(), queue_size=7, t_low=12).load_state_dict(state)
    with pytest.raises(ValueError, match="different parameters"):
        ADR(params()[:2], queue_size=6, t_low=12).load_state_dict(state)


def test_vector_adr_fraction_and_reports() -> None:
    v = VectorADR(params(), n_envs=10, queue_size=3)
    assert v.n_boundary == 4 and v.adr.t_low == 5 and v.adr.queue_size == 3
    rng = np.random.default_rng(1)
    seen = 0
    for _ in range(50):
        for i in range(10):
            r, b = v.assign(i, rng)
            assert (b is not None) == v.is_boundary_slot(i) == (i < 4)
            if b is None:
                assert r == v.ranges()
            else:
                seen += 1
                assert r[b.name] == (v.adr.value(b),) * 2
            v.report(i, 30)
    assert seen == 200 and v.adr.counters["boundary_episodes"] == 200
    assert v.adr.counters["reports"] == 200 and v.history  # all good → ranges grew
    assert v.entropy() > math.log(ENTROPY_FLOOR_WIDTH)
    assert v.report(0, 30) is None  # nothing pending after the report
    state = json.loads(json.dumps(v.state_dict()))
    w = VectorADR(params(), n_envs=10, queue_size=3)
    w.load_state_dict(state)
    assert w.ranges() == v.ranges()
    u = VectorADR(params(), n_envs=2, queue_size=2)  # advance = report then assign
    r0, b0, rec = u.advance(0, rng)
    assert b0 is not None and rec is None and u._pending[0] == b0
    for _ in range(3):
        _, b1, rec = u.advance(0, rng, 30)
    assert u.adr.counters["reports"] == 3 and u.adr.counters["decisions"] == 1
    assert u._pending[0] == b1 and u.advance(1, rng, 30)[1:] == (None, None)
    assert VectorADR(params(), n_envs=1).n_boundary == 1
    assert VectorADR(params(), n_envs=8, boundary_fraction=0.0).n_boundary == 0
    with pytest.raises(ValueError, match="env_index"):
        v.assign(10, rng)


@pytest.mark.parametrize("kwargs, match", [
    ({"step": 0.0}, "step must be > 0"),
    ({"nominal": 2.0}, "lower_limit <= nominal"),
    ({"lower_limit": 1.0, "upper_limit": 1.0, "nominal": 1.0}, "nothing to adapt"),
    ({"initial_low": 1.05}, "initial_low"),
    ({"initial_high": 1.6}, "initial_high"),
    ({"nominal": float("nan")}, "finite"),
    ({"name": "a:b"}, "name"),
])
def test_bad_param(kwargs: dict, match: str) -> None:
    base = {"name": "x", "nominal": 1.0, "step": 0.1, "lower_limit": 0.5, "upper_limit": 1.5}
    with pytest.raises(ValueError, match=match):
        ADRParam(**{**base, **kwargs})


def test_bad_adr_config() -> None:
    p = params()
    for kw, match in [({"p_boundary": 1.5}, "p_boundary"), ({"queue_size": 0}, "queue_size"),
                      ({"t_high": 5, "t_low": 10}, "t_low < t_high")]:
        with pytest.raises(ValueError, match=match):
            ADR(p, **kw)
    with pytest.raises(ValueError, match="at least one"):
        ADR([])
    with pytest.raises(ValueError, match="duplicate"):
        ADR([p[0], p[0]])
    with pytest.raises(ValueError, match="unknown ADR boundary"):
        ADR(p).report(("friction_scale", "middle"), 1)
    with pytest.raises(ValueError, match="boundary_fraction"):
        VectorADR(p, n_envs=4, boundary_fraction=-0.1)
    with pytest.raises(ValueError, match="n_envs"):
        VectorADR(p, n_envs=0)


def test_initial_range_is_used() -> None:
    adr = ADR([ADRParam("g", 0.0, 0.1, -1.0, 1.0, initial_low=-0.3, initial_high=0.2)])
    assert adr.ranges() == {"g": (-0.3, 0.2)}
    adr.reset()
    assert adr.ranges() == {"g": (-0.3, 0.2)}


def test_default_params_from_table() -> None:
    row = SimpleNamespace
    table = [row(name="friction_scale", dist="uniform", low=0.7, high=1.3, adr=True),
             row(name="obs_noise", dist="uniform", low=0.0, high=0.005, adr=True),
             row(name="damping_scale", dist="loguniform", low=0.5, high=2.0, adr=True),
             row(name="latency", dist="uniform", low=0.02, high=0.06, adr=True),
             row(name="rate", dist="uniform", low=1250.0, high=10000.0, adr=True,
                 nominal=10000.0),
             row(name="force_prob", dist="loguniform", low=0.001, high=0.1, adr=True,
                 nominal=0.0),
             row(name="kp_scale", dist="uniform", low=0.75, high=1.5, adr=False),
             row(name="action_noise", dist="normal", low=0.0, high=0.1, adr=True)]
    ps = {p.name: p for p in default_adr_params(table)}
    assert set(ps) == {"friction_scale", "obs_noise", "damping_scale", "latency", "rate",
                       "force_prob"}
    f = ps["friction_scale"]
    assert (f.nominal, f.step) == (1.0, 0.02)  # Table 15's Δ on a scale around 1
    assert (f.lower_limit, f.upper_limit) == pytest.approx((0.4, 1.6))
    n = ps["obs_noise"]
    assert (n.nominal, n.lower_limit) == (0.0, 0.0) and n.upper_limit == pytest.approx(0.01)
    d = ps["damping_scale"]
    assert (d.lower_limit, d.upper_limit) == pytest.approx((0.25, 4.0))
    lat = ps["latency"]
    assert lat.nominal == pytest.approx(0.04) and lat.lower_limit == pytest.approx(0.01)
    r = ps["rate"]  # table nominal at Dactyl's upper end: only the low side can grow
    assert (r.nominal, r.upper_limit, r.lower_limit) == (10000.0, 10000.0, 625.0)
    fp = ps["force_prob"]  # loguniform needs > 0: starts at low; a probability stays <= 1
    assert (fp.nominal, fp.lower_limit, fp.upper_limit) == (0.001, 0.001, 1.0)
    adr = ADR(list(ps.values()))
    assert all(lo == hi for lo, hi in adr.ranges().values())  # starts collapsed
    with pytest.raises(ValueError, match="low < high"):
        adr_param_from_range("bad", "uniform", 1.0, 1.0)


def test_default_params_fit_the_randomizer() -> None:
    import dex_sim.randomization as rz
    ps = default_adr_params()
    assert {p.name for p in ps} == {r.name for r in rz.RANDOMIZATIONS
                                    if r.adr and r.dist in ("uniform", "loguniform")}
    adr = ADR(ps, queue_size=1)
    rz.check_ranges(adr.ranges())  # collapsed ranges are valid overrides
    for _ in range(600):  # grow everything to the limits: still valid overrides
        for b in adr.boundaries:
            adr.report(b, 30)
    assert all((lo, hi) == (p.lower_limit, p.upper_limit)
               for p, (lo, hi) in zip(ps, adr.ranges().values(), strict=True))
    rz.check_ranges(adr.ranges())
    for p in ps:  # the grown range covers Dactyl's
        row = rz.PARAMS[p.name]
        assert p.lower_limit <= max(row.low, p.nominal) and p.upper_limit >= row.high


def test_default_params_needs_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dex_sim.randomization", None)
    with pytest.raises(RuntimeError, match="dex_sim.randomization"):
        default_adr_params()
