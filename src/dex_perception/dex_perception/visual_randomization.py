"""Visual randomization of the pose dataset (Dactyl, Appendix C.2 / Table 9): THE one table.

``VISUAL_RANDOMIZATIONS`` lists every randomized visual quantity once: its range in the
``full`` set (Dactyl's list: colours of hand, cube body, background; number, direction, colour
and intensity of lights; camera position, orientation and field of view; image noise, blur and
gamma) and in the ``basic`` set (lighting and a small colour jitter only: what the shipped
Shadow pose model was trained on), how many values a sample draws (``per``) and what it writes
(``write``). ``docs/visual_randomization.md`` is generated from it
(``python -m dex_perception.visual_randomization --markdown``). The ranges are ours: Dactyl
names the quantities, not all of its ranges.

Every row draws ``uniform(low, high)`` values, the shape given by ``per``; a row absent from a
set writes nothing, so the model keeps its nominal value (every model array a row touches is
restored to nominal before each sample, so draws never compound).

The cube's faces are its markings: they keep their hue within ``cube_face_hue`` (±0.04 of the
hue circle, while the nominal face hues are at least 0.16 apart), so every face stays
distinguishable from every other under any draw; brightness and saturation may vary.
Image rows act after rendering, per camera image (``postprocess``).
"""

from __future__ import annotations

import argparse
import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import mujoco
import numpy as np

from dex_sim.randomization import model_array

PER = ("sample", "light", "light_rgb", "hand_geom_rgb", "background_geom_rgb", "cube_face",
       "camera", "camera_xyz")
SETS = ("none", "basic", "full")


@dataclass(frozen=True)
class VisualParam:
    """One visual randomization: ``uniform(low, high)`` in the full set, ``basic`` in the basic
    set (None: off there), ``per`` values per sample, written by ``write(r, values)``."""

    name: str
    group: str  # colour | light | camera | image
    low: float
    high: float
    basic: tuple[float, float] | None
    unit: str
    per: str  # one of PER
    doc: str
    write: Callable[[VisualRandomizer, np.ndarray], None]
    fields: tuple[str, ...] = ()  # MjModel arrays ``write`` changes ("vis.headlight.ambient")


# ---- what each row writes -------------------------------------------------------------------
def _hand_rgb(r: VisualRandomizer, v: np.ndarray) -> None:
    g = r.hand_geoms
    r.m.geom_rgba[g, :3] = np.clip(r.nominal["geom_rgba"][g, :3] + v, 0.0, 1.0)


def _background_rgb(r: VisualRandomizer, v: np.ndarray) -> None:
    g = r.background_geoms
    r.m.geom_rgba[g, :3] = np.clip(r.nominal["geom_rgba"][g, :3] + v, 0.0, 1.0)


def _cube_body_grey(r: VisualRandomizer, v: np.ndarray) -> None:
    r.m.geom_rgba[r.cube_body_geoms, :3] = float(v)


def _face_hsv(channel: int) -> Callable[[VisualRandomizer, np.ndarray], None]:
    def write(r: VisualRandomizer, v: np.ndarray) -> None:
        for g, x in zip(r.cube_face_geoms, v, strict=True):
            hsv = list(colorsys.rgb_to_hsv(*r.m.geom_rgba[g, :3]))
            if channel == 0:
                hsv[0] = (hsv[0] + x) % 1.0  # hue: a shift
            else:
                hsv[channel] = min(1.0, hsv[channel] * x)  # saturation, value: a scale
            r.m.geom_rgba[g, :3] = colorsys.hsv_to_rgb(*hsv)
    return write


def _lights_off(r: VisualRandomizer, v: np.ndarray) -> None:
    # v: per light, uniform(0, 1); the light is off where v < P_LIGHT_OFF
    r.m.light_active[:] = (v >= P_LIGHT_OFF).astype(r.m.light_active.dtype)


