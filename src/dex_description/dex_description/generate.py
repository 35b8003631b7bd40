"""Write the hand model files from the registry facts: MJCF scene, URDF (+ ros2_control), RViz.

    python -m dex_description.generate           # (re)write the files under the package
    python -m dex_description.generate --check   # exit 1 if a committed file is out of date

The MJCF and URDF are both emitted from one kinematic description (:func:`hand_tree`), so their
joints, axes, origins and limits cannot drift apart.

Conventions (the hand is fixed in the world, palm up; world z up, fingers along +y, thumb on
+x): every body frame is parallel to the world frame at the zero pose, so a body ``pos`` is a
pure offset and a URDF joint ``origin`` has rpy = 0. Joint signs:

- WRJ2 (deviation, about -z): positive = radial, fingers swing toward the thumb (+x).
- WRJ1 and all finger J3/J2/J1 (about +x): positive = flexion, fingers curl up (+z) over the palm.
- FFJ4/MFJ4 (about -z): positive = toward the thumb; RFJ4/LFJ4 (about +z): positive = away from
  the thumb (so positive FF/RF/LF J4 spreads the fingers).
- LFJ5 (about an axis tilted 35 deg from +y toward +x): positive = cups the little finger side up.
- Thumb: lies in the palm plane at zero, pointing along u = (0.5, 1, 0)/|.|, base on the +x
  edge of the palm near the wrist. THJ5 (about -u) positive = swings a lifted thumb over the
  palm; THJ4 (about u x z) positive = lifts the thumb off the palm plane toward +z; THJ3 and
  THJ1 (about u x z) positive = curl toward +z; THJ2 (about +z) positive = toward the palm (-x).

LEAP (``dex_leap``; no wrist, no coupling, 16 position actuators on their joints): a palm box
fixed in the world (0.12 x 0.11 x 0.03 m, top at z = 0.03), index/middle/ring knuckles 45 mm
apart on its far edge (index on the thumb side, +x), each finger mcp (about +x, flexion) ->
rot (about -z, positive toward the thumb; carried by the flexed link, LEAP's universal MCP) ->
pip -> dip (about +x); thumb on the +x edge, lying in the palm plane along u = (0.35, 1, 0)/|.|
at zero: th_cmc (about u x z) lifts it toward +z, th_axl (about -u) rolls it, th_mcp and th_ipl
(about the rolled u x z) curl it. Link lengths approximate the LEAP Hand (about 1.5x a human
hand: fingertip 0.25 m from the palm's wrist edge); capsules, not LEAP's meshes.

Contacts: hand geoms collide with the cube (and the floor) but not with each other (no
self-collision: cheaper and avoids finger-finger locking). Cube faces are coloured
+x red, -x green, +y blue, -y yellow, +z magenta, -z cyan (visual slabs over a collision box).
The goal marker is a translucent copy in geom group 2 (no collision); renderers for perception
should hide group 2 (``mjvOption.geomgroup[2] = 0``) even though it sits out of the cameras' view.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from dex_description.paths import rviz_name
from dex_description.pose import default_actuator_targets, default_joint_positions
from dex_description.registry import HandSpec, get_hand

PKG_DIR = Path(__file__).resolve().parent

# ---- physical parameters (tuned: see test_description.py for what they must achieve) ------
PALM_Z = 0.022  # world height of the palm's mid-plane; its top surface is PALM_Z + PALM_HALF_T
PALM_HALF_T = 0.01  # palm half thickness (palm is 0.02 m thick)
FLOOR_Z = -0.25  # a dropped cube lands here, well below the hand
GOAL_POS = (0.12, 0.035, 0.30)  # goal marker beside/above the hand, outside the cameras' view

HAND_RGBA = (0.22, 0.22, 0.25, 1.0)
FACE_RGBA = {  # face normal (in the cube frame) -> colour
    (1, 0, 0): (0.90, 0.10, 0.10),
    (-1, 0, 0): (0.10, 0.80, 0.10),
    (0, 1, 0): (0.10, 0.20, 0.95),
    (0, -1, 0): (0.95, 0.90, 0.10),
    (0, 0, 1): (0.90, 0.10, 0.90),
    (0, 0, -1): (0.10, 0.90, 0.90),
}


@dataclass(frozen=True)
class Gains:
    """Joint and actuator dynamics for one group of joints."""

    kp: float  # position gain, N m / rad (tendon: N m / rad of J2+J1)
    force: float  # |actuator force| limit, N m
    damping: float  # joint viscous damping, N m s / rad
    armature: float  # reflected rotor inertia, kg m^2
    stiffness: float = 0.0  # passive spring to 0 (J1/J2: splits a tendon's sum evenly)


GAINS = {
    "wrist": Gains(kp=20.0, force=10.0, damping=0.8, armature=0.012),
    "finger": Gains(kp=2.0, force=1.0, damping=0.07, armature=0.0008),
    "coupled": Gains(kp=2.0, force=1.0, damping=0.04, armature=0.0004, stiffness=0.08),
    "thumb": Gains(kp=2.0, force=1.0, damping=0.07, armature=0.0008),
}
FRICTION = (1.0, 0.005, 0.0001)  # sliding, torsional, rolling
# Hand and cube contact softness; the floor keeps MuJoCo's defaults (0.02 1 / 0.9 0.95 0.001 0.5 2).
CONTACT_SOLREF = (0.01, 1.0)
CONTACT_SOLIMP = (0.95, 0.99, 0.001, 0.5, 2.0)
MJ_DEFAULT_SOLREF = (0.02, 1.0)
MJ_DEFAULT_SOLIMP = (0.9, 0.95, 0.001, 0.5, 2.0)
CUBE_CONDIM = 4  # sliding + torsional friction on the cube
# Constraint Jacobian per hand: the faster one, measured by `dex-sim-bench --scene-variants`
# (env steps/s, hold / random actions; same physics either way). Shadow, a tree of five long
# finger chains: sparse 1,533 / 1,172 vs dense 1,429 / 684 (20 substeps). LEAP: dense 1,754 /
# 1,503 vs sparse 1,580 / 1,371.
# Constraint islands (MuJoCo solves each connected group of constraints on its own), per hand by
# the same measurement: the Shadow env runs 1.10x / 1.03x faster with them off (hold / random,
# 20 substeps; hand and cube are one island most of the time, so the bookkeeping is pure cost),
# the LEAP env 1.08x / 1.07x faster with them on. Either way the solver answers the same problem
# (trajectories agree to ~1e-7 rad over 300 control steps), not with the same bits.

# LEAP: Dynamixel XC330 servos in current-based position mode. kp 3 N m/rad is the stiffness the
# published LEAP model uses; the force limit approximates the servos' capped torque.
LEAP_GAINS = Gains(kp=3.0, force=0.8, damping=0.12, armature=0.002)
# LEAP geometry (m; approximating the LEAP Hand: about 1.5x a human hand, fingers 45 mm apart).
LEAP_PALM_Z = 0.015  # world height of the LEAP palm's mid-plane
LEAP_PALM_HALF = (0.06, 0.055, 0.015)  # palm box half sizes; top surface at z = 0.03
LEAP_KNUCKLE_Y = 0.11  # knuckle line (the palm spans y in [0, 0.11])
LEAP_FINGER_X = {"if": 0.045, "mf": 0.0, "rf": -0.045}  # index next to the thumb (+x)
LEAP_FINGER = (0.016, 0.040, 0.036, 0.046)  # mcp link, proximal, middle, distal lengths
LEAP_FINGER_R = 0.011  # finger capsule radius (LEAP links are ~22 mm wide)
LEAP_THUMB = (0.015, 0.020, 0.045, 0.050)  # cmc hub, axl link, proximal, distal lengths
LEAP_THUMB_BASE = (0.072, 0.025, 0.0)  # thumb base, from the palm origin
LEAP_GOAL_POS = (0.0, 0.055, 0.6)  # goal marker high above the LEAP cameras (out of view)


def goal_pos(hand: HandSpec) -> tuple[float, float, float]:
    """Where the (visual-only) goal marker sits: outside every camera's view."""
    return description(hand).goal_pos


