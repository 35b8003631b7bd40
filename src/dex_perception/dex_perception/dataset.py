"""Render a pose dataset with the same physics core the sim node uses (``HandCubeSim``).

Each sample: reset with a per-sample seed, then either (a) random actuator targets near the
default pose and a few control periods so the cube moves / settles on the palm naturally, or (b)
the cube placed at a uniformly random orientation somewhere above the palm and 0-3 control
periods of falling / tumbling. Cheap visual randomisation per sample: light intensities and
directions, headlight, hand / background colours. The cube's face colours are never touched (its
faces are what make every orientation distinguishable).

Output (``--out DIR``): ``shard_NNNNN.npz`` with ``images`` uint8 [N, C, H, W, 3] (cameras in
registry order, rgb8), ``position`` float32 [N, 3] (world m), ``orientation`` float32 [N, 4]
(w, x, y, z), ``seed`` int64 [N]; plus ``meta.json`` (hand, cameras, image size, facts hash, the
command line, samples, renders/s).

    python -m dex_perception.dataset --out data/pose --samples 3000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dex_description.registry import get_hand  # noqa: E402


@dataclass
class RenderConfig:
    target_noise: float = 0.15  # rad, σ of actuator targets around the default pose
    max_settle_steps: int = 6  # control periods stepped in mode (a)
    p_random_pose: float = 0.4  # probability of mode (b)
    place_xy: float = 0.015  # m, ± around the rest position in mode (b)
    place_z: tuple[float, float] = (0.0, 0.03)  # m above the rest position in mode (b)
    max_fall_steps: int = 3
    light_scale: tuple[float, float] = (0.6, 1.3)
    light_dir_noise: float = 0.25
    colour_jitter: float = 0.08  # ± on hand / background rgb (not the cube)
    max_drop: float = 0.04  # m below rest z: a sample whose cube fell further is re-placed
    max_offset: float = 0.06  # m horizontal from the rest position: further is re-placed


class VisualRandomizer:
    """Per-sample light and (non-cube) colour jitter, restored to nominal before each draw."""

    def __init__(self, model: mujoco.MjModel, cube_body: str, cfg: RenderConfig) -> None:
        self.m = model
        self.cfg = cfg
        self.light_diffuse = model.light_diffuse.copy()
        self.light_dir = model.light_dir.copy()
        self.head_diffuse = model.vis.headlight.diffuse.copy()
        self.head_ambient = model.vis.headlight.ambient.copy()
        self.geom_rgba = model.geom_rgba.copy()
        cube_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, cube_body)
        # Geoms of the cube (and anything attached to it) keep their colours.
        on_cube = np.zeros(model.ngeom, bool)
        for g in range(model.ngeom):
            b = int(model.geom_bodyid[g])
            while b > 0:
                if b == cube_id:
                    on_cube[g] = True
                    break
                b = int(model.body_parentid[b])
        # Only untextured geoms are jittered (a textured geom's rgba tints the texture).
        self.jitter_geoms = np.where(~on_cube & (model.geom_matid < 0))[0]

    def apply(self, rng: np.random.Generator) -> None:
        m, c = self.m, self.cfg
        if m.nlight:
            s = rng.uniform(*c.light_scale, size=(m.nlight, 1))
            m.light_diffuse[:] = np.clip(self.light_diffuse * s, 0.0, 1.0)
            d = self.light_dir + rng.normal(0.0, c.light_dir_noise, size=self.light_dir.shape)
            m.light_dir[:] = d / np.linalg.norm(d, axis=1, keepdims=True)
        m.vis.headlight.diffuse[:] = np.clip(self.head_diffuse * rng.uniform(*c.light_scale), 0, 1)
        m.vis.headlight.ambient[:] = np.clip(self.head_ambient * rng.uniform(0.7, 1.3), 0, 1)
        g = self.jitter_geoms
        if len(g):
            jit = rng.uniform(-c.colour_jitter, c.colour_jitter, size=(len(g), 3))
            m.geom_rgba[g, :3] = np.clip(self.geom_rgba[g, :3] + jit, 0.0, 1.0)


def random_quat(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random unit quaternion (w, x, y, z), w >= 0."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


class PoseSampler:
    """Draws (images, position, orientation) samples from a HandCubeSim."""

    def __init__(self, hand: str = "shadow", cfg: RenderConfig | None = None) -> None:
        from dex_sim.physics import HandCubeSim  # the same physics core as the sim node

        self.cfg = cfg or RenderConfig()
        self.sim = HandCubeSim(hand, render=True)
        self.spec = self.sim.spec
        self.cameras = self.spec.camera_names
        self.lo, self.hi = self.spec.actuator_limits()
        self.vis = VisualRandomizer(self.sim.model, self.spec.cube.name, self.cfg)
        self.renders = 0
        self.render_time = 0.0

    def _place_cube(self, rng: np.random.Generator) -> None:
        c, sim = self.cfg, self.sim
        pos = np.asarray(self.spec.cube.rest_pos, float).copy()
        pos[:2] += rng.uniform(-c.place_xy, c.place_xy, size=2)
        pos[2] += rng.uniform(*c.place_z)
        a = sim.idx.cube_qpos
        sim.data.qpos[a : a + 3] = pos
        sim.data.qpos[a + 3 : a + 7] = random_quat(rng)
        sim.data.qvel[sim.idx.cube_qvel : sim.idx.cube_qvel + 6] = 0.0
        mujoco.mj_forward(sim.model, sim.data)

    def sample(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One sample: (images uint8 [C, H, W, 3], position (3,), quaternion (4,))."""
        c, sim = self.cfg, self.sim
        rng = np.random.default_rng(seed)
        sim.reset(seed)
        base = sim.actuator_targets()
        sim.set_targets(np.clip(base + rng.normal(0.0, c.target_noise, base.shape), self.lo, self.hi))
        if rng.random() < c.p_random_pose:
            self._place_cube(rng)
            steps = int(rng.integers(0, c.max_fall_steps + 1))
        else:
            steps = int(rng.integers(1, c.max_settle_steps + 1))
        for _ in range(steps):
            sim.step_control()
        pos, quat = sim.cube_pose()
        rest = np.asarray(self.spec.cube.rest_pos)
        if pos[2] < rest[2] - c.max_drop or np.linalg.norm(pos[:2] - rest[:2]) > c.max_offset:
            # fell / was pushed off the palm: re-place above it (perception sees the cube in hand)
            self._place_cube(rng)
            pos, quat = sim.cube_pose()
        self.vis.apply(rng)
        t0 = time.perf_counter()
        images = np.stack([sim.render(name) for name in self.cameras])
        self.render_time += time.perf_counter() - t0
        self.renders += len(self.cameras)
        return images, pos.astype(np.float32), quat.astype(np.float32)

    @property
    def renders_per_s(self) -> float:
        return self.renders / self.render_time if self.render_time > 0 else float("nan")

    def close(self) -> None:
        self.sim.close()


