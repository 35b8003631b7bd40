"""Domain randomization (Dactyl, D Tables 1, 7, 8): THE one table and the code that applies it.

``RANDOMIZATIONS`` lists every randomized quantity once, each row with its range, how it is
drawn (``dist`` x ``per``) and what it writes (``write``, onto ``fields`` of the model or the
episode's step effects): adding a randomization is adding a row. ``docs/randomization.md`` is
generated from it (``python -m dex_sim.randomization --markdown``), and ADR (``dex_sim.adr``)
reads it to know which ranges it may widen (``adr=True``) and from which ``nominal`` value.

Meaning of ``low`` / ``high`` per ``dist`` (a ``ranges`` override ``{name: (lo, hi)}`` replaces
them for one episode with the same meaning):

- ``uniform`` / ``loguniform``: the interval a value is drawn from (per episode; one value per
  body / geom / joint / actuator where the row says "per ...").
- ``normal``: ``low`` = mean, ``high`` = standard deviation.
- ``bernoulli``: ``low`` = probability (``high`` repeats it).
- ``event``: ``low`` = rate (1/s) of a Poisson event, ``high`` = its duration (s).

Model of each effect (what "applied" means here):

- physics rows are written into the ``MjModel`` once per episode by ``apply``, always starting
  from the nominal values captured when the randomizer was built (so draws never compound).
- observation noise: a per-episode offset (correlated) plus a per-step draw (uncorrelated). The
  cube orientation is rotated by an axis-angle with a uniformly random axis and an angle
  ~ N(0, sigma), episode rotation then step rotation, both in the world frame.
- dropout: a marker dropout starts with probability rate x control_period per control step and
  freezes the cube pose reading (the last noisy value) for ``duration`` s.
- action noise, in normalized action units (the actuator's half range maps to 1):
  ``t' = mid + (t - mid)(1 + m) + half_range (c + u)``, m, c per episode, u per step; clipped to
  the actuator limits.
- backlash: per actuator a dead band of width w; the effective target moves only when the command
  leaves [e - w/2, e + w/2] (a play operator: reversing direction loses w of travel).
- action delay: a delayed actuator receives the previous control step's (processed) target.
- random force: per control step, with the episode's probability p, a new force ~ N(0, sigma x
  cube mass) per axis replaces the current one; it decays x0.99 per control step
  (``data.xfrc_applied`` on the cube body, constant within a control step).
- timing: each control step lasts ``control_period + Exp(lambda)`` s, lambda per episode; done by
  stretching the physics timestep for that control step (same substep count), so the sim clock
  (``HandCubeSim.time``) stays monotonic and integer-ns exact.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from dex_sim.effects import StepEffects
from dex_sim.physics import HandCubeSim

# How many values a row draws per episode: one per "per" (counted in the model by the randomizer).
# "step": a per-step standard deviation or event (the row's range is used as is, no draw);
# "rotation": an axis-angle rotation (4 standard normals: axis, angle).
PER = ("episode", "body", "geom", "hand_dof", "hand_joint_bound", "actuator", "axis",
       "fingertip_coordinate", "rotation", "step")


@dataclass(frozen=True)
class RandParam:
    """One randomization: its range, how it is drawn (``dist`` x ``per``) and what it writes.

    ``write(r, value)`` puts one episode's value into the randomizer ``r``: model arrays
    (``r.views``, reset to nominal before any row writes), the episode's step effects
    (``r.effects``) or its per-step draw settings (``r.steps``). Rows write in table order and
    only when enabled; adding a row is writing it here, nothing else."""

    name: str
    group: str  # physics | observation | action | unmodeled | timing
    dist: str  # uniform | loguniform | normal | bernoulli | event
    low: float  # see the module docstring for the meaning per dist
    high: float
    unit: str
    source: str
    doc: str
    adr: bool  # ADR may widen this range
    nominal: float = 0.0  # the "no randomization" value ADR starts from (collapsed range)
    per: str = "episode"  # one of PER
    write: Callable[[DomainRandomizer, Any], None] | None = None
    fields: tuple[str, ...] = ()  # the MjModel arrays ``write`` changes ("opt.x": model.opt.x)
    nonneg: bool = False  # a range below 0 is invalid


def model_array(model: mujoco.MjModel, name: str) -> np.ndarray:
    """The MjModel array ``name`` (``"opt.gravity"``: ``model.opt.gravity``; any depth, e.g.
    ``"vis.headlight.ambient"``), a view."""
    obj = model
    for attr in name.split("."):
        obj = getattr(obj, attr)
    return obj


# ---- what each row writes (``RandParam.write``) ----------------------------------------------
_CUBE_SIZE_FIELDS = ("geom_size", "geom_pos", "geom_rbound", "geom_aabb")


def _cube_size(r: DomainRandomizer, s: float) -> None:
    mv, g, cb = r.views, r.cube_geoms, r.cube_body
    for f in _CUBE_SIZE_FIELDS:
        mv[f][g] *= s
    mv["body_mass"][cb] *= s**3
    mv["body_inertia"][cb] *= s**5  # m a^2: s^3 * s^2


def _body_mass(r: DomainRandomizer, ms: np.ndarray) -> None:
    b = r.mass_bodies
    r.views["body_mass"][b] *= ms
    r.views["body_inertia"][b] *= ms[:, None]  # same shape, more mass: inertia scales with it


def _friction(r: DomainRandomizer, f: np.ndarray) -> None:
    r.views["geom_friction"] *= f[:, None]  # contact pairs follow in DomainRandomizer.apply


def _damping(r: DomainRandomizer, d: np.ndarray) -> None:
    r.views["dof_damping"][r.hand_dofs] *= d


def _kp(r: DomainRandomizer, kp: np.ndarray) -> None:
    r.views["actuator_gainprm"][r.act_ids, 0] *= kp
    r.views["actuator_biasprm"][r.act_ids, 1] *= kp


def _joint_limits(r: DomainRandomizer, off: np.ndarray) -> None:
    j = r.hand_joints
    lim = r.nominal["jnt_range"][j] + off.reshape(-1, 2)
    # Crossed or too-narrow limits: centre a minimal range where the two bounds met.
    narrow = lim[:, 1] - lim[:, 0] < MIN_JOINT_RANGE
    c = 0.5 * (lim[narrow, 0] + lim[narrow, 1])
    lim[narrow, 0], lim[narrow, 1] = c - MIN_JOINT_RANGE / 2, c + MIN_JOINT_RANGE / 2
    r.views["jnt_range"][j] = lim


def _gravity(r: DomainRandomizer, g: np.ndarray) -> None:
    r.views["opt.gravity"] += g


def _tip_offset(r: DomainRandomizer, v: np.ndarray) -> None:
    r.steps.obs_offset[:3 * r.n_tips] = v
    r.steps.obs_noisy = True


def _tip_sd(r: DomainRandomizer, sd: float) -> None:
    r.steps.obs_sd[:3 * r.n_tips] = sd
    r.steps.obs_noisy |= bool(sd)


def _cube_pos_offset(r: DomainRandomizer, v: np.ndarray) -> None:
    r.steps.obs_offset[3 * r.n_tips:] = v
    r.steps.obs_noisy = True


def _cube_pos_sd(r: DomainRandomizer, sd: float) -> None:
    r.steps.obs_sd[3 * r.n_tips:] = sd
    r.steps.obs_noisy |= bool(sd)


def _cube_rot_episode(r: DomainRandomizer, q: np.ndarray) -> None:
    r.effects.rot_episode[0] = q.tolist()
    r.steps.obs_on = True


def _cube_rot_sd(r: DomainRandomizer, sd: float) -> None:
    r.steps.rot_sd = sd


def _dropout(r: DomainRandomizer, rate_duration: np.ndarray) -> None:
    rate, dur = rate_duration
    r.effects.drop_p[0] = float(rate) * r.control_period
    r.effects.drop_steps[0] = int(max(1, round(float(dur) / r.control_period)))


def _action_sd(r: DomainRandomizer, sd: float) -> None:
    r.steps.act_sd = r.act_half * sd if sd else None


def _action_offset(r: DomainRandomizer, c: np.ndarray) -> None:
    r.steps.add_act_offset(r.act_half * c)


def _action_gain(r: DomainRandomizer, m: np.ndarray) -> None:
    gain = r.effects.gain[0]
    gain[:] = 1.0 + m
    r.steps.add_act_offset(r.act_mid * (1.0 - gain))  # mid + (t - mid)(1 + m)


def _action_delay(r: DomainRandomizer, delayed: np.ndarray) -> None:
    r.effects.delay[0] = delayed
    r.steps.act_on = True


def _backlash(r: DomainRandomizer, w: np.ndarray) -> None:
    r.effects.backlash[0] = w / 2
    r.steps.act_on = True


def _force_prob(r: DomainRandomizer, p: float) -> None:
    r.effects.force_p[0] = p


def _force_sigma(r: DomainRandomizer, sd: float) -> None:
    r.steps.force_sigma = float(sd)


def _timing(r: DomainRandomizer, rate: float) -> None:
    r.steps.timing_rate = rate


RANDOMIZATIONS: tuple[RandParam, ...] = (
    # ---- physics (D Table 1) ----
    RandParam("cube_size_scale", "physics", "uniform", 0.95, 1.05, "x", "D Table 1",
              "cube edge scale: collision box + visual plates; cube mass x scale^3, "
              "inertia consistent", True, 1.0, "episode", _cube_size,
              (*_CUBE_SIZE_FIELDS, "body_mass", "body_inertia"), nonneg=True),
    RandParam("body_mass_scale", "physics", "uniform", 0.5, 1.5, "x", "D Table 1",
              "mass (and inertia) scale, per body (hand links and cube)", True, 1.0, "body",
              _body_mass, ("body_mass", "body_inertia"), nonneg=True),
    RandParam("friction_scale", "physics", "uniform", 0.7, 1.3, "x", "D Table 1",
              "geom friction coefficients scale, per geom (contact pairs follow)", True, 1.0,
              "geom", _friction, ("geom_friction",), nonneg=True),
    RandParam("joint_damping_scale", "physics", "loguniform", 0.3, 3.0, "x", "D Table 1",
              "joint damping scale, per hand joint", True, 1.0, "hand_dof", _damping,
              ("dof_damping",)),
    RandParam("actuator_kp_scale", "physics", "loguniform", 0.75, 1.5, "x", "D Table 1",
              "position actuator P gain scale (gainprm[0] and biasprm[1] = -kp), per actuator",
              True, 1.0, "actuator", _kp, ("actuator_gainprm", "actuator_biasprm")),
    RandParam("joint_limit_offset", "physics", "normal", 0.0, 0.15, "rad", "D Table 1",
              "additive offset on each hand joint's lower and upper limit (kept lower < upper)",
              False, 0.0, "hand_joint_bound", _joint_limits, ("jnt_range",)),
    RandParam("gravity_offset", "physics", "normal", 0.0, 0.4, "m/s^2", "D Table 1",
              "additive offset per gravity axis", False, 0.0, "axis", _gravity,
              ("opt.gravity",)),
    # ---- observation noise (D Table 7) ----
    RandParam("obs_fingertip_noise_episode", "observation", "normal", 0.0, 0.001, "m",
              "D Table 7", "fingertip position offset per episode (correlated), per coordinate",
              False, 0.0, "fingertip_coordinate", _tip_offset),
    RandParam("obs_fingertip_noise_step", "observation", "normal", 0.0, 0.002, "m",
              "D Table 7", "fingertip position noise per step (uncorrelated), per coordinate",
              False, 0.0, "step", _tip_sd),
    RandParam("obs_cube_pos_noise_episode", "observation", "normal", 0.0, 0.005, "m",
              "D Table 7", "cube position offset per episode, per coordinate", False, 0.0,
              "axis", _cube_pos_offset),
    RandParam("obs_cube_pos_noise_step", "observation", "normal", 0.0, 0.001, "m",
              "D Table 7", "cube position noise per step, per coordinate", False, 0.0,
              "step", _cube_pos_sd),
    RandParam("obs_cube_rot_noise_episode", "observation", "normal", 0.0, 0.1, "rad",
              "D Table 7", "cube orientation: rotation by N(0, sd) about a random axis, "
              "per episode", False, 0.0, "rotation", _cube_rot_episode),
    RandParam("obs_cube_rot_noise_step", "observation", "normal", 0.0, 0.1, "rad",
              "D Table 7", "cube orientation: rotation by N(0, sd) about a random axis, "
              "per step", False, 0.0, "step", _cube_rot_sd),
    RandParam("obs_cube_dropout", "observation", "event", 0.2, 1.0, "1/s, s", "D Table 8",
              "marker dropout: starts at rate low (1/s), freezes the cube pose reading for "
              "high s", False, 0.0, "step", _dropout),
    # ---- actions (D Table 8) ----
    RandParam("action_noise_step", "action", "normal", 0.0, 0.05, "half range",
              "D Table 8", "uncorrelated additive action noise per step, per actuator",
              False, 0.0, "step", _action_sd),
    RandParam("action_noise_episode", "action", "normal", 0.0, 0.015, "half range",
              "D Table 8", "correlated additive action noise per episode, per actuator",
              False, 0.0, "actuator", _action_offset),
    RandParam("action_noise_mult", "action", "normal", 0.0, 0.015, "x",
              "D Table 8", "multiplicative action noise (1 + N) per episode, per actuator, "
              "about the actuator range centre", False, 0.0, "actuator", _action_gain),
    RandParam("action_delay", "action", "bernoulli", 0.5, 0.5, "p", "D Table 8",
              "actuator delayed by one control step, drawn per actuator per episode",
              False, 0.0, "actuator", _action_delay),
    RandParam("backlash", "action", "uniform", 0.0, 0.02, "rad", "D Table 8 (our model)",
              "dead-band width on the commanded target, per actuator per episode", True, 0.0,
              "actuator", _backlash, nonneg=True),
    # ---- unmodeled effects (D Table 8) ----
    RandParam("random_force_prob", "unmodeled", "loguniform", 0.001, 0.1, "1/step",
              "D Table 8", "per-episode probability per control step of a new random force "
              "on the cube", True, 0.0, "episode", _force_prob),
    RandParam("random_force_sigma", "unmodeled", "normal", 0.0, 1.0, "m/s^2 x cube mass",
              "D Table 8", "random cube force per axis, decays x0.99 per control step "
              "(when off, forces still use this table's sd)", False, 0.0, "step", _force_sigma),
    # ---- timing (D Table 8) ----
    RandParam("timing_rate", "timing", "uniform", 1250.0, 10000.0, "1/s", "D Table 8",
              "control step lasts control_period + Exp(lambda) s, lambda per episode",
              True, 10000.0, "episode", _timing, nonneg=True),
)

PARAMS: dict[str, RandParam] = {p.name: p for p in RANDOMIZATIONS}
GROUPS: tuple[str, ...] = ("physics", "observation", "action", "unmodeled", "timing")
STEP_BLOCK = 64  # per-step values are drawn and computed this many steps at a time, per hook
MIN_JOINT_RANGE = 0.02  # rad: a randomized joint keeps at least this much travel
_DISTS = ("uniform", "loguniform", "normal", "bernoulli", "event")


def resolve_enabled(enabled: bool | Iterable[str] | None) -> frozenset[str]:
    """``None``/``True`` → every parameter, ``False`` → none; names may be params or groups."""
    if enabled is None or enabled is True:
        return frozenset(PARAMS)
    if enabled is False:
        return frozenset()
    if isinstance(enabled, str):
        enabled = [enabled]
    out: set[str] = set()
    bad = []
    for n in enabled:
        if n in PARAMS:
            out.add(n)
        elif n in GROUPS:
            out.update(p.name for p in RANDOMIZATIONS if p.group == n)
        else:
            bad.append(n)
    if bad:
        raise ValueError(f"unknown randomization(s) {sorted(map(str, bad))}; known parameters: "
                         f"{sorted(PARAMS)}; groups: {list(GROUPS)}")
    return frozenset(out)


def check_ranges(ranges: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Validates an ADR override; raises ValueError naming every bad entry."""
    errs, out = [], {}
    for name, r in ranges.items():
        p = PARAMS.get(name)
        if p is None:
            errs.append(f"unknown parameter {name!r}")
            continue
        try:
            lo, hi = (float(v) for v in r)
        except (TypeError, ValueError):
            errs.append(f"{name}: range must be two numbers (lo, hi); got {r!r}")
            continue
        if not (math.isfinite(lo) and math.isfinite(hi)):
            errs.append(f"{name}: range must be finite; got {(lo, hi)}")
        elif p.dist in ("uniform", "loguniform") and lo > hi:
            errs.append(f"{name}: lo must be <= hi; got {(lo, hi)}")
        elif p.dist == "loguniform" and lo <= 0:
            errs.append(f"{name}: loguniform bounds must be > 0; got {(lo, hi)}")
        elif p.dist == "normal" and hi < 0:
            errs.append(f"{name}: (mean, sd) needs sd >= 0; got {(lo, hi)}")
        elif p.dist == "bernoulli" and not 0 <= lo <= 1:
            errs.append(f"{name}: probability must be in [0, 1]; got {lo}")
        elif p.dist == "event" and (lo < 0 or hi < 0):
            errs.append(f"{name}: (rate, duration) must be >= 0; got {(lo, hi)}")
        elif p.nonneg and lo < 0:
            errs.append(f"{name}: must be >= 0; got {(lo, hi)}")
        else:
            out[name] = (lo, hi)
    if errs:
        raise ValueError("invalid randomization ranges: " + "; ".join(errs))
    return out