def _gains_for(joint: str, hand: HandSpec) -> Gains:
    return description(hand).gains(joint)


def _shadow_gains(joint: str) -> Gains:
    if joint.startswith("WR"):
        return GAINS["wrist"]
    if joint.startswith("TH"):
        return GAINS["thumb"]
    if joint.endswith(("J1", "J2")):
        return GAINS["coupled"]
    return GAINS["finger"]


# ---- the kinematic description ---------------------------------------------------------------
@dataclass
class Geom:
    kind: str  # "capsule" (fromto, radius) or "box" (pos, half sizes)
    size: tuple[float, ...]
    fromto: tuple[float, ...] = ()
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Body:
    name: str
    pos: tuple[float, float, float]  # offset from the parent body's origin (frames world-aligned)
    joint: str | None = None
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    geoms: list[Geom] = field(default_factory=list)
    sites: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    children: list[Body] = field(default_factory=list)


def _unit(v: tuple[float, ...]) -> tuple[float, float, float]:
    a = np.asarray(v, float)
    a = a / np.linalg.norm(a)
    return (float(a[0]), float(a[1]), float(a[2]))


def _scale(v: tuple[float, ...], s: float) -> tuple[float, float, float]:
    return (v[0] * s, v[1] * s, v[2] * s)


def _capsule(d: tuple[float, float, float], length: float, r: float) -> Geom:
    """A capsule from the body origin along unit direction d, ending (with its cap) at length."""
    tip = length - r
    return Geom("capsule", (r,), fromto=(0.0, 0.0, 0.0, *_scale(d, tip)))


def _finger(hand: HandSpec, prefix: str, knuckle: tuple[float, float, float]) -> Body:
    """Knuckle (J4) -> proximal (J3) -> middle (J2) -> distal (J1), fingers along +y."""
    low = prefix.lower()
    y = (0.0, 1.0, 0.0)
    abd = (0.0, 0.0, -1.0) if prefix in ("FF", "MF") else (0.0, 0.0, 1.0)
    tip_site = hand.fingertip_sites[["FF", "MF", "RF", "LF"].index(prefix)]
    distal = Body(
        low + "distal",
        (0.0, 0.025, 0.0),
        prefix + "J1",
        (1.0, 0.0, 0.0),
        [_capsule(y, 0.026, 0.0080)],
        {tip_site: (0.0, 0.026, 0.0)},
    )
    middle = Body(
        low + "middle",
        (0.0, 0.045, 0.0),
        prefix + "J2",
        (1.0, 0.0, 0.0),
        [_capsule(y, 0.025 + 0.004, 0.0088)],
        children=[distal],
    )
    proximal = Body(
        low + "proximal",
        (0.0, 0.0, 0.0),
        prefix + "J3",
        (1.0, 0.0, 0.0),
        [_capsule(y, 0.045 + 0.004, 0.0095)],
        children=[middle],
    )
    knob = Geom("capsule", (0.0095,), fromto=(0.0, -0.004, 0.0, 0.0, 0.004, 0.0))
    return Body(low + "knuckle", knuckle, prefix + "J4", abd, [knob], children=[proximal])