def _light_intensity(r: VisualRandomizer, v: np.ndarray) -> None:
    r.m.light_diffuse[:] = np.clip(r.m.light_diffuse * v[:, None], 0.0, 1.0)


def _light_tint(r: VisualRandomizer, v: np.ndarray) -> None:
    r.m.light_diffuse[:] = np.clip(r.m.light_diffuse * v, 0.0, 1.0)


def _light_direction(r: VisualRandomizer, v: np.ndarray) -> None:
    # v: per light, the angle (rad) the direction turns about a random axis
    for i, angle in enumerate(v):
        r.m.light_dir[i] = _turn(r.m.light_dir[i], r.rng, angle)


def _headlight(field: str) -> Callable[[VisualRandomizer, np.ndarray], None]:
    def write(r: VisualRandomizer, v: np.ndarray) -> None:
        arr = model_array(r.m, "vis.headlight." + field)
        arr[:] = np.clip(r.nominal["vis.headlight." + field] * float(v), 0.0, 1.0)
    return write


def _camera_position(r: VisualRandomizer, v: np.ndarray) -> None:
    r.m.cam_pos[r.cameras] = r.nominal["cam_pos"][r.cameras] + v


def _camera_rotation(r: VisualRandomizer, v: np.ndarray) -> None:
    for c, angle in zip(r.cameras, v, strict=True):
        axis = _random_axis(r.rng)
        turn = np.zeros(4)
        mujoco.mju_axisAngle2Quat(turn, axis, float(angle))
        q = np.zeros(4)
        mujoco.mju_mulQuat(q, r.nominal["cam_quat"][c], turn)  # about the camera's own axes
        r.m.cam_quat[c] = q


def _camera_fovy(r: VisualRandomizer, v: np.ndarray) -> None:
    r.m.cam_fovy[r.cameras] = r.nominal["cam_fovy"][r.cameras] + v


def _image_setting(name: str) -> Callable[[VisualRandomizer, np.ndarray], None]:
    def write(r: VisualRandomizer, v: np.ndarray) -> None:
        r.image[name] = np.asarray(v, float)
    return write


def _random_axis(rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=3)
    return a / np.linalg.norm(a)


def _turn(direction: np.ndarray, rng: np.random.Generator, angle: float) -> np.ndarray:
    q, out = np.zeros(4), np.zeros(3)
    mujoco.mju_axisAngle2Quat(q, _random_axis(rng), float(angle))
    mujoco.mju_rotVecQuat(out, np.asarray(direction, float), q)
    return out


P_LIGHT_OFF = 0.3  # full set: each scene light is off with this probability (the headlight stays)