@dataclass
class EpisodeDraw:
    """One episode's sampled values (``None`` = that effect is off: nominal)."""

    values: dict[str, np.ndarray | float | None] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __getitem__(self, name: str):  # noqa: ANN204 - array or float
        return self.values.get(name)


def markdown_table() -> str:
    lines = [
        "| name | group | dist | per | low | high | unit | source | ADR | nominal | what |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in RANDOMIZATIONS:
        lines.append(f"| `{p.name}` | {p.group} | {p.dist} | {p.per.replace('_', ' ')} | "
                     f"{p.low:g} | {p.high:g} | {p.unit} | "
                     f"{p.source} | {'yes' if p.adr else 'no'} | {p.nominal:g} | {p.doc} |")
    return "\n".join(lines)


def markdown_doc() -> str:
    return (
        "# Domain randomization\n\n"
        "Generated by `python -m dex_sim.randomization --markdown` from "
        "`dex_sim.randomization.RANDOMIZATIONS` (the one table; edit it there, not here). "
        "A row is the whole randomization: its range, how it is drawn (`dist`, and `per`: "
        "how many values an episode draws) and the function that writes the drawn value into "
        "the model or the episode's per-step effects; adding a row needs no other change.\n\n"
        "Switch effects with `TaskConfig(randomize=True | {names or groups})`; "
        "`DexCubeEnv` draws one `EpisodeDraw` per reset from a generator seeded by the episode "
        "seed, so a seed reproduces the episode bit for bit.\n\n"
        "**ADR** (`dex_sim.adr`) starts every `ADR = yes` range collapsed at its `nominal` "
        "value and widens or shrinks it from the policy's success at the range boundaries; the "
        "env receives the current ranges as `ranges={name: (lo, hi)}` (`env.set_ranges` or "
        "`reset(options={'ranges': ...})`), which replace `low`/`high` below for that episode.\n\n"
        "Meaning of low/high: uniform/loguniform = interval; normal = (mean, sd); bernoulli = "
        "(p, p); event = (rate 1/s, duration s).\n\n"
        + markdown_table() + "\n\n"
        "Models: action noise is in normalized action units (half the actuator range = 1) and "
        "about the range centre; backlash is a play operator (dead band of width w per "
        "actuator); random forces are drawn per control step and decay x0.99 per control step; "
        "timing stretches the physics timestep of a control step so it lasts "
        "`control_period + Exp(lambda)` (substep count unchanged, sim clock monotonic).\n"
    )


def _axis_angle_quats(z: np.ndarray, sigma: float, out: np.ndarray) -> None:
    """Rotation quaternions (w,x,y,z) about the axes z[:, :3] (normalized) by angles z[:, 3]*sigma."""
    axis = z[:, :3]
    n = np.linalg.norm(axis, axis=1, keepdims=True)
    half = 0.5 * sigma * z[:, 3:4]
    out[:, 0:1] = np.cos(half)
    out[:, 1:] = axis / np.maximum(n, 1e-12) * np.sin(half)


@dataclass
class _SamplePlan:
    """``DomainRandomizer.sample``'s transform for one set of ranges (built once, reused)."""

    ranges: dict[str, tuple[float, float]]
    u_lo: np.ndarray  # per standard uniform: value = u_lo + u_span * u (log space if in u_log)
    u_span: np.ndarray
    z_mean: np.ndarray  # per standard normal: value = z_mean + z_sd * z
    z_sd: np.ndarray
    u_log: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))
    fixed: dict[str, np.ndarray | float | None] = field(default_factory=dict)  # not drawn
    drawn: list[tuple[str, str, int, int]] = field(default_factory=list)  # name, kind, at, n
    rot_sd: dict[str, float] = field(default_factory=dict)