def _thumb(hand: HandSpec) -> Body:
    u = _unit((0.5, 1.0, 0.0))  # thumb direction at the zero pose
    lift = _unit(tuple(np.cross(u, (0.0, 0.0, 1.0))))  # rotating about it moves u toward +z
    tip_site = hand.fingertip_sites[4]
    distal = Body(
        "thdistal",
        _scale(u, 0.032),
        "THJ1",
        lift,
        [_capsule(u, 0.028, 0.0085)],
        {tip_site: _scale(u, 0.028)},
    )
    middle = Body(
        "thmiddle",
        (0.0, 0.0, 0.0),
        "THJ2",
        (0.0, 0.0, 1.0),
        [_capsule(u, 0.032 + 0.004, 0.0095)],
        children=[distal],
    )
    hub = Body(
        "thhub",
        _scale(u, 0.038),
        "THJ3",
        lift,
        [Geom("capsule", (0.0095,), fromto=(0.0, 0.0, 0.0, *_scale(u, 0.002)))],
        children=[middle],
    )
    proximal = Body(
        "thproximal",
        (0.0, 0.0, 0.0),
        "THJ4",
        lift,
        [_capsule(u, 0.038 + 0.004, 0.0105)],
        children=[hub],
    )
    neg_u = _scale(u, -1.0)
    base = Geom("capsule", (0.0105,), fromto=(0.0, 0.0, 0.0, *_scale(neg_u, 0.006)))
    return Body("thbase", (0.041, 0.018, -0.002), "THJ5", neg_u, [base], children=[proximal])


def hand_tree(hand: HandSpec) -> Body:
    """The hand's kinematic tree: forearm (fixed in the world) -> wrist -> palm -> digits."""
    return description(hand).tree(hand)


def _shadow_tree(hand: HandSpec) -> Body:
    fingers = [
        _finger(hand, "FF", (0.033, 0.095, 0.0)),
        _finger(hand, "MF", (0.011, 0.095, 0.0)),
        _finger(hand, "RF", (-0.011, 0.095, 0.0)),
    ]
    lf = _finger(hand, "LF", (0.0, 0.065, 0.0))  # knuckle offset from the metacarpal origin
    lf_meta = Body(
        "lfmetacarpal",
        (-0.033, 0.03, 0.0),
        "LFJ5",
        _unit((0.574, 0.819, 0.0)),
        [Geom("box", (0.011, 0.0325, PALM_HALF_T), pos=(0.0, 0.0325, 0.0))],
        children=[lf],
    )
    palm = Body(
        hand.palm_body,
        (0.0, 0.034, 0.0),
        "WRJ1",
        (1.0, 0.0, 0.0),
        [
            Geom("box", (0.032, 0.0475, PALM_HALF_T), pos=(0.010, 0.0475, 0.0)),
            Geom("box", (0.010, 0.015, PALM_HALF_T), pos=(-0.032, 0.015, 0.0)),
        ],
        children=[*fingers, lf_meta, _thumb(hand)],
    )
    wrist = Body(
        "wrist",
        (0.0, 0.0, 0.0),
        "WRJ2",
        (0.0, 0.0, -1.0),
        [
            Geom("capsule", (0.016,), fromto=(-0.018, 0.0, 0.0, 0.018, 0.0, 0.0)),
            Geom("capsule", (0.014,), fromto=(0.0, 0.0, 0.0, 0.0, 0.022, 0.0)),
        ],
        children=[palm],
    )
    return Body(
        "forearm",
        (0.0, -0.034, PALM_Z),
        None,
        (1.0, 0.0, 0.0),
        [Geom("capsule", (0.024,), fromto=(0.0, -0.14, -0.004, 0.0, -0.03, -0.004))],
        children=[wrist],
    )


# ---- LEAP ------------------------------------------------------------------------------------
def _leap_finger(hand: HandSpec, f: str) -> Body:
    """mcp (flexion, +x) -> rot (abduction, -z: positive toward the thumb) -> pip -> dip."""
    y = (0.0, 1.0, 0.0)
    lm, lp, lmd, ld = LEAP_FINGER
    r = LEAP_FINGER_R
    tip_site = hand.fingertip_sites[["if", "mf", "rf"].index(f)]
    ds = Body(
        f + "_ds",
        (0.0, lmd, 0.0),
        f + "_dip",
        (1.0, 0.0, 0.0),
        [_capsule(y, ld, 0.95 * r)],
        {tip_site: (0.0, ld, 0.0)},
    )
    md = Body(
        f + "_md",
        (0.0, lp, 0.0),
        f + "_pip",
        (1.0, 0.0, 0.0),
        [_capsule(y, lmd + 0.004, r)],
        children=[ds],
    )
    px = Body(
        f + "_px",
        (0.0, lm, 0.0),
        f + "_rot",
        (0.0, 0.0, -1.0),
        [_capsule(y, lp + 0.004, r)],
        children=[md],
    )
    knob = Geom("capsule", (r,), fromto=(0.0, 0.0, 0.0, 0.0, lm, 0.0))
    return Body(
        f + "_bs",
        (LEAP_FINGER_X[f], LEAP_KNUCKLE_Y, 0.0),
        f + "_mcp",
        (1.0, 0.0, 0.0),
        [knob],
        children=[px],
    )


