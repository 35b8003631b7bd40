"""States a controller actually visited, replayed from its recorded episodes (pose datasets).

A recorded episode is an ``.npz`` file with the episode's ``seed`` and the action bins executed at
each step (``bins`` [T, n_actuators]), e.g. a ``dex-policy-dagger`` shard whose every step the
teacher executed (``by_teacher`` all true; mixed-policy shards are skipped, their student actions
are not stored). ``DexCubeEnv`` is deterministic, so ``reset(seed)`` and the same bins reproduce
the episode; where the file also holds the observations (``obs``), each replayed step is checked
against them and the replay stops at the first difference (another MuJoCo version, another task
config), keeping only the verified states. States whose cube left the palm (a drop) are left out:
the cameras are aimed at the palm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OBS_TOLERANCE = 1e-4


def episode_files(dirs: list[str] | tuple[str, ...]) -> list[Path]:
    """The recorded episodes under ``dirs`` (each a directory of ``.npz`` files, or one that
    holds them in ``shards/``), sorted; a clear error when there are none."""
    files: list[Path] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise FileNotFoundError(f"recorded episodes: {root} is not a directory")
        found = sorted(root.glob("*.npz")) or sorted((root / "shards").glob("*.npz"))
        files += [f for f in found if not f.name.endswith(".feat.npz")]
    if not files:
        raise FileNotFoundError(f"no recorded episodes (*.npz) in {list(dirs)}")
    return files


class RecordedStates:
    """Draws qpos vectors of visited states; each episode is replayed once per process (a few
    hundred env steps, well under a second) and its states kept."""

    def __init__(self, hand: str, dirs: list[str] | tuple[str, ...], max_drop: float,
                 max_offset: float) -> None:
        from dex_sim.env import DexCubeEnv, TaskConfig  # the env that recorded them

        self.files = episode_files(dirs)
        self.env = DexCubeEnv(hand, task=TaskConfig(randomize=False))
        self.rest = np.asarray(self.env.hand_spec.cube.rest_pos, float)
        self.max_drop, self.max_offset = float(max_drop), float(max_offset)
        self._states: dict[int, np.ndarray] = {}
        self.stats = {"episodes": 0, "skipped": 0, "diverged": 0, "states": 0}

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The qpos of one visited state of a random episode (episodes without usable states
        are skipped)."""
        for _ in range(len(self.files) * 4):
            k = int(rng.integers(len(self.files)))
            states = self._replayed(k)
            if len(states):
                return states[int(rng.integers(len(states)))]
        raise ValueError(f"none of the {len(self.files)} recorded episodes replays to a state with "
                         f"the cube on the palm (see stats: {self.stats})")

    def _replayed(self, k: int) -> np.ndarray:
        if k not in self._states:
            self._states[k] = self._replay(self.files[k])
        return self._states[k]

    def _replay(self, path: Path) -> np.ndarray:
        with np.load(path) as z:
            rec = {name: z[name] for name in z.files}
        if "seed" not in rec or "bins" not in rec or not rec.get("by_teacher", np.ones(1)).all():
            self.stats["skipped"] += 1
            return np.zeros((0, self.env.sim.model.nq))
        env, sim = self.env, self.env.sim
        obs, _ = env.reset(seed=int(rec["seed"]))
        states = []
        c = sim.idx.cube_qpos
        for t, bins in enumerate(rec["bins"]):
            if "obs" in rec and np.abs(obs - rec["obs"][t]).max() > OBS_TOLERANCE:
                self.stats["diverged"] += 1
                break
            pos = sim.data.qpos[c : c + 3]
            if (pos[2] >= self.rest[2] - self.max_drop
                    and np.linalg.norm(pos[:2] - self.rest[:2]) <= self.max_offset):
                states.append(sim.data.qpos.copy())
            obs, _, term, trunc, _ = env.step(bins.astype(np.int64))
            if term or trunc:
                break
        self.stats["episodes"] += 1
        self.stats["states"] += len(states)
        return np.array(states).reshape(len(states), sim.model.nq)