@dataclass
class EpisodeSteps:
    """What one episode's per-step draws need, as its enabled rows wrote it (neutral = off)."""

    obs_sd: np.ndarray  # [3 n_tips + 3]: per-step noise sd on the fingertips | cube position
    obs_offset: np.ndarray  # the same layout: this episode's offset
    obs_noisy: bool = False  # any of the two above
    obs_on: bool = False  # any observation effect
    rot_sd: float = 0.0  # per-step cube rotation noise (rad)
    act_sd: np.ndarray | None = None  # per-step action noise sd per actuator (rad)
    act_offset: np.ndarray | None = None  # this episode's additive action offset (rad)
    act_on: bool = False  # any action effect
    force_sigma: float = PARAMS["random_force_sigma"].high  # m/s^2 x cube mass
    force_sd: float = 0.0  # N: force_sigma x this episode's cube mass
    timing_rate: float | None = None  # lambda of the extra control-step duration (1/s)

    def add_act_offset(self, v: np.ndarray) -> None:
        self.act_offset = v if self.act_offset is None else self.act_offset + v


class DomainRandomizer:
    """Applies ``RANDOMIZATIONS`` to one ``HandCubeSim``.

    Per episode: ``draw = sample(rng, ranges)``; ``apply(draw)`` after ``sim.reset``, which also
    sets up ``effects`` (``dex_sim.effects.StepEffects``, one row). Per control step the env
    (``dex_sim.phases``) takes this episode's random numbers from ``act_draw``, ``force_draw``,
    ``step_time`` and ``obs_draw`` and applies them with its batch's ``StepEffects``; ``act``,
    ``perturb`` and ``observe`` do the same for this one episode (its own ``effects``). All ids
    and nominal arrays are captured here once; the rows' ``write`` functions read them.
    """

    def __init__(self, sim: HandCubeSim, enabled: bool | Iterable[str] | None = None) -> None:
        self.sim = sim
        self.enabled = resolve_enabled(enabled)
        m, spec, ix = sim.model, sim.spec, sim.idx
        # Views onto the model arrays the rows write (one binding look-up each, here), and
        # their nominal values, which every episode starts from.
        self.views = {f: model_array(m, f) for p in RANDOMIZATIONS for f in p.fields}
        self.nominal = {f: v.copy() for f, v in self.views.items()}
        # Explicit contact pairs (the generated scenes list every collision) carry their own
        # friction: it follows the two geoms' (MuJoCo's rule: the larger of each coefficient).
        self._pair_geoms = (m.pair_geom1.copy(), m.pair_geom2.copy())
        self._pair_friction = m.pair_friction
        self.cube_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, spec.cube.name)
        self.cube_geoms = np.flatnonzero(m.geom_bodyid == self.cube_body)
        # Bodies with mass (not the world, not the mocap goal marker).
        self.mass_bodies = np.flatnonzero(m.body_mass > 0)
        self.hand_dofs = ix.qvel_adr
        self.hand_joints = np.array(
            [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in spec.joint_names])
        self.act_ids = ix.actuator_ids
        lo, hi = spec.actuator_limits()
        self.act_lo, self.act_hi = lo, hi
        self.act_mid, self.act_half = 0.5 * (lo + hi), 0.5 * (hi - lo)
        self.n_act = len(lo)
        self.n_tips = len(spec.fingertip_sites)  # Shadow 5, LEAP 4
        self.control_period = sim.control_period
        self.draw: EpisodeDraw | None = None
        self._scratch = mujoco.MjData(m)
        self._zero_act = np.zeros(self.n_act)  # additive action noise when it is off
        self._plan_draws()
        self._compiled: dict[tuple, _SamplePlan] = {}  # sample(): transforms by ranges
        self._start_steps()
        self._finish_steps()

    # ---- per episode ------------------------------------------------------------------------
    def _plan_draws(self) -> None:
        """Where each parameter's standard variates sit in the per-episode draw.

        Every episode draws the SAME number of standard uniforms and normals in table order,
        whatever is enabled and whatever the ranges, then transforms them: switching one effect
        off or changing its range leaves every other parameter's values unchanged."""
        counts = {"episode": 1, "body": len(self.mass_bodies), "geom": self.sim.model.ngeom,
                  "hand_dof": len(self.hand_dofs), "hand_joint_bound": 2 * len(self.hand_joints),
                  "actuator": self.n_act, "axis": 3, "fingertip_coordinate": 3 * self.n_tips,
                  "rotation": 4, "step": 1}
        self._plan: list[tuple[RandParam, int, str, int]] = []  # (param, count, kind, offset)
        nu = nz = 0
        for p in RANDOMIZATIONS:
            k = counts[p.per]
            if p.per == "step":  # a per-step sd or event: the range itself, no variates
                self._plan.append((p, k, "", 0))
            elif p.dist in ("uniform", "loguniform", "bernoulli"):
                self._plan.append((p, k, "u", nu))
                nu += k
            else:  # normal (a rotation: 4 normals, axis and angle)
                self._plan.append((p, k, "z", nz))
                nz += k
        self._n_uniform, self._n_normal = nu, nz

    def sample(self, rng: np.random.Generator,
               ranges: Mapping[str, tuple[float, float]] | None = None) -> EpisodeDraw:
        """Draw every enabled parameter for one episode (disabled ones stay ``None``).

        Consumes a fixed number of draws of ``rng`` (one block of uniforms, one of normals) and
        transforms each block with one affine map (per-value bounds from ``ranges``)."""
        try:
            key = tuple(ranges.items()) if ranges else ()
            plan = self._compiled.get(key)
        except TypeError:  # unhashable bounds (lists): the checked copy has float tuples
            ranges = check_ranges(ranges)
            key = tuple(ranges.items())
            plan = self._compiled.get(key)
        if plan is None:
            plan = self._compile(check_ranges(ranges) if ranges else {})
            if len(self._compiled) >= 64:  # ADR moves ranges; keep the recent ones only
                self._compiled.clear()
            self._compiled[key] = plan
        u = rng.random(self._n_uniform)
        z = rng.standard_normal(self._n_normal)
        lin = plan.u_lo + plan.u_span * u  # uniform values; log of loguniform ones
        if plan.u_log.size:
            lin[plan.u_log] = np.exp(lin[plan.u_log])
        zn = plan.z_mean + plan.z_sd * z
        vals = dict(plan.fixed)
        for name, kind, o, k in plan.drawn:
            if kind == "u":
                v: np.ndarray | float = lin[o:o + k]
            elif kind == "b":  # bernoulli: lin holds the probability
                v = u[o:o + k] < lin[o:o + k]
            elif kind == "z":
                v = zn[o:o + k]
            else:  # "rot": an axis-angle rotation, sd = the range's high
                q = np.empty((1, 4))
                _axis_angle_quats(z[o:o + k].reshape(1, 4), plan.rot_sd[name], q)
                v = q[0]
            if k == 1 and kind != "b":
                v = float(v[0])
            vals[name] = v
        return EpisodeDraw(vals, plan.ranges)

    def _compile(self, ranges: dict[str, tuple[float, float]]) -> _SamplePlan:
        """Per-value affine maps of the standard variates for these (checked) ranges."""
        plan = _SamplePlan(ranges, np.zeros(self._n_uniform), np.zeros(self._n_uniform),
                           np.zeros(self._n_normal), np.zeros(self._n_normal))
        log_idx: list[int] = []
        for p, k, kind, o in self._plan:
            lo, hi = ranges.get(p.name, (p.low, p.high))
            if p.name not in self.enabled:
                plan.fixed[p.name] = None
            elif kind == "u":
                if p.dist == "uniform":
                    plan.u_lo[o:o + k], plan.u_span[o:o + k] = lo, hi - lo
                elif p.dist == "loguniform":
                    a = math.log(lo)
                    plan.u_lo[o:o + k], plan.u_span[o:o + k] = a, math.log(hi) - a
                    log_idx += range(o, o + k)
                else:  # bernoulli: the probability, whatever u is
                    plan.u_lo[o:o + k] = lo
                plan.drawn.append((p.name, "b" if p.dist == "bernoulli" else "u", o, k))
            elif kind == "z":
                if p.per == "rotation":
                    plan.rot_sd[p.name] = hi
                    plan.drawn.append((p.name, "rot", o, k))
                else:
                    plan.z_mean[o:o + k], plan.z_sd[o:o + k] = lo, hi
                    plan.drawn.append((p.name, "z", o, k))
            elif p.dist == "event":
                plan.fixed[p.name] = np.array([lo, hi])  # (rate, duration): drawn per step
            else:  # a per-step sd: the parameter itself
                plan.fixed[p.name] = float(hi)
        plan.u_log = np.array(log_idx, dtype=np.intp)
        return plan

    def apply(self, draw: EpisodeDraw) -> None:
        """Write this episode's values: every enabled row in table order, onto model fields
        reset to their nominal values (so draws never compound) and onto neutral per-step
        effects.

        Call after ``sim.reset`` (it reads the reset targets and cube mass)."""
        self.draw = draw
        for f, v in self.views.items():
            v[:] = self.nominal[f]
        self._start_steps()
        for p in RANDOMIZATIONS:
            value = draw[p.name]
            if value is not None:
                p.write(self, value)
        # What follows the written values: contact-pair friction (MuJoCo's rule: the larger
        # of the two geoms' coefficients), and the derived constants (dof_M0 — the mass matrix
        # of "simple" bodies such as the free cube —, invweight0, subtree masses), computed on
        # a scratch MjData so the sim's state is untouched (~45 us per episode).
        if len(self._pair_geoms[0]):
            gf = self.views["geom_friction"]
            pf = np.maximum(gf[self._pair_geoms[0]], gf[self._pair_geoms[1]])
            self._pair_friction[:] = pf[:, [0, 0, 1, 2, 2]]  # slide, slide, spin, roll, roll
        mujoco.mj_setConst(self.sim.model, self._scratch)
        self._finish_steps()

    def restore_nominal(self) -> None:
        self.apply(EpisodeDraw({p.name: None for p in RANDOMIZATIONS}))
        self.draw = None

    @property
    def forces_on(self) -> bool:
        """This episode has random forces on the cube (``force_draw`` is needed each step)."""
        return self.effects.force_p[0] > 0.0

    def _start_steps(self) -> None:
        """Neutral per-step effects (one row) and draw settings, for the rows to write into."""
        fx = self.effects = StepEffects.neutral(1, self.n_act)
        targets = self.sim.actuator_targets()
        fx.prev[0] = targets  # action delay: the previous step's target
        fx.play[0] = targets  # backlash play-operator state
        nt3 = 3 * self.n_tips
        self.steps = EpisodeSteps(obs_sd=np.zeros(nt3 + 3), obs_offset=np.zeros(nt3 + 3))
        self._blocks: dict[str, list] = {}  # per-step values by hook (see _next)

    def _finish_steps(self) -> None:
        """Flags and values that follow from what the rows wrote."""
        st, fx = self.steps, self.effects
        st.act_on = st.act_on or st.act_offset is not None or st.act_sd is not None
        st.obs_on = st.obs_on or st.obs_noisy or st.rot_sd > 0 or fx.drop_p[0] > 0
        fx.obs_on[0] = st.obs_on
        st.force_sd = st.force_sigma * float(self.sim.model.body_mass[self.cube_body])

    # ---- per step -----------------------------------------------------------------------------
    # Each hook takes its step's values from a block it builds every STEP_BLOCK steps: one
    # Generator call and the vector math for 64 steps at once, so a control step costs one row
    # look-up per hook. Blocks are emptied with the episode, so an episode's draws depend on its
    # own generator only. The vector env calls the same ``*_draw`` hooks per member, in the same
    # order (act, force, time; observation after the physics), and applies ``effects`` to all
    # members at once.
    def _next(self, key: str, rng: np.random.Generator,
              build: Callable[[np.random.Generator], Any]) -> Any:
        b = self._blocks.get(key)
        if b is None or b[1] >= STEP_BLOCK:
            b = self._blocks[key] = [build(rng), 0]
        i = b[1]
        b[1] = i + 1
        return b[0][i]

    def act_draw(self, rng: np.random.Generator) -> np.ndarray:
        """This step's additive action noise [n_act] (episode offset + step noise; zeros when
        off). Draws only while the episode has per-step action noise."""
        st = self.steps
        if st.act_sd is not None:
            return self._next("act", rng, self._act_block)
        return st.act_offset if st.act_offset is not None else self._zero_act

    def force_draw(self, rng: np.random.Generator) -> list[float]:
        """(candidate new force (3), uniform deciding whether it starts) for this step; call
        only while the episode has random forces (``forces_on``)."""
        return self._next("force", rng, self._force_block)

    def obs_draw(self, rng: np.random.Generator) -> list[float]:
        """This step's [additive noise (3 tips + 3) | rotation (4) | dropout uniform]; call only
        while the episode has observation effects (``steps.obs_on``)."""
        return self._next("obs", rng, self._obs_block)

    def _act_block(self, rng: np.random.Generator) -> np.ndarray:
        """(STEP_BLOCK, n_act): episode offset + per-step noise, added after the gain."""
        st = self.steps
        add = st.act_sd * rng.standard_normal((STEP_BLOCK, self.n_act))
        return add if st.act_offset is None else add + st.act_offset

    def _force_block(self, rng: np.random.Generator) -> list[list[float]]:
        """STEP_BLOCK rows of [candidate new force (3), the uniform deciding whether it
        starts]."""
        z = self.steps.force_sd * rng.standard_normal((STEP_BLOCK, 3))
        return np.column_stack([z, rng.random(STEP_BLOCK)]).tolist()

    def _time_block(self, rng: np.random.Generator) -> list[float]:
        """Extra durations (s): Exp(lambda) by its inverse CDF (u in [0, 1))."""
        return (-np.log1p(-rng.random(STEP_BLOCK)) / self.steps.timing_rate).tolist()

    def _obs_block(self, rng: np.random.Generator) -> list[list[float]]:
        """STEP_BLOCK rows of [additive noise on tips | cube pos (zeros when off), step rotation
        quaternion (identity when off), dropout uniform] (floats: used as Python floats)."""
        nt3 = 3 * self.n_tips
        z = rng.standard_normal((STEP_BLOCK, nt3 + 7))
        out = np.zeros((STEP_BLOCK, nt3 + 8))
        st = self.steps
        if st.obs_noisy:
            out[:, :nt3 + 3] = st.obs_sd * z[:, :nt3 + 3] + st.obs_offset
        if st.rot_sd:
            # Rotation by N(0, sd) about a uniformly random axis.
            axis, angle = z[:, nt3 + 3:nt3 + 6], z[:, nt3 + 6]
            n = np.linalg.norm(axis, axis=1)
            n[n == 0.0] = 1.0
            half = 0.5 * st.rot_sd * angle
            out[:, nt3 + 3] = np.cos(half)
            out[:, nt3 + 4:nt3 + 7] = axis * (np.sin(half) / n)[:, None]
        else:
            out[:, nt3 + 3] = 1.0
        out[:, -1] = rng.random(STEP_BLOCK)
        return out.tolist()

    def act(self, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Actuator targets as the hand receives them: noise, backlash, one-step delay."""
        if not self.steps.act_on:
            return targets
        t = np.asarray(targets, dtype=np.float64)[None]
        return self.effects.act(t, self.act_draw(rng)[None], self.act_lo, self.act_hi)[0]

    def perturb(self, rng: np.random.Generator) -> None:
        """Random force on the cube for the next control step (decaying)."""
        if not self.forces_on:
            return
        self.sim.data.xfrc_applied[self.cube_body, :3] = self.effects.push(0,
                                                                           self.force_draw(rng))

    def step_time(self, rng: np.random.Generator) -> float:
        """Extra duration (s) of the next control step: Exp(lambda), 0 when timing is off."""
        if self.steps.timing_rate is None:
            return 0.0
        return self._next("time", rng, self._time_block)

    def observe(self, tips: np.ndarray, pos: np.ndarray, quat: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noisy (fingertips (n_tips, 3), cube pos, cube quat); inputs are not modified."""
        if not self.steps.obs_on:
            return tips, pos, quat
        tp = np.ravel(tips).tolist() + np.ravel(pos).tolist()
        q = np.asarray(quat, dtype=np.float64).tolist()
        tp, q = self.effects.observe(0, tp, q, self.obs_draw(rng))
        return np.array(tp[:-3]).reshape(self.n_tips, 3), np.array(tp[-3:]), np.array(q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print docs/randomization.md")
    args = ap.parse_args(argv)
    print(markdown_doc() if args.markdown else markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