def _leap_thumb(hand: HandSpec) -> Body:
    """Thumb in the palm plane at zero, along u (outward-forward), based on the palm's +x edge.

    th_cmc (about u x z) lifts it toward +z; th_axl rolls it about u; th_mcp and th_ipl (about
    u x z, rolled by th_axl) curl it. At zero roll those curl toward +z, a positive roll turns
    the curl toward the fingers (-x side).
    """
    u = _unit((0.35, 1.0, 0.0))
    lift = _unit(tuple(np.cross(u, (0.0, 0.0, 1.0))))
    lc, la, lp, ld = LEAP_THUMB
    r = LEAP_FINGER_R
    ds = Body(
        "th_ds",
        _scale(u, lp),
        "th_ipl",
        lift,
        [_capsule(u, ld, 0.95 * r)],
        {hand.fingertip_sites[3]: _scale(u, ld)},
    )
    px = Body("th_px", _scale(u, la), "th_mcp", lift, [_capsule(u, lp + 0.004, r)], children=[ds])
    bs = Body(
        "th_bs",
        _scale(u, lc),
        "th_axl",
        _scale(u, -1.0),
        [_capsule(u, la + 0.004, r)],
        children=[px],
    )
    hub = Geom("capsule", (r,), fromto=(0.0, 0.0, 0.0, *_scale(u, lc)))
    return Body("th_mp", LEAP_THUMB_BASE, "th_cmc", lift, [hub], children=[bs])


def _leap_tree(hand: HandSpec) -> Body:
    """Palm (fixed in the world, palm up) -> index/middle/ring fingers and thumb; no wrist."""
    hx, hy, hz = LEAP_PALM_HALF
    return Body(
        hand.palm_body,
        (0.0, 0.0, LEAP_PALM_Z),
        None,
        (1.0, 0.0, 0.0),
        [Geom("box", (hx, hy, hz), pos=(0.0, hy, 0.0))],
        children=[*(_leap_finger(hand, f) for f in ("if", "mf", "rf")), _leap_thumb(hand)],
    )


@dataclass(frozen=True)
class HandDescription:
    """What the generator builds differently per hand: data, looked up in one table."""

    tree: Callable[[HandSpec], Body]  # the kinematic tree (hand_tree)
    gains: Callable[[str], Gains]  # joint name -> actuator gains
    goal_pos: tuple[float, float, float]  # the goal marker, out of every camera's view
    jacobian: str  # MuJoCo's constraint Jacobian (see the measurement above)
    islands: bool  # constraint islands on (see the measurement above)


DESCRIPTIONS: dict[str, HandDescription] = {
    "dex_shadow": HandDescription(_shadow_tree, _shadow_gains, GOAL_POS, "sparse", False),
    "dex_leap": HandDescription(_leap_tree, lambda _joint: LEAP_GAINS, LEAP_GOAL_POS, "dense",
                                True),
}


def description(hand: HandSpec) -> HandDescription:
    try:
        return DESCRIPTIONS[hand.name]
    except KeyError:
        raise ValueError(f"no kinematic description for hand {hand.name!r}; "
                         f"described: {sorted(DESCRIPTIONS)}") from None


def _walk(body: Body):
    yield body
    for c in body.children:
        yield from _walk(c)


# ---- MJCF ------------------------------------------------------------------------------------
def _f(x: float) -> str:
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _v(xs) -> str:
    return " ".join(_f(float(x)) for x in xs)


def _cube_geoms(prefix: str, half: float, alpha: float, visual_attrs: str) -> list[str]:
    """Six coloured face slabs (outer surface flush with the cube) over a dark core."""
    e = 0.0006  # slab half thickness
    out = [
        f'<geom name="{prefix}_core" type="box" size="{_v([half - 2 * e] * 3)}" '
        f'rgba="0.05 0.05 0.05 {_f(alpha)}" {visual_attrs}/>'
    ]
    names = {1: "px", -1: "nx"}, {1: "py", -1: "ny"}, {1: "pz", -1: "nz"}
    for normal, rgb in FACE_RGBA.items():
        ax = int(np.flatnonzero(normal)[0])
        sgn = normal[ax]
        size = [half - e] * 3
        size[ax] = e
        pos = [0.0, 0.0, 0.0]
        pos[ax] = sgn * (half - e)
        out.append(
            f'<geom name="{prefix}_face_{names[ax][sgn]}" type="box" size="{_v(size)}" '
            f'pos="{_v(pos)}" rgba="{_v(rgb)} {_f(alpha)}" {visual_attrs}/>'
        )
    return out