VISUAL_RANDOMIZATIONS: tuple[VisualParam, ...] = (
    VisualParam("hand_rgb", "colour", -0.6, 0.6, (-0.08, 0.08), "rgb offset", "hand_geom_rgb",
                "each hand geom's colour, nominal + offset per channel, clipped to [0, 1]",
                _hand_rgb, ("geom_rgba",)),
    VisualParam("background_rgb", "colour", -0.6, 0.6, (-0.08, 0.08), "rgb offset",
                "background_geom_rgb",
                "floor and other world geoms (a textured one: the tint of its texture)",
                _background_rgb, ("geom_rgba",)),
    VisualParam("cube_body_grey", "colour", 0.0, 0.3, None, "grey level", "sample",
                "the cube's body (edges between the face plates), kept darker than any face",
                _cube_body_grey, ("geom_rgba",)),
    VisualParam("cube_face_hue", "colour", -0.04, 0.04, None, "hue shift", "cube_face",
                "each face's hue; nominal face hues are >= 0.16 apart, so faces stay distinct",
                _face_hsv(0), ("geom_rgba",)),
    VisualParam("cube_face_saturation", "colour", 0.7, 1.0, None, "scale", "cube_face",
                "each face's saturation", _face_hsv(1), ("geom_rgba",)),
    VisualParam("cube_face_value", "colour", 0.7, 1.1, None, "scale", "cube_face",
                "each face's brightness (clipped to 1)", _face_hsv(2), ("geom_rgba",)),
    VisualParam("lights_off", "light", 0.0, 1.0, None, f"off if < {P_LIGHT_OFF}", "light",
                f"number of lights: each scene light is off with probability {P_LIGHT_OFF} "
                "(the camera headlight stays on)", _lights_off, ("light_active",)),
    VisualParam("light_intensity", "light", 0.3, 1.6, (0.6, 1.3), "scale", "light",
                "each light's diffuse intensity", _light_intensity, ("light_diffuse",)),
    VisualParam("light_tint", "light", 0.8, 1.2, None, "scale per channel", "light_rgb",
                "each light's colour", _light_tint, ("light_diffuse",)),
    VisualParam("light_direction", "light", 0.0, 0.6, (0.0, 0.25), "rad", "light",
                "each light's direction turned by this angle about a random axis (our lights "
                "are directional: the direction is their position in the sky)",
                _light_direction, ("light_dir",)),
    VisualParam("headlight_diffuse", "light", 0.3, 1.5, (0.6, 1.3), "scale", "sample",
                "the camera headlight's diffuse intensity", _headlight("diffuse"),
                ("vis.headlight.diffuse",)),
    VisualParam("headlight_ambient", "light", 0.3, 2.0, (0.7, 1.3), "scale", "sample",
                "ambient light", _headlight("ambient"), ("vis.headlight.ambient",)),
    VisualParam("camera_position", "camera", -0.01, 0.01, None, "m per axis", "camera_xyz",
                "each camera's position around its registry (calibrated) pose",
                _camera_position, ("cam_pos",)),
    VisualParam("camera_rotation", "camera", 0.0, math.radians(2.0), None, "rad", "camera",
                "each camera turned by this angle about a random axis", _camera_rotation,
                ("cam_quat",)),
    VisualParam("camera_fovy", "camera", -1.5, 1.5, None, "deg", "camera",
                "each camera's vertical field of view", _camera_fovy, ("cam_fovy",)),
    VisualParam("image_noise", "image", 0.0, 6.0, None, "sigma, 0-255", "camera",
                "Gaussian pixel noise per image", _image_setting("noise")),
    VisualParam("image_blur", "image", 0.0, 1.0, None, "sigma, px", "camera",
                "Gaussian blur per image (none below 0.3 px)", _image_setting("blur")),
    VisualParam("image_gamma", "image", 0.8, 1.25, None, "gamma", "camera",
                "gamma per image", _image_setting("gamma")),
)


def set_ranges(name: str) -> dict[str, tuple[float, float]]:
    """The rows a set applies, with their ranges."""
    if name not in SETS:
        raise ValueError(f"unknown visual randomization set {name!r}; have {SETS}")
    if name == "none":
        return {}
    if name == "full":
        return {p.name: (p.low, p.high) for p in VISUAL_RANDOMIZATIONS}
    return {p.name: p.basic for p in VISUAL_RANDOMIZATIONS if p.basic is not None}


