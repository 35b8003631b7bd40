"""Render a pose dataset with the same physics core the sim node uses (``HandCubeSim``).

Where the cube poses come from (one source per sample, ``RenderConfig``):

- ``rollout``: the hand moves under random-walk actuator targets (the states a hand visits
  during trials; teacher/student rollouts can replace the random walk), a sample every 1-3
  control periods, a fresh episode when it ends or the cube leaves the palm;
- ``place``: the cube at a uniformly random orientation a little above the palm and 0-3 control
  periods of falling / tumbling (every orientation, drop-and-settle poses);
- ``settle``: a fresh reset, actuator targets near the default pose, 1-6 control periods;
- ``teacher`` (``--teacher-states DIR``, probability ``p_teacher``): a state a controller visited
  while working the cube, replayed from its recorded episodes (``dex-policy-dagger`` shards of
  the MPC teacher: ``dex_perception.recorded_states``). The random-walk poses barely occlude;
  these are the poses vision meets in trials.

A cube that fell more than ``max_drop`` or moved ``max_offset`` off the palm is re-placed above
it (out of the cameras' view there is nothing to estimate). Visual randomization per sample:
one set (``full``: Dactyl's list, or ``basic``) of ``dex_perception.visual_randomization``'s
table (docs/visual_randomization.md). The cube's faces keep distinguishable colours.

Output (``--out DIR``): ``shard_NNNNN.npz`` with ``images`` uint8 [N, C, H, W, 3] (cameras in
registry order, rgb8), ``position`` float32 [N, 3] (world m), ``orientation`` float32 [N, 4]
(w, x, y, z), ``sample`` int64 [N] (index in the dataset), ``source`` uint8 [N] (index into
``SOURCES``), with ``--visibility`` also ``visible`` float32 [N, C] (the fraction of the cube's
silhouette each camera sees, ``HandCubeSim.cube_visibility``: what the fingers hide);
``shard_NNNNN.png``, a grid of its first samples (a row per sample, a column per
camera) to see what the model learns from; ``meta.json`` (hand, cameras, image size, facts hash,
config, the command line, renders/s). Shard k holds samples [k*S, (k+1)*S), drawn from the seed
stream (seed, k): shards render in parallel (``--workers``, Ray: local cores or a cluster by
``--ray-address``; a cluster needs ``--out`` on a shared filesystem) and an interrupted run
resumes where it stopped (existing shards are kept; they are written atomically).

    python -m dex_perception.dataset --out data/pose --samples 3000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dex_common.rotations import random_quat  # noqa: E402
from dex_description.registry import get_hand  # noqa: E402
from dex_perception.visual_randomization import SETS, VisualRandomizer  # noqa: E402

SOURCES = ("rollout", "place", "settle", "teacher")
GRID_SAMPLES = 6  # rows of each shard's PNG grid


@dataclass
class RenderConfig:
    visual: str = "full"  # visual randomization set: full | basic | none
    p_place: float = 0.35  # probability of a "place" sample
    p_settle: float = 0.15  # of a "settle" sample; the rest are "rollout" samples
    target_noise: float = 0.15  # rad, σ of actuator targets around the default pose ("settle")
    max_settle_steps: int = 6  # control periods stepped in "settle"
    walk_step: float = 0.08  # rad, σ of the targets' random-walk step per control period
    walk_pull: float = 0.1  # fraction of the way back to the default pose per control period
    max_episode_periods: int = 60  # a rollout episode restarts after this many control periods
    place_xy: float = 0.015  # m, ± around the rest position in "place"
    place_z: tuple[float, float] = (0.0, 0.03)  # m above the rest position in "place"
    max_fall_steps: int = 3
    max_drop: float = 0.04  # m below rest z: a sample whose cube fell further is re-placed
    max_offset: float = 0.06  # m horizontal from the rest position: further is re-placed
    # "teacher" samples: states replayed from recorded episodes in these directories, with this
    # probability (the other sources share the rest in their proportions)
    teacher_states: tuple[str, ...] = ()
    p_teacher: float = 0.0

    def validate(self) -> None:
        if self.visual not in SETS:
            raise ValueError(f"visual must be one of {SETS}, got {self.visual!r}")
        if not (0 <= self.p_place and 0 <= self.p_settle and self.p_place + self.p_settle <= 1):
            raise ValueError("p_place and p_settle must be >= 0 with a sum <= 1")
        if not 0 <= self.p_teacher <= 1:
            raise ValueError(f"p_teacher must be in [0, 1]; got {self.p_teacher}")
        if self.p_teacher > 0 and not self.teacher_states:
            raise ValueError("p_teacher > 0 needs teacher_states (directories of recorded "
                             "episodes)")


class PoseSampler:
    """Draws (images, position, orientation) samples from a HandCubeSim."""

    def __init__(self, hand: str = "shadow", cfg: RenderConfig | None = None,
                 resolution: tuple[int, int] | None = None) -> None:
        from dex_sim.physics import HandCubeSim  # the same physics core as the sim node

        self.cfg = cfg or RenderConfig()
        self.cfg.validate()
        self.sim = HandCubeSim(hand, render=True, resolution=resolution)
        self.spec = self.sim.spec
        self.cameras = self.spec.camera_names
        self.lo, self.hi = self.spec.actuator_limits()
        self.vis = VisualRandomizer(self.sim.model, self.spec.cube.name, self.cameras,
                                    self.cfg.visual)
        self.renders = 0
        self.render_time = 0.0
        self._targets: np.ndarray | None = None  # the rollout's targets; None: start an episode
        self._home = np.zeros_like(self.lo)
        self.recorded = None
        if self.cfg.p_teacher > 0:
            from dex_perception.recorded_states import RecordedStates

            self.recorded = RecordedStates(hand, self.cfg.teacher_states, self.cfg.max_drop,
                                           self.cfg.max_offset)
        self._periods = 0

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

    def _off_palm(self) -> bool:
        pos, _ = self.sim.cube_pose()
        rest = np.asarray(self.spec.cube.rest_pos)
        return bool(pos[2] < rest[2] - self.cfg.max_drop
                    or np.linalg.norm(pos[:2] - rest[:2]) > self.cfg.max_offset)

    def _independent(self, rng: np.random.Generator, seed: int, place: bool) -> None:
        """A fresh episode, then a "place" or a "settle" pose."""
        c, sim = self.cfg, self.sim
        sim.reset(seed)
        base = sim.actuator_targets()
        sim.set_targets(np.clip(base + rng.normal(0.0, c.target_noise, base.shape), self.lo, self.hi))
        if place:
            self._place_cube(rng)
        steps = (int(rng.integers(0, c.max_fall_steps + 1)) if place
                 else int(rng.integers(1, c.max_settle_steps + 1)))
        for _ in range(steps):
            sim.step_control()
        self.end_rollout()  # the sim moved on: a rollout starts afresh after this

    def _rollout(self, rng: np.random.Generator) -> None:
        """1-3 more control periods of the current random-walk episode (or a new one)."""
        c, sim = self.cfg, self.sim
        if self._targets is None or self._periods >= c.max_episode_periods:
            sim.reset(int(rng.integers(2**31)))
            self._home = self._targets = sim.actuator_targets()  # the default pose's targets
            self._periods = 0
        home = self._home
        for _ in range(int(rng.integers(1, 4))):
            t = self._targets
            t = t + c.walk_pull * (home - t) + rng.normal(0.0, c.walk_step, t.shape)
            self._targets = np.clip(t, self.lo, self.hi)
            sim.set_targets(self._targets)
            sim.step_control()
            self._periods += 1

    def visibility(self) -> np.ndarray:
        """Per camera, the fraction of the cube's silhouette in view now (float32 [C])."""
        return np.array([self.sim.cube_visibility(c) for c in self.cameras], np.float32)

    def render(self, rng: np.random.Generator) -> np.ndarray:
        """The current state through the cameras, visually randomized: uint8 [C, H, W, 3]."""
        self.vis.apply(rng)
        # Cameras and lights are placed in mjData by mj_camlight (part of mj_forward): without
        # it a render would use the previous draw's camera. It also makes the rendered geoms
        # the labelled state (after mj_step, mjData's kinematics are a substep old).
        mujoco.mj_forward(self.sim.model, self.sim.data)
        t0 = time.perf_counter()
        images = np.stack([self.sim.render(name) for name in self.cameras])
        self.render_time += time.perf_counter() - t0
        self.renders += len(self.cameras)
        return self.vis.postprocess(images)

    def _finish(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._off_palm():
            # fell / was pushed off the palm: re-place above it (perception sees the cube in hand)
            self._place_cube(rng)
            self.end_rollout()
        pos, quat = self.sim.cube_pose()
        return self.render(rng), pos.astype(np.float32), quat.astype(np.float32)

    def sample(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One independent "place" or "settle" sample of its own seed: (images uint8
        [C, H, W, 3], position (3,), quaternion (4,))."""
        rng = np.random.default_rng(seed)
        c = self.cfg
        self._independent(rng, seed, place=bool(rng.random() * (c.p_place + c.p_settle) < c.p_place))
        return self._finish(rng)

    def next(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The next sample of a stream (rollouts continue across calls): images, position,
        quaternion and its source (index into ``SOURCES``)."""
        u, c = rng.random(), self.cfg
        if u < c.p_teacher:
            self._visited(rng)
            return (*self._finish(rng), SOURCES.index("teacher"))
        u = (u - c.p_teacher) / (1.0 - c.p_teacher)  # the same stream as before when p_teacher 0
        if u < c.p_place + c.p_settle:
            place = u < c.p_place
            self._independent(rng, int(rng.integers(2**31)), place)
            source = SOURCES.index("place" if place else "settle")
        else:
            self._rollout(rng)
            source = SOURCES.index("rollout")
        return (*self._finish(rng), source)

    def _visited(self, rng: np.random.Generator) -> None:
        """A state the recorded controller visited (its hand and cube; at rest: a render does
        not see velocities)."""
        assert self.recorded is not None
        sim = self.sim
        sim.data.qpos[:] = self.recorded.draw(rng)
        sim.data.qvel[:] = 0.0
        mujoco.mj_forward(sim.model, sim.data)
        self.end_rollout()  # the random walk starts afresh after this

    def end_rollout(self) -> None:
        """The next rollout sample starts a new episode."""
        self._targets = None

    @property
    def renders_per_s(self) -> float:
        return self.renders / self.render_time if self.render_time > 0 else float("nan")

    def close(self) -> None:
        self.sim.close()


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def render_shard(sampler: PoseSampler, out: Path, index: int, seed: int, n: int,
                 first_sample: int, visibility: bool = False) -> dict[str, Any]:
    """Render shard ``index`` (``n`` samples of the seed stream (seed, index)) into ``out``,
    atomically, with its PNG grid; returns its statistics. ``visibility`` adds each camera's
    visible cube fraction (it draws no random numbers: the images are the same either way)."""
    rng = np.random.default_rng([int(seed), int(index)])
    renders, render_time = sampler.renders, sampler.render_time
    sampler.end_rollout()  # every shard starts its own rollouts: shards are independent
    images, pos, quat, source, visible = [], [], [], [], []
    for _ in range(n):
        img, p, q, src = sampler.next(rng)
        images.append(img)
        pos.append(p)
        quat.append(q)
        source.append(src)
        if visibility:
            visible.append(sampler.visibility())
    images_arr = np.stack(images)
    tmp = out / f".{shard_name(index)}.tmp.npz"
    extra = {"visible": np.stack(visible)} if visibility else {}
    np.savez(tmp, images=images_arr, position=np.stack(pos), orientation=np.stack(quat),
             sample=np.arange(first_sample, first_sample + n, dtype=np.int64),
             source=np.asarray(source, np.uint8), **extra)
    os.replace(tmp, out / f"{shard_name(index)}.npz")
    grid = np.concatenate([np.concatenate(list(im), axis=1) for im in images_arr[:GRID_SAMPLES]])
    cv2.imwrite(str(out / f"{shard_name(index)}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return {"index": index, "samples": n, "renders": sampler.renders - renders,
            "render_s": sampler.render_time - render_time,
            "sources": np.bincount(source, minlength=len(SOURCES)).tolist()}


_worker_sampler: PoseSampler | None = None


def _worker_init(hand: str, cfg: dict[str, Any], resolution: tuple[int, int] | None) -> None:
    global _worker_sampler
    _worker_sampler = PoseSampler(hand, RenderConfig(**cfg), resolution)


def _worker_shard(job: tuple[str, int, int, int, int, bool]) -> dict[str, Any]:
    out, index, seed, n, first, visibility = job
    assert _worker_sampler is not None
    return render_shard(_worker_sampler, Path(out), index, seed, n, first, visibility)


def _dataset_identity(spec: Any, samples: int, seed: int, shard_size: int,
                      cfg: RenderConfig, visibility: bool = False) -> dict[str, Any]:
    cam0 = spec.cameras[0]
    # "visibility" is part of the identity only when on, so datasets made before it resume
    return ({"visibility": True} if visibility else {}) | {
        "hand": spec.name,
        "hand_facts_hash": spec.facts_hash(),
        "cameras": spec.camera_names,
        "image": {"height": cam0.height, "width": cam0.width, "encoding": "rgb8"},
        "samples": int(samples),
        "seed": int(seed),
        "shard_size": int(shard_size),
        "render_config": {k: v for k, v in json.loads(json.dumps(asdict(cfg))).items()
                          # left out when unused: datasets made before them still resume
                          if not (k in ("teacher_states", "p_teacher") and not cfg.p_teacher)},
        "sources": list(SOURCES),
    }


def generate(
    out: str | Path,
    samples: int,
    seed: int = 0,
    hand: str = "shadow",
    shard_size: int = 500,
    cfg: RenderConfig | None = None,
    progress: bool = True,
    command: str | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    visibility: bool = False,
    resolution: tuple[int, int] | None = None,
) -> dict:
    """Render ``samples`` samples into ``out`` (shards + PNG grids + meta.json), keeping the
    shards an earlier run of the same dataset already wrote; returns the meta dict.
    ``visibility``: also store each camera's visible cube fraction (for evaluation sets);
    ``resolution``: (width, height) of every camera instead of the registry's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cfg or RenderConfig()
    cfg.validate()
    if samples < 1 or shard_size < 1:
        raise ValueError("samples and shard_size must be >= 1")
    spec = get_hand(hand)
    if resolution is not None:
        spec = spec.at_resolution(*resolution)
    identity = _dataset_identity(spec, samples, seed, shard_size, cfg, visibility)
    meta_file = out / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    keys = identity.keys() | (meta.keys() & {"visibility"})
    if meta and any(meta.get(k) != identity.get(k) for k in keys):
        diff = sorted(k for k in keys if meta.get(k) != identity.get(k))
        raise ValueError(f"{out} holds another dataset (differs in {diff}): choose another --out")
    meta = {**identity, "complete": False, "command": command or "",
            "elapsed_s": meta.get("elapsed_s", 0.0), "render_s": meta.get("render_s", 0.0),
            "renders": meta.get("renders", 0),
            "source_counts": meta.get("source_counts", [0] * len(SOURCES))}
    meta_file.write_text(json.dumps(meta, indent=2))
    n_shards = -(-samples // shard_size)
    jobs = [(str(out), k, int(seed), min(shard_size, samples - k * shard_size), k * shard_size,
             visibility)
            for k in range(n_shards) if not (out / f"{shard_name(k)}.npz").exists()]
    done = samples - sum(j[3] for j in jobs)
    t_start = time.perf_counter()
    bar = tqdm(total=samples, initial=done, desc="render", unit="sample", disable=not progress)

    def account(stats: dict[str, Any]) -> None:
        meta["renders"] += stats["renders"]
        meta["render_s"] += stats["render_s"]
        meta["source_counts"] = [a + b for a, b in zip(meta["source_counts"], stats["sources"],
                                                       strict=True)]
        bar.update(stats["samples"])
        bar.set_postfix(shard=stats["index"], renders_s=f"{stats['renders'] / stats['render_s']:.0f}")

    try:
        if workers <= 1 and not ray_address:
            sampler = PoseSampler(hand, cfg, resolution)
            try:
                for job in jobs:
                    account(render_shard(sampler, out, *job[1:]))
            finally:
                sampler.close()
        elif jobs:
            from dex_common.workers import WorkerPool

            with WorkerPool(min(workers, len(jobs)), _worker_init, (hand, asdict(cfg), resolution),
                            ray_address) as pool:
                for stats in pool.imap_unordered(_worker_shard, jobs):
                    account(stats)
    finally:
        bar.close()
        meta["elapsed_s"] = round(meta["elapsed_s"] + time.perf_counter() - t_start, 2)
        meta["complete"] = all((out / f"{shard_name(k)}.npz").exists() for k in range(n_shards))
        meta["shards"] = n_shards
        meta["renders_per_s"] = (round(meta["renders"] / meta["render_s"], 2)
                                 if meta["render_s"] > 0 else None)
        # Over every run that rendered this dataset (a resumed run that found it all done
        # keeps the rate of the runs that did the work).
        missing = sum(min(shard_size, samples - k * shard_size) for k in range(n_shards)
                      if not (out / f"{shard_name(k)}.npz").exists())
        meta["samples_per_s"] = (round((samples - missing) / meta["elapsed_s"], 2)
                                 if meta["elapsed_s"] > 0 else None)
        meta_file.write_text(json.dumps(meta, indent=2))
    return meta


def load(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All shards of a dataset: (images, position, orientation, meta)."""
    images, pos, quat, metas = load_many([path])
    return images, pos, quat, metas[0]


def _complete_shards(path: Path) -> tuple[list[Path], dict]:
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} not found; make a dataset with dex-perception-dataset")
    meta = json.loads(meta_file.read_text())
    if meta.get("complete") is False:
        raise ValueError(f"{path} is incomplete (its rendering was interrupted): run the same "
                         f"dex-perception-dataset command again to finish it")
    shards = sorted(path.glob("shard_*.npz"))
    if not shards:
        raise FileNotFoundError(f"no shard_*.npz in {path}")
    return shards, meta


def read_meta(path: str | Path) -> dict:
    """A complete dataset's ``meta.json`` (clear errors for a missing or unfinished one)."""
    return _complete_shards(Path(path))[1]


def load_many(paths: list[str | Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Several datasets as one: (images, position, orientation, each dataset's meta), in the
    order given. The images go straight into one preallocated array, so loading takes the
    dataset's size in memory once, not twice (40k Shadow samples are 5.9 GB)."""
    found = [_complete_shards(Path(p)) for p in paths]
    metas = [m for _, m in found]
    first = metas[0]
    for p, m in zip(paths[1:], metas[1:], strict=True):
        diff = [k for k in ("hand", "hand_facts_hash", "cameras", "image") if m.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"{p} was rendered for another hand/camera set than {paths[0]} "
                             f"(differs in {diff})")
    shards = [f for fs, _ in found for f in fs]
    sizes = []
    for f in shards:  # an npz member is read only when asked for: not the images here
        with np.load(f) as z:
            sizes.append(len(z["position"]))
    image = first["image"]
    images = np.empty((sum(sizes), len(first["cameras"]), image["height"], image["width"], 3),
                      np.uint8)
    pos, quat, k = [], [], 0
    for f, n in zip(shards, sizes, strict=True):
        with np.load(f) as z:
            images[k : k + n] = z["images"]
            pos.append(z["position"])
            quat.append(z["orientation"])
        k += n
    return images, np.concatenate(pos), np.concatenate(quat), metas


def load_sources(path: str | Path) -> np.ndarray:
    """Each sample's pose source (index into ``SOURCES``), in ``load``'s order."""
    return _load_field(path, "source")


def load_visibility(path: str | Path) -> np.ndarray | None:
    """Each sample's visible cube fraction per camera [N, C], in ``load``'s order; None for a
    dataset rendered without ``--visibility``."""
    return _load_field(path, "visible")


def _load_field(path: str | Path, name: str) -> np.ndarray | None:
    out = []
    for f in sorted(Path(path).glob("shard_*.npz")):
        with np.load(f) as z:
            if name not in z.files:
                return None
            out.append(z[name])
    return np.concatenate(out)


def parse_resolution(text: str) -> tuple[int, int]:
    """``"200"`` → (200, 200), ``"320x240"`` → (320, 240) (width, height); argparse type."""
    parts = text.lower().split("x")
    try:
        w, h = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or min(w, h) < 16 or max(w, h) > 4096:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"resolution must be N or WxH with 16..4096 pixels a side; got {text!r}") from None
    return w, h


def dataset_spec(meta: dict, spec: Any) -> Any:
    """``spec`` at the resolution the dataset was rendered at (the registry's hand when they
    agree): what a model trained or judged on it is for."""
    img = meta.get("image") or {}
    cam = spec.cameras[0]
    if (img.get("width"), img.get("height")) in ((cam.width, cam.height), (None, None)):
        return spec
    return spec.at_resolution(int(img["width"]), int(img["height"]))


def check_dataset(meta: dict, spec: Any) -> None:
    """Refuse a dataset rendered for other cameras / resolution / hand facts."""
    cam = spec.cameras[0]
    want = {
        "hand": spec.name,
        "hand_facts_hash": spec.facts_hash(),
        "cameras": spec.camera_names,
        "image": {"height": cam.height, "width": cam.width, "encoding": "rgb8"},
    }
    bad = [f"{k}: dataset {meta.get(k)!r} != registry {v!r}" for k, v in want.items()
           if meta.get(k) != v]
    if bad:
        raise ValueError("dataset does not match the hand registry: " + "; ".join(bad))


def main(argv: list[str] | None = None) -> None:
    from dex_common.workers import ADDRESS_HELP

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory (an interrupted run resumes)")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hand", default="shadow")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--visual", default=RenderConfig.visual, choices=SETS,
                    help="visual randomization set (docs/visual_randomization.md)")
    ap.add_argument("--workers", type=int, default=1, help="parallel render workers (Ray)")
    ap.add_argument("--ray-address", default=None, help=ADDRESS_HELP)
    ap.add_argument("--teacher-states", nargs="+", default=(), metavar="DIR",
                    help="also render states a controller visited, replayed from its recorded "
                         "episodes (dex-policy-dagger run or shard directories of teacher-"
                         "executed episodes)")
    ap.add_argument("--p-teacher", type=float, default=None,
                    help="probability of such a sample (default: 1 with --teacher-states, "
                         "else 0)")
    ap.add_argument("--resolution", type=parse_resolution, default=None, metavar="WxH",
                    help="render every camera at W x H pixels (or N: N x N) instead of the "
                         "registry's (to train and judge a pose model at another resolution)")
    ap.add_argument("--visibility", action="store_true",
                    help="also store how much of the cube each camera sees (for test sets: "
                         "dex-perception-eval then reports errors by how much the hand hides)")
    args = ap.parse_args(argv)
    get_hand(args.hand)  # clear error for an unknown hand before any rendering
    cmd = shlex.join(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    p_teacher = args.p_teacher if args.p_teacher is not None else float(bool(args.teacher_states))
    try:
        cfg = RenderConfig(visual=args.visual, p_teacher=p_teacher,  # absolute: for workers
                           teacher_states=tuple(str(Path(d).resolve()) for d in args.teacher_states))
        cfg.validate()
        if cfg.p_teacher:
            from dex_perception.recorded_states import episode_files

            episode_files(cfg.teacher_states)  # a wrong path fails here, before any worker
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    meta = generate(args.out, args.samples, args.seed, args.hand, args.shard_size,
                    cfg=cfg, command=cmd, workers=args.workers,
                    ray_address=args.ray_address, visibility=args.visibility,
                    resolution=args.resolution)
    print(
        f"wrote {meta['samples']} samples ({meta['shards']} shards, sources "
        f"{dict(zip(SOURCES, meta['source_counts'], strict=True))}) to {args.out} in "
        f"{meta['elapsed_s']} s: {meta['renders_per_s']} renders/s, "
        f"{meta['samples_per_s']} samples/s"
    )


if __name__ == "__main__":
    main()