def _mjcf_body(body: Body, hand: HandSpec, lines: list[str], depth: int) -> None:
    ind = "  " * depth
    lines.append(f'{ind}<body name="{body.name}" pos="{_v(body.pos)}">')
    if body.joint is not None:
        j = hand.joint(body.joint)
        g = _gains_for(j.name, hand)
        extra = f' stiffness="{_f(g.stiffness)}" springref="0"' if g.stiffness else ""
        lines.append(
            f'{ind}  <joint name="{j.name}" axis="{_v(body.axis)}" limited="true" '
            f'range="{_f(j.lower)} {_f(j.upper)}" damping="{_f(g.damping)}" '
            f'armature="{_f(g.armature)}"{extra}/>'
        )
    for i, g in enumerate(body.geoms):
        name = f"{body.name}_g{i}"
        if g.kind == "capsule":
            lines.append(
                f'{ind}  <geom name="{name}" class="hand" type="capsule" '
                f'fromto="{_v(g.fromto)}" size="{_f(g.size[0])}"/>'
            )
        else:
            lines.append(
                f'{ind}  <geom name="{name}" class="hand" type="box" pos="{_v(g.pos)}" '
                f'size="{_v(g.size)}"/>'
            )
    for sname, spos in body.sites.items():
        lines.append(
            f'{ind}  <site name="{sname}" pos="{_v(spos)}" size="0.003" rgba="1 1 1 0.6" group="3"/>'
        )
    for c in body.children:
        _mjcf_body(c, hand, lines, depth + 1)
    lines.append(f"{ind}</body>")


def _pair(geom: str, other_solref: tuple[float, ...], other_solimp: tuple[float, ...]) -> str:
    """A ``<pair>`` of ``geom`` with the cube carrying exactly the parameters MuJoCo's automatic
    contact mechanism would combine for it (equal solmix: the mean of solref / solimp; friction:
    the larger, all geoms share FRICTION; condim: the larger, the cube's)."""
    solref = 0.5 * (np.array(other_solref) + CONTACT_SOLREF)
    solimp = 0.5 * (np.array(other_solimp) + CONTACT_SOLIMP)
    slide, spin, roll = FRICTION
    return (
        f'    <pair geom1="{geom}" geom2="cube_collision" condim="{CUBE_CONDIM}" '
        f'friction="{_v([slide, slide, spin, roll, roll])}" solref="{_v(solref)}" '
        f'solimp="{_v(solimp)}"/>'
    )


def contact_pairs(hand: HandSpec) -> list[str]:
    """Every collision the task has: each hand collision geom with the cube, and the floor with
    the cube. The hand never collides with itself or with the floor (0.25 m below the palm, out
    of reach). Listing them lets MuJoCo skip the broad phase entirely."""
    hand_geoms = [f"{b.name}_g{i}" for b in _walk(hand_tree(hand)) for i in range(len(b.geoms))]
    return [_pair(g, CONTACT_SOLREF, CONTACT_SOLIMP) for g in hand_geoms] + [
        _pair("floor", MJ_DEFAULT_SOLREF, MJ_DEFAULT_SOLIMP)
    ]


