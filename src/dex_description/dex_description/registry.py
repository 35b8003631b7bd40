"""The one registry of hand facts.

Every other package asks this module for joint and actuator names, their order, limits, units,
coupling, fingertip sites, camera names and resolution, and the task timing. Nobody else
hard-codes them. The MJCF and URDF in ``dex_description/models`` are generated from these facts
(``python -m dex_description.generate``), and a test checks that the committed files match.

Frames: the hand is fixed in the world, palm up. World z is up; the fingers point along +y; the
thumb is on the +x side (a right hand).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Joint:
    """A hinge joint. Angles in rad, positive = flexion (towards the palm) unless noted."""

    name: str
    lower: float
    upper: float
    unit: str = "rad"


@dataclass(frozen=True)
class Actuator:
    """A position actuator. ``joints`` has two entries for a coupled (tendon) actuator, whose
    target is the sum of the two joint angles (Shadow's J0 = J1 + J2)."""

    name: str
    joints: tuple[str, ...]
    lower: float
    upper: float
    unit: str = "rad"

    @property
    def coupled(self) -> bool:
        return len(self.joints) > 1


@dataclass(frozen=True)
class Camera:
    """A fixed pinhole camera looking at ``lookat`` from ``pos`` (world frame, m)."""

    name: str
    pos: tuple[float, float, float]
    lookat: tuple[float, float, float]
    fovy_deg: float
    width: int
    height: int

    @property
    def frame_id(self) -> str:
        return self.name + "_optical_frame"

    def intrinsics(self) -> np.ndarray:
        """3x3 K matrix (pixels) of the pinhole model MuJoCo renders with (square pixels)."""
        fy = 0.5 * self.height / math.tan(math.radians(self.fovy_deg) / 2.0)
        return np.array(
            [[fy, 0.0, (self.width - 1) / 2.0], [0.0, fy, (self.height - 1) / 2.0], [0, 0, 1.0]]
        )

    def xyaxes(self) -> tuple[float, ...]:
        """MuJoCo camera xyaxes (camera x = image right, camera y = image up; looks along -z)."""
        fwd = np.asarray(self.lookat, float) - np.asarray(self.pos, float)
        fwd /= np.linalg.norm(fwd)
        up_world = np.array([0.0, 0.0, 1.0])
        right = np.cross(fwd, up_world)
        if np.linalg.norm(right) < 1e-9:  # looking straight down
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        return tuple(float(v) for v in (*right, *up))


@dataclass(frozen=True)
class CubeSpec:
    name: str = "cube"
    size: float = 0.055  # edge length, m
    mass: float = 0.078  # kg (Dactyl's block)
    # Where the cube is placed on reset (world frame, m): above the palm centre.
    rest_pos: tuple[float, float, float] = (0.0, 0.035, 0.06)


@dataclass(frozen=True)
class HandSpec:
    name: str
    joints: tuple[Joint, ...]
    actuators: tuple[Actuator, ...]
    fingertip_sites: tuple[str, ...]
    cameras: tuple[Camera, ...]
    cube: CubeSpec = field(default_factory=CubeSpec)
    base_frame: str = "world"
    palm_body: str = "palm"
    timestep: float = 0.002  # physics step, s
    control_period: float = 0.08  # one policy action per 80 ms (Dactyl)
    joint_prefix: str = ""

    # ---- names and order ------------------------------------------------------------------
    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def actuator_names(self) -> list[str]:
        return [a.name for a in self.actuators]

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    @property
    def n_actuators(self) -> int:
        return len(self.actuators)

    @property
    def substeps(self) -> int:
        n = round(self.control_period / self.timestep)
        if abs(n * self.timestep - self.control_period) > 1e-9:
            raise ValueError("control_period must be a whole number of physics timesteps")
        return n

    # ---- limits -----------------------------------------------------------------------------
    def joint(self, name: str) -> Joint:
        for j in self.joints:
            if j.name == name:
                return j
        raise KeyError(f"unknown joint {name!r}; {self.name} has {self.joint_names}")

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([j.lower for j in self.joints]), np.array([j.upper for j in self.joints]))

    def actuator_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.array([a.lower for a in self.actuators]),
            np.array([a.upper for a in self.actuators]),
        )

    def camera(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"unknown camera {name!r}; {self.name} has {self.camera_names}")

    def at_resolution(self, width: int, height: int) -> HandSpec:
        """This hand with every camera rendering ``width`` x ``height`` pixels (same pose and
        field of view): for training and judging a pose model at another resolution than the
        registry's. Its ``facts_hash`` differs, so such a model only loads where the cameras
        match it."""
        if width < 16 or height < 16 or width > 4096 or height > 4096:
            raise ValueError(f"camera resolution must be 16..4096 pixels a side; got "
                             f"{width} x {height}")
        return replace(self, cameras=tuple(replace(c, width=int(width), height=int(height))
                                           for c in self.cameras))

    def actuation_matrix(self) -> np.ndarray:
        """(n_actuators, n_joints) matrix A with actuator value = A @ joint positions."""
        index = {n: i for i, n in enumerate(self.joint_names)}
        a = np.zeros((self.n_actuators, self.n_joints))
        for r, act in enumerate(self.actuators):
            for jn in act.joints:
                a[r, index[jn]] = 1.0
        return a

    def facts_hash(self) -> str:
        """Short hash over every fact a model depends on; models record it in their contract."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _finger(prefix: str, has_j5: bool = False) -> list[Joint]:
    out = []
    if has_j5:
        out.append(Joint(prefix + "J5", 0.0, 0.785))  # little-finger metacarpal cup
    out += [
        Joint(prefix + "J4", -0.349, 0.349),  # abduction
        Joint(prefix + "J3", -0.262, 1.571),  # proximal flexion
        Joint(prefix + "J2", 0.0, 1.571),  # middle flexion (coupled with J1)
        Joint(prefix + "J1", 0.0, 1.571),  # distal flexion (coupled with J2)
    ]
    return out


def _finger_actuators(prefix: str, has_j5: bool = False) -> list[Actuator]:
    out = []
    if has_j5:
        out.append(Actuator(prefix + "J5", (prefix + "J5",), 0.0, 0.785))
    out += [
        Actuator(prefix + "J4", (prefix + "J4",), -0.349, 0.349),
        Actuator(prefix + "J3", (prefix + "J3",), -0.262, 1.571),
        Actuator(prefix + "J0", (prefix + "J2", prefix + "J1"), 0.0, 3.142),
    ]
    return out


def _default_cameras(
    width: int = 128,
    height: int = 128,
    look: tuple[float, float, float] = (0.0, 0.035, 0.06),
    r: float = 0.30,
    h: float = 0.32,
) -> tuple[Camera, ...]:
    # Three cameras around and above the palm, 120 degrees apart (Dactyl used three, around
    # the cage); all look at the cube's rest position ``look`` from radius r (m, about the
    # vertical through it) and height h (m, world).
    cams = []
    for i, az in enumerate((-90.0, 30.0, 150.0)):
        pos = (
            round(look[0] + r * math.cos(math.radians(az)), 4),
            round(look[1] + r * math.sin(math.radians(az)), 4),
            h,
        )
        cams.append(Camera(f"cam{i}", pos, look, 40.0, width, height))
    return tuple(cams)


SHADOW = HandSpec(
    name="dex_shadow",
    joints=tuple(
        [Joint("WRJ2", -0.524, 0.175), Joint("WRJ1", -0.698, 0.489)]  # deviation, flexion
        + _finger("FF")
        + _finger("MF")
        + _finger("RF")
        + _finger("LF", has_j5=True)
        + [
            Joint("THJ5", -1.047, 1.047),  # rotation
            Joint("THJ4", 0.0, 1.222),  # abduction over the palm
            Joint("THJ3", -0.209, 0.209),
            Joint("THJ2", -0.698, 0.698),
            Joint("THJ1", -0.262, 1.571),
        ]
    ),
    actuators=tuple(
        [Actuator("WRJ2", ("WRJ2",), -0.524, 0.175), Actuator("WRJ1", ("WRJ1",), -0.698, 0.489)]
        + _finger_actuators("FF")
        + _finger_actuators("MF")
        + _finger_actuators("RF")
        + _finger_actuators("LF", has_j5=True)
        + [
            Actuator("THJ5", ("THJ5",), -1.047, 1.047),
            Actuator("THJ4", ("THJ4",), 0.0, 1.222),
            Actuator("THJ3", ("THJ3",), -0.209, 0.209),
            Actuator("THJ2", ("THJ2",), -0.698, 0.698),
            Actuator("THJ1", ("THJ1",), -0.262, 1.571),
        ]
    ),
    fingertip_sites=("FFtip", "MFtip", "RFtip", "LFtip", "THtip"),
    cameras=_default_cameras(),
)

# ---- LEAP Hand (CMU; Shaw, Agarwal, Pathak, RSS 2023): 16 Dynamixel joints, no coupling -----
# Joint names follow LEAP's convention (as in MuJoCo Menagerie's leap_hand / Playground's LEAP
# tasks): index (if), middle (mf), ring (rf) fingers each mcp (flexion at the knuckle), rot
# (abduction, carried by the flexed link: LEAP's universal MCP), pip, dip (flexion); thumb th_cmc
# (lifts the thumb off the palm plane), th_axl (roll about the thumb's own axis), th_mcp, th_ipl
# (flexion). Limits: LEAP Hand paper/datasheet, approximated (the values the published LEAP
# model uses). Sign conventions of our generated model: positive = flexion toward the palm side
# (+z at the zero pose); positive rot = toward the thumb (+x).
_LEAP_FINGER_LIMITS = (
    ("mcp", -0.314, 2.23),
    ("rot", -1.047, 1.047),
    ("pip", -0.506, 1.885),
    ("dip", -0.366, 2.042),
)
_LEAP_THUMB_LIMITS = (
    ("cmc", -0.349, 2.094),
    ("axl", -0.349, 2.094),
    ("mcp", -0.47, 2.443),
    ("ipl", -1.34, 1.88),
)
_LEAP_JOINTS = tuple(
    Joint(f"{f}_{n}", lo, hi) for f in ("if", "mf", "rf") for n, lo, hi in _LEAP_FINGER_LIMITS
) + tuple(Joint(f"th_{n}", lo, hi) for n, lo, hi in _LEAP_THUMB_LIMITS)

# The cube of Playground's LEAP reorientation task: a 7 cm box (half size 0.035 m) of 0.108 kg
# (a later revision models a 7.6 cm, 68 g hollow plastic cube). Rest position: centred over the
# LEAP palm (top surface at z = 0.03 m, palm y in [0, 0.11] m), 3 mm above it.
LEAP_CUBE = CubeSpec(size=0.07, mass=0.108, rest_pos=(0.0, 0.055, 0.068))

LEAP = HandSpec(
    name="dex_leap",
    joints=_LEAP_JOINTS,
    # One position actuator per joint, named as its joint (LEAP has no coupled joints).
    actuators=tuple(Actuator(j.name, (j.name,), j.lower, j.upper) for j in _LEAP_JOINTS),
    fingertip_sites=("if_tip", "mf_tip", "rf_tip", "th_tip"),
    cameras=_default_cameras(look=LEAP_CUBE.rest_pos, r=0.33, h=0.36),
    cube=LEAP_CUBE,
    # Same task timing as the Shadow profile (80 ms, Dactyl). Playground's LEAP task runs at
    # 20 Hz (50 ms); kept at 80 ms so one policy/trial stack serves both hands.
    control_period=0.08,
)

@dataclass(frozen=True)
class ServoMap:
    """Where a real hand's actuators are on its servo bus (drivers only: not a model fact, so
    not part of ``HandSpec`` or its facts hash).

    ``ids[i]`` is the servo ID of registry actuator ``i``; the servo angle (rad) of a model
    joint angle ``q`` is ``offsets[i] + signs[i] * q``.
    """
    ids: tuple[int, ...]
    signs: tuple[float, ...]
    offsets: tuple[float, ...]
    side_to_side: tuple[int, ...] = ()  # servos of the abduction joints (softer gains on LEAP)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(set(self.ids)) != n or len(self.signs) != n or len(self.offsets) != n:
            raise ValueError("ServoMap: ids must be distinct; ids, signs, offsets of one length")
        if any(s not in (1.0, -1.0) for s in self.signs):
            raise ValueError(f"ServoMap: signs must be +1 or -1; got {self.signs}")
        if not set(self.side_to_side) <= set(self.ids):
            raise ValueError(f"ServoMap: side_to_side {self.side_to_side} are not all ids")

    def to_servo(self, q: np.ndarray) -> np.ndarray:
        """Model actuator angles (registry order) → servo angles (rad, same order)."""
        return np.asarray(self.offsets) + np.asarray(self.signs) * np.asarray(q, float)

    def from_servo(self, a: np.ndarray) -> np.ndarray:
        """Servo angles (rad, registry order) → model actuator angles."""
        return (np.asarray(a, float) - np.asarray(self.offsets)) * np.asarray(self.signs)


# LEAP's servo IDs (LEAP_Hand_API): index 0-3, middle 4-7, ring 8-11, thumb 12-15; on each finger
# MCP side (our ``rot``), MCP forward (our ``mcp``), PIP, DIP: so our mcp/rot pairs swap IDs.
# Thumb IDs 12-15 in the order cmc, axl, mcp, ipl (MuJoCo Menagerie's naming of the same joints).
# Angles: pi (2048 ticks) is the open hand and closing is positive: servo = q + pi.
LEAP_SERVOS = ServoMap(
    ids=(1, 0, 2, 3, 5, 4, 6, 7, 9, 8, 10, 11, 12, 13, 14, 15),
    signs=(1.0,) * 16,
    offsets=(math.pi,) * 16,
    side_to_side=(0, 4, 8),  # if_rot, mf_rot, rf_rot
)
SERVO_MAPS: dict[str, ServoMap] = {LEAP.name: LEAP_SERVOS}


def get_servo_map(hand: str | HandSpec) -> ServoMap:
    """The servo map of a hand that has a real-hand driver (``KeyError`` names those that do)."""
    spec = hand if isinstance(hand, HandSpec) else get_hand(hand)
    if spec.name not in SERVO_MAPS:
        raise KeyError(f"hand {spec.name!r} has no servo map (real-hand drivers exist for: "
                       f"{sorted(SERVO_MAPS)})")
    m = SERVO_MAPS[spec.name]
    if len(m.ids) != spec.n_actuators:
        raise ValueError(f"servo map of {spec.name} has {len(m.ids)} ids for "
                         f"{spec.n_actuators} actuators")
    return m


HANDS: dict[str, HandSpec] = {
    "shadow": SHADOW,
    SHADOW.name: SHADOW,
    "leap": LEAP,
    LEAP.name: LEAP,
}


def get_hand(name: str = "shadow") -> HandSpec:
    """The hand spec by profile name; a clear error for an unknown one."""
    try:
        return HANDS[name]
    except KeyError:
        raise KeyError(f"unknown hand {name!r}; known: {sorted(HANDS)}") from None