def generate(
    out: str | Path,
    samples: int,
    seed: int = 0,
    hand: str = "shadow",
    shard_size: int = 500,
    cfg: RenderConfig | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Render ``samples`` samples into ``out`` (shards + meta.json); returns the meta dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sampler = PoseSampler(hand, cfg)
    spec = sampler.spec
    cam0 = spec.cameras[0]
    t_start = time.perf_counter()
    shard: dict[str, list] = {"images": [], "position": [], "orientation": [], "seed": []}
    n_shards = 0

    def flush() -> None:
        nonlocal n_shards
        if not shard["seed"]:
            return
        np.savez(
            out / f"shard_{n_shards:05d}.npz",
            images=np.stack(shard["images"]),
            position=np.stack(shard["position"]),
            orientation=np.stack(shard["orientation"]),
            seed=np.asarray(shard["seed"], np.int64),
        )
        n_shards += 1
        for v in shard.values():
            v.clear()

    try:
        for i in tqdm(range(samples), desc="render", unit="sample", disable=not progress):
            s = int(seed) * 1_000_003 + i
            img, pos, quat = sampler.sample(s)
            shard["images"].append(img)
            shard["position"].append(pos)
            shard["orientation"].append(quat)
            shard["seed"].append(s)
            if len(shard["seed"]) >= shard_size:
                flush()
        flush()
    finally:
        sampler.close()
    elapsed = time.perf_counter() - t_start
    meta = {
        "hand": spec.name,
        "hand_facts_hash": spec.facts_hash(),
        "cameras": spec.camera_names,
        "image": {"height": cam0.height, "width": cam0.width, "encoding": "rgb8"},
        "samples": int(samples),
        "seed": int(seed),
        "shards": n_shards,
        "render_config": {k: v for k, v in vars(sampler.cfg).items()},
        "command": command or "",
        "elapsed_s": round(elapsed, 2),
        "renders_per_s": round(sampler.renders_per_s, 2),
        "samples_per_s": round(samples / elapsed, 2) if elapsed > 0 else None,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def load(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All shards of a dataset: (images, position, orientation, meta)."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} not found; make a dataset with dex-perception-dataset")
    meta = json.loads(meta_file.read_text())
    shards = sorted(path.glob("shard_*.npz"))
    if not shards:
        raise FileNotFoundError(f"no shard_*.npz in {path}")
    imgs, pos, quat = [], [], []
    for f in shards:
        with np.load(f) as z:
            imgs.append(z["images"])
            pos.append(z["position"])
            quat.append(z["orientation"])
    return np.concatenate(imgs), np.concatenate(pos), np.concatenate(quat), meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hand", default="shadow")
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args(argv)
    get_hand(args.hand)  # clear error for an unknown hand before any rendering
    cmd = shlex.join(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    meta = generate(args.out, args.samples, args.seed, args.hand, args.shard_size, command=cmd)
    print(
        f"wrote {meta['samples']} samples ({meta['shards']} shards) to {args.out} in "
        f"{meta['elapsed_s']} s: {meta['renders_per_s']} renders/s, "
        f"{meta['samples_per_s']} samples/s"
    )


if __name__ == "__main__":
    main()