def build_mjcf(hand: HandSpec, contacts: str = "pairs") -> str:
    """The scene (hand, cube, goal marker, floor, cameras) as MJCF.

    ``contacts="pairs"`` (shipped) lists every colliding geom pair explicitly (``contact_pairs``);
    ``"auto"`` leaves them to MuJoCo's contype/conaffinity filter and broad phase instead: the
    same contacts with the same parameters (tested), dearer per ``mj_step`` (measured by
    ``dex-sim-bench --scene-variants``, as are the Jacobian and island choices in
    ``DESCRIPTIONS``)."""
    if contacts not in ("pairs", "auto"):
        raise ValueError(f"contacts must be 'pairs' or 'auto', not {contacts!r}")
    on = contacts == "auto"
    hand_col = 'contype="1" conaffinity="0"' if on else 'contype="0" conaffinity="0"'
    both_col = 'contype="1" conaffinity="1"' if on else 'contype="0" conaffinity="0"'
    jacobian = description(hand).jacobian
    islands = "" if description(hand).islands else ' island="disable"'
    tree = hand_tree(hand)
    half = hand.cube.size / 2.0
    vis = max([640] + [c.width for c in hand.cameras])
    vis_h = max([480] + [c.height for c in hand.cameras])
    # ls_iterations 50 (MuJoCo's default): capped at 10, the Newton line search sometimes failed
    # on the elliptic cones (impratio 10) and the solve flung a cube resting on the palm (up to
    # 2.4 m/s; tested in test_randomization). It only iterates that long where it has to.
    L: list[str] = [
        "<!-- Generated by `python -m dex_description.generate` from dex_description.registry."
        " Do not edit. -->",
        f'<mujoco model="{hand.name}_scene">',
        '  <compiler angle="radian" autolimits="true"/>',
        f'  <option timestep="{_f(hand.timestep)}" integrator="implicitfast" cone="elliptic" '
        f'impratio="10" iterations="30" ls_iterations="50" jacobian="{jacobian}">',
        f'    <flag warmstart="enable"{islands}/>',
        "  </option>",
        "  <visual>",
        f'    <global offwidth="{vis}" offheight="{vis_h}"/>',
        '    <quality shadowsize="0"/>',
        '    <headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4" specular="0 0 0"/>',
        "  </visual>",
        "  <asset>",
        '    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.45 0.45 0.5" '
        'rgb2="0.35 0.35 0.4" width="256" height="256"/>',
        '    <material name="floor_mat" texture="floor_tex" texrepeat="8 8" reflectance="0"/>',
        "  </asset>",
        "  <default>",
        '    <default class="hand">',
        f'      <geom {hand_col} condim="3" friction="{_v(FRICTION)}" '
        f'rgba="{_v(HAND_RGBA)}" density="1000" solref="{_v(CONTACT_SOLREF)}" '
        f'solimp="{_v(CONTACT_SOLIMP)}"/>',
        "    </default>",
        "  </default>",
        "  <worldbody>",
        '    <light name="top" directional="true" pos="0 0 1.5" dir="0 0 -1" castshadow="false" '
        'diffuse="0.55 0.55 0.55"/>',
        '    <light name="front" directional="true" pos="0 1 1" dir="0 -0.5 -1" '
        'castshadow="false" diffuse="0.25 0.25 0.25"/>',
        f'    <geom name="floor" type="plane" pos="0 0 {_f(FLOOR_Z)}" size="1 1 0.05" '
        f'material="floor_mat" {both_col}/>',
    ]
    for cam in hand.cameras:
        L.append(
            f'    <camera name="{cam.name}" mode="fixed" pos="{_v(cam.pos)}" '
            f'xyaxes="{_v(cam.xyaxes())}" fovy="{_f(cam.fovy_deg)}"/>'
        )
    _mjcf_body(tree, hand, L, 2)
    # The cube: collision box (invisible, group 3) + coloured visual faces.
    L.append(f'    <body name="{hand.cube.name}" pos="{_v(hand.cube.rest_pos)}">')
    L.append('      <freejoint name="cube_free"/>')
    L.append(
        f'      <geom name="cube_collision" type="box" size="{_v([half] * 3)}" '
        f'mass="{_f(hand.cube.mass)}" friction="{_v(FRICTION)}" condim="{CUBE_CONDIM}" '
        f'{both_col} solref="{_v(CONTACT_SOLREF)}" solimp="{_v(CONTACT_SOLIMP)}" '
        'rgba="0.5 0.5 0.5 0" group="3"/>'
    )
    for g in _cube_geoms("cube", half, 1.0, 'contype="0" conaffinity="0" mass="0" group="1"'):
        L.append("      " + g)
    L.append("    </body>")
    L.append(f'    <body name="goal" mocap="true" pos="{_v(goal_pos(hand))}">')
    for g in _cube_geoms("goal", half, 0.4, 'contype="0" conaffinity="0" mass="0" group="2"'):
        L.append("      " + g)
    L.append("    </body>")
    L.append("  </worldbody>")
    # Coupled J0 actuators drive the tendon J2 + J1.
    if any(a.coupled for a in hand.actuators):
        L.append("  <tendon>")
        for act in hand.actuators:
            if act.coupled:
                L.append(f'    <fixed name="{act.name}_tendon">')
                for jn in act.joints:
                    L.append(f'      <joint joint="{jn}" coef="1"/>')
                L.append("    </fixed>")
        L.append("  </tendon>")
    if not on:
        L.append("  <contact>")
        L.extend(contact_pairs(hand))
        L.append("  </contact>")
    L.append("  <actuator>")
    for act in hand.actuators:
        g = GAINS["coupled"] if act.coupled else _gains_for(act.joints[0], hand)
        target = f'tendon="{act.name}_tendon"' if act.coupled else f'joint="{act.joints[0]}"'
        L.append(
            f'    <position name="{act.name}" {target} kp="{_f(g.kp)}" '
            f'ctrlrange="{_f(act.lower)} {_f(act.upper)}" '
            f'forcerange="{_f(-g.force)} {_f(g.force)}"/>'
        )
    L.append("  </actuator>")
    q = default_joint_positions(hand)
    qpos = [*q, *hand.cube.rest_pos, 1.0, 0.0, 0.0, 0.0]
    L.append("  <keyframe>")
    L.append(
        f'    <key name="home" qpos="{_v(qpos)}" ctrl="{_v(default_actuator_targets(hand))}" '
        f'mpos="{_v(goal_pos(hand))}" mquat="1 0 0 0"/>'
    )
    L.append("  </keyframe>")
    L.append("</mujoco>")
    return "\n".join(L) + "\n"


# ---- URDF ------------------------------------------------------------------------------------
def _cyl_rpy(d: np.ndarray) -> tuple[float, float, float]:
    """URDF rpy turning the cylinder's z axis onto unit vector d (R = Rz(yaw) Ry(pitch))."""
    pitch = math.acos(max(-1.0, min(1.0, float(d[2]))))
    yaw = math.atan2(float(d[1]), float(d[0])) if abs(d[2]) < 1 - 1e-12 else 0.0
    return (0.0, pitch, yaw)