class VisualRandomizer:
    """Applies one set of ``VISUAL_RANDOMIZATIONS`` to ``model`` per sample (``apply``) and to
    the rendered images (``postprocess``)."""

    def __init__(self, model: mujoco.MjModel, cube_body: str, camera_names: list[str],
                 visual_set: str = "full") -> None:
        self.m = model
        self.visual_set = visual_set
        self.ranges = set_ranges(visual_set)
        self.rows = [p for p in VISUAL_RANDOMIZATIONS if p.name in self.ranges]
        fields = sorted({f for p in VISUAL_RANDOMIZATIONS for f in p.fields})
        self.nominal = {f: model_array(model, f).copy() for f in fields}
        self.cameras = np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, n)
                                 for n in camera_names])
        self.hand_geoms, self.background_geoms, self.cube_body_geoms, self.cube_face_geoms = (
            _geom_roles(model, cube_body))
        self.rng = np.random.default_rng(0)
        self.image: dict[str, np.ndarray] = {}

    def count(self, per: str) -> tuple[int, ...]:
        return {"sample": (), "light": (self.m.nlight,), "light_rgb": (self.m.nlight, 3),
                "hand_geom_rgb": (len(self.hand_geoms), 3),
                "background_geom_rgb": (len(self.background_geoms), 3),
                "cube_face": (len(self.cube_face_geoms),), "camera": (len(self.cameras),),
                "camera_xyz": (len(self.cameras), 3)}[per]

    def apply(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Restore nominal, draw every row of the set and write it; returns the draws."""
        self.rng = rng
        for f, v in self.nominal.items():
            model_array(self.m, f)[:] = v
        self.image = {}
        draws = {}
        for p in self.rows:
            lo, hi = self.ranges[p.name]
            draws[p.name] = v = rng.uniform(lo, hi, size=self.count(p.per))
            p.write(self, v)
        return draws

    def postprocess(self, images: np.ndarray) -> np.ndarray:
        """The image rows on rendered uint8 images [C, H, W, 3] (one setting per camera)."""
        if not self.image:
            return images
        out = images.astype(np.float32)
        for c in range(len(out)):
            blur = float(self.image.get("blur", np.zeros(len(out)))[c])
            if blur >= 0.3:
                out[c] = cv2.GaussianBlur(out[c], (0, 0), blur)
            gamma = float(self.image.get("gamma", np.ones(len(out)))[c])
            if gamma != 1.0:
                out[c] = 255.0 * (out[c] / 255.0) ** gamma
            noise = float(self.image.get("noise", np.zeros(len(out)))[c])
            if noise > 0:
                out[c] += self.rng.normal(0.0, noise, size=out[c].shape)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _geom_roles(model: mujoco.MjModel, cube_body: str) -> tuple[np.ndarray, ...]:
    """Visible geoms by role: hand, background (world body), cube body, cube faces. Invisible
    ones (alpha 0: collision boxes) and the goal marker (group 2) are nobody's."""
    cube_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, cube_body)

    def on_cube(b: int) -> bool:
        while b > 0:
            if b == cube_id:
                return True
            b = int(model.body_parentid[b])
        return False

    hand, background, body, faces = [], [], [], []
    for g in range(model.ngeom):
        if model.geom_rgba[g, 3] == 0 or model.geom_group[g] == 2:
            continue
        b = int(model.geom_bodyid[g])
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
        if on_cube(b):
            (faces if "_face_" in name else body).append(g)
        elif b == 0:
            background.append(g)
        else:
            hand.append(g)
    return tuple(np.asarray(x, int) for x in (hand, background, body, faces))


def markdown() -> str:
    lines = [
        "# Visual randomization (pose dataset)",
        "",
        "Generated by `python -m dex_perception.visual_randomization --markdown` from",
        "`dex_perception.visual_randomization.VISUAL_RANDOMIZATIONS`; do not edit by hand.",
        "Each row draws uniform(low, high) per sample, `per` values at a time. `full`: Dactyl's",
        "list of visual randomizations (App. C.2; the ranges are ours). `basic`: lighting and a",
        "small colour jitter, what the shipped Shadow pose model was trained on. Image rows act",
        "on each rendered image.",
        "",
        "| name | group | full range | basic range | unit | per | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in VISUAL_RANDOMIZATIONS:
        basic = f"{p.basic[0]:g} .. {p.basic[1]:g}" if p.basic else "off"
        lines.append(f"| `{p.name}` | {p.group} | {p.low:g} .. {p.high:g} | {basic} | {p.unit} "
                     f"| {p.per} | {p.doc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="print docs/visual_randomization.md")
    ap.parse_args(argv)
    print(markdown(), end="")


if __name__ == "__main__":
    main()