def _urdf_geoms(g: Geom, ind: str) -> list[str]:
    out = []
    if g.kind == "box":
        shapes = [(g.pos, (0.0, 0.0, 0.0), f'<box size="{_v([2 * s for s in g.size])}"/>')]
    else:
        a, b = np.array(g.fromto[:3]), np.array(g.fromto[3:])
        length = float(np.linalg.norm(b - a))
        r = g.size[0]
        rpy = _cyl_rpy((b - a) / length) if length > 0 else (0.0, 0.0, 0.0)
        shapes = [((a + b) / 2, rpy, f'<cylinder radius="{_f(r)}" length="{_f(length)}"/>')]
        shapes += [(p, (0.0, 0.0, 0.0), f'<sphere radius="{_f(r)}"/>') for p in (a, b)]
    for tag in ("visual", "collision"):
        for pos, rpy, shape in shapes:
            out.append(f"{ind}<{tag}>")
            out.append(f'{ind}  <origin xyz="{_v(pos)}" rpy="{_v(rpy)}"/>')
            out.append(f"{ind}  <geometry>{shape}</geometry>")
            if tag == "visual":
                out.append(f'{ind}  <material name="hand"/>')
            out.append(f"{ind}</{tag}>")
    return out


def _approx_inertial(body: Body) -> tuple[float, float]:
    """(mass kg, isotropic inertia kg m^2) from the geoms at density 1000; rough but valid."""
    vol, extent = 0.0, 0.01
    for g in body.geoms:
        if g.kind == "box":
            vol += 8 * g.size[0] * g.size[1] * g.size[2]
            extent = max(extent, 2 * max(g.size))
        else:
            r = g.size[0]
            ln = float(np.linalg.norm(np.subtract(g.fromto[3:], g.fromto[:3])))
            vol += math.pi * r * r * ln + 4.0 / 3.0 * math.pi * r**3
            extent = max(extent, ln + 2 * r)
    mass = max(1000.0 * vol, 0.005)
    return mass, mass * extent**2 / 12.0


def build_urdf(hand: HandSpec) -> str:
    tree = hand_tree(hand)
    L = [
        '<?xml version="1.0"?>',
        "<!-- Generated by `python -m dex_description.generate` from dex_description.registry."
        " Do not edit. -->",
    ]
    if any(a.coupled for a in hand.actuators):
        L.append(
            "<!-- ros2_control: a coupled actuator XJ0 (target = XJ2 + XJ1) has its position"
            " command interface on joint XJ2, tagged with params actuator=XJ0 and"
            " coupling=XJ2+XJ1; the driver splits it. XJ1 has state interfaces only. -->"
        )
    L += [
        f'<robot name="{hand.name}">',
        '  <material name="hand"><color rgba="' + _v(HAND_RGBA) + '"/></material>',
        f'  <link name="{hand.base_frame}"/>',
    ]
    for body in _walk(tree):
        mass, inertia = _approx_inertial(body)
        L.append(f'  <link name="{body.name}">')
        L.append("    <inertial>")
        L.append('      <origin xyz="0 0 0" rpy="0 0 0"/>')
        L.append(f'      <mass value="{_f(mass)}"/>')
        i = f"{inertia:.3e}"
        L.append(f'      <inertia ixx="{i}" ixy="0" ixz="0" iyy="{i}" iyz="0" izz="{i}"/>')
        L.append("    </inertial>")
        for g in body.geoms:
            L += _urdf_geoms(g, "    ")
        L.append("  </link>")
        for sname, spos in body.sites.items():  # fingertip frames as fixed child links
            L.append(f'  <link name="{sname}"/>')
            L.append(f'  <joint name="{sname}_fixed" type="fixed">')
            L.append(f'    <parent link="{body.name}"/><child link="{sname}"/>')
            L.append(f'    <origin xyz="{_v(spos)}" rpy="0 0 0"/>')
            L.append("  </joint>")

    def emit_joints(parent: Body | None, body: Body) -> None:
        if body.joint is None:
            L.append(f'  <joint name="{hand.base_frame}_to_{body.name}" type="fixed">')
            L.append(f'    <parent link="{hand.base_frame}"/><child link="{body.name}"/>')
            L.append(f'    <origin xyz="{_v(body.pos)}" rpy="0 0 0"/>')
        else:
            j = hand.joint(body.joint)
            g = _gains_for(j.name, hand)
            assert parent is not None
            L.append(f'  <joint name="{j.name}" type="revolute">')
            L.append(f'    <parent link="{parent.name}"/><child link="{body.name}"/>')
            L.append(f'    <origin xyz="{_v(body.pos)}" rpy="0 0 0"/>')
            L.append(f'    <axis xyz="{_v(body.axis)}"/>')
            L.append(
                f'    <limit lower="{_f(j.lower)}" upper="{_f(j.upper)}" '
                f'effort="{_f(g.force)}" velocity="4"/>'
            )
            L.append(f'    <dynamics damping="{_f(g.damping)}" friction="0"/>')
        L.append("  </joint>")
        for c in body.children:
            emit_joints(body, c)

    emit_joints(None, tree)

    cmd_joint = {}  # joint carrying the command interface -> actuator
    for act in hand.actuators:
        cmd_joint[act.joints[0]] = act
    L.append(f'  <ros2_control name="{hand.name}" type="system">')
    L.append("    <hardware>")
    L.append("      <plugin>mock_components/GenericSystem</plugin>")
    L.append("    </hardware>")
    q0 = dict(zip(hand.joint_names, default_joint_positions(hand), strict=True))
    for jn in hand.joint_names:
        L.append(f'    <joint name="{jn}">')
        act = cmd_joint.get(jn)
        if act is not None:
            L.append('      <command_interface name="position">')
            L.append(f'        <param name="min">{_f(act.lower)}</param>')
            L.append(f'        <param name="max">{_f(act.upper)}</param>')
            L.append("      </command_interface>")
            if act.coupled:
                L.append(f'      <param name="actuator">{act.name}</param>')
                L.append(f'      <param name="coupling">{"+".join(act.joints)}</param>')
        L.append('      <state_interface name="position">')
        L.append(f'        <param name="initial_value">{_f(q0[jn])}</param>')
        L.append("      </state_interface>")
        L.append('      <state_interface name="velocity"/>')
        L.append("    </joint>")
    L.append("  </ros2_control>")
    L.append("</robot>")
    return "\n".join(L) + "\n"


# ---- RViz ------------------------------------------------------------------------------------
def build_rviz(hand: HandSpec) -> str:
    def display(cls: str, name: str, topic: str, extra: str = "") -> str:
        return (
            f"    - Class: {cls}\n"
            f"      Enabled: true\n"
            f"      Name: {name}\n"
            f"      Topic:\n"
            f"        Depth: 5\n"
            f"        Durability Policy: Volatile\n"
            f"        History Policy: Keep Last\n"
            f"        Reliability Policy: Reliable\n"
            f"        Value: {topic}\n"
            f"{extra}"
        )

    disp = [
        "    - Class: rviz_default_plugins/Grid\n"
        "      Enabled: true\n"
        "      Name: Grid\n"
        "      Cell Size: 0.05\n"
        "      Plane Cell Count: 20\n"
        "      Reference Frame: <Fixed Frame>\n",
        "    - Class: rviz_default_plugins/RobotModel\n"
        "      Enabled: true\n"
        "      Name: RobotModel\n"
        "      Description Source: Topic\n"
        "      Description Topic:\n"
        "        Depth: 5\n"
        "        Durability Policy: Transient Local\n"
        "        History Policy: Keep Last\n"
        "        Reliability Policy: Reliable\n"
        "        Value: /robot_description\n"
        "      Visual Enabled: true\n"
        "      Collision Enabled: false\n",
    ]
    for cam in hand.cameras:
        disp.append(
            display(
                "rviz_default_plugins/Image",
                f"{cam.name} image",
                f"/cameras/{cam.name}/image_raw",
                "      Normalize Range: true\n",
            )
        )
    disp.append(display("rviz_default_plugins/Marker", "Goal", "/goal/marker"))
    pose_extra = "      Shape: Axes\n      Axes Length: {l}\n      Axes Radius: 0.004\n"
    disp.append(
        display(
            "rviz_default_plugins/Pose",
            "Object pose (perception)",
            "/object/pose",
            pose_extra.format(l="0.06"),
        )
    )
    disp.append(
        display(
            "rviz_default_plugins/Pose",
            "Object pose (ground truth)",
            "/object/pose_gt",
            pose_extra.format(l="0.04"),
        )
    )
    look = hand.cube.rest_pos
    return (
        "# Generated by `python -m dex_description.generate`. Do not edit.\n"
        "Panels:\n"
        "  - Class: rviz_common/Displays\n"
        "    Name: Displays\n"
        "Visualization Manager:\n"
        '  Class: ""\n'
        "  Displays:\n" + "".join(disp) + "  Enabled: true\n"
        "  Global Options:\n"
        "    Background Color: 48; 48; 48\n"
        f"    Fixed Frame: {hand.base_frame}\n"
        "    Frame Rate: 30\n"
        "  Name: root\n"
        "  Tools:\n"
        "    - Class: rviz_default_plugins/Interact\n"
        "    - Class: rviz_default_plugins/MoveCamera\n"
        "    - Class: rviz_default_plugins/Select\n"
        "  Views:\n"
        "    Current:\n"
        "      Class: rviz_default_plugins/Orbit\n"
        "      Distance: 0.6\n"
        "      Focal Point:\n"
        f"        X: {_f(look[0])}\n"
        f"        Y: {_f(look[1])}\n"
        f"        Z: {_f(look[2])}\n"
        "      Name: Current View\n"
        "      Pitch: 0.6\n"
        "      Yaw: -1.2\n"
        "      Target Frame: <Fixed Frame>\n"
        "Window Geometry:\n"
        "  Height: 900\n"
        "  Width: 1400\n"
    )


# ---- files -----------------------------------------------------------------------------------
HAND_PROFILES = ("shadow", "leap")  # every hand the generator writes files for


def outputs(hand_name: str = "shadow") -> dict[Path, str]:
    """Every generated file of one hand (absolute path under the package) -> its content."""
    hand = get_hand(hand_name)
    return {
        PKG_DIR / "models" / f"{hand.name}_scene.xml": build_mjcf(hand),
        PKG_DIR / "models" / f"{hand.name}.urdf": build_urdf(hand),
        PKG_DIR / "rviz" / rviz_name(hand): build_rviz(hand),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    ap.add_argument("--hand", default=None, help="one hand profile (default: all of them)")
    args = ap.parse_args(argv)
    stale = []
    files: dict[Path, str] = {}
    for h in [args.hand] if args.hand else HAND_PROFILES:
        files.update(outputs(h))
    for path, text in files.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(
            "out of date (run `python -m dex_description.generate`): "
            + ", ".join(quoteattr(str(p)) for p in stale),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
