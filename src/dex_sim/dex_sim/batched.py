"""Batched hand + cube physics on MuJoCo Warp (``mujoco-warp``): ``n_envs`` worlds stepped together.

The same task as :class:`dex_sim.physics.HandCubeSim` — the same generated MJCF (hand, tendons,
``implicitfast``, elliptic cones, position actuators), the same registry order for joints and
actuators, the same reset (the CPU sim places the cube for each seed and its state is copied into
that world, so ``reset(seed)`` means exactly the same thing on both), and the same control period
(registry ``substeps`` physics steps per ``step_control``). Reads copy back to numpy.

Device: ``device=None`` picks ``cuda:0`` when Warp sees a GPU, else Warp's ``cpu`` device (works,
slowly: kernels are JIT-compiled by Warp's bundled Clang on first use, ~1 min cold, cached in
``~/.cache/warp`` / ``warp.config.kernel_cache_dir``). On CUDA, the substeps of one control period
are captured once as a CUDA graph and replayed.

No MJCF option is overridden for Warp: ``mujoco_warp.put_model`` accepts the scene as generated
(checked with mujoco-warp 4.0.0). Differences from CPU MuJoCo are numerical only: float32 on the
device vs float64, and a fixed-size contact / constraint buffer per world (``nconmax``/``njmax``,
checked after every control period: an overflow raises instead of silently dropping contacts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from dex_sim.physics import HandCubeSim  # noqa: E402

# Per-world buffers. The cube resting in the hand has up to ~13 contacts (condim 4: 4 rows each;
# 53 constraint rows with the active joint limits, Shadow, 5 seeds x 20 control steps); these
# leave ample headroom and overflow is checked, never silent.
DEFAULT_NCONMAX = 64
DEFAULT_NJMAX = 256

# Data fields that carry state from one step to the next (copied from the CPU sim on reset).
_STATE_FIELDS = ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "mocap_pos", "mocap_quat")


def _import_warp():
    try:
        import mujoco_warp as mjw
        import warp as wp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "BatchedHandCube needs `pip install mujoco-warp` (pulls warp-lang); "
            f"import failed: {e}"
        ) from e
    return wp, mjw


def default_device() -> str:
    """``cuda:0`` when Warp sees a CUDA device, else ``cpu``."""
    wp, _ = _import_warp()
    return "cuda:0" if wp.is_cuda_available() else "cpu"


class BatchedHandCube:
    """``n_envs`` independent hand + cube worlds on one Warp device.

    State reads return numpy arrays with a leading world axis, in registry order:
    ``joint_positions()`` (n, 24), ``joint_velocities()`` (n, 24), ``cube_pose()`` ((n, 3),
    (n, 4) w,x,y,z unit), ``fingertip_positions()`` (n, 5, 3), ``actuator_targets()`` (n, 20).
    """

    def __init__(
        self,
        hand: str = "shadow",
        n_envs: int = 1,
        device: str | None = None,
        nconmax: int = DEFAULT_NCONMAX,
        njmax: int = DEFAULT_NJMAX,
        use_graph: bool = True,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        wp, mjw = _import_warp()
        self._wp, self._mjw = wp, mjw
        wp.init()
        self.device = wp.get_device(device or default_device())
        self.n_envs = int(n_envs)
        self.hand = hand
        # The CPU sim is the template: model, registry indices, default pose, seeded cube placement.
        self._cpu = HandCubeSim(hand, render=False)
        self.spec = self._cpu.spec
        self.model = self._cpu.model
        self.idx = self._cpu.idx
        self.substeps = self._cpu.substeps
        self.control_period = self._cpu.control_period
        self._timestep_ns = round(self.spec.timestep * 1e9)
        self._steps = 0
        self._lo, self._hi = self.spec.actuator_limits()
        self.nconmax, self.njmax = int(nconmax), int(njmax)
        with wp.ScopedDevice(self.device):
            self.m = mjw.put_model(self.model)
            self.d = mjw.put_data(
                self.model, self._cpu.data, nworld=self.n_envs, nconmax=self.nconmax,
                njmax=self.njmax,
            )
        self._use_graph = bool(use_graph) and self.device.is_cuda
        self._graph = None
        # Warm-up: one step JIT-compiles / loads every kernel (the cold cost is here, not in the
        # first step_control); on CUDA the control period is then captured once as a graph
        # (capture records, it does not run). reset() below restores every world's state.
        with wp.ScopedDevice(self.device):
            mjw.step(self.m, self.d)
            mjw.kinematics(self.m, self.d)
            if self._use_graph:
                with wp.ScopedCapture() as cap:
                    self._substeps()
                self._graph = cap.graph
        self._ctrl = np.tile(self._cpu.data.ctrl, (self.n_envs, 1))  # host mirror (n, nu) f64
        self.seeds = np.zeros(self.n_envs, dtype=np.int64)
        self.reset(np.arange(self.n_envs))
        self._steps = 0

    # ---- time ---------------------------------------------------------------------------
    @property
    def time_ns(self) -> int:
        """Monotonic sim time (ns) shared by all worlds; never rewinds on reset."""
        return self._steps * self._timestep_ns

    @property
    def time(self) -> float:
        return self.time_ns * 1e-9

    # ---- control --------------------------------------------------------------------------
    def reset(self, seeds: Sequence[int] | np.ndarray, env_ids: Sequence[int] | None = None) -> None:
        """Reset worlds ``env_ids`` (default: all) with one seed each, exactly as
        ``HandCubeSim.reset(seed)`` (default hand pose and targets, seeded cube placement)."""
        ids = np.arange(self.n_envs) if env_ids is None else np.asarray(env_ids, dtype=np.intp)
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if seeds.shape != ids.shape:
            raise ValueError(f"need one seed per world reset: {seeds.shape} seeds, {ids.shape} worlds")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_envs):
            raise IndexError(f"env_ids out of range [0, {self.n_envs})")
        host = {f: getattr(self.d, f).numpy() for f in _STATE_FIELDS}
        cd = self._cpu.data
        for i, seed in zip(ids, seeds, strict=True):
            self._cpu.reset(int(seed))
            for f in _STATE_FIELDS:
                if host[f].size:
                    host[f][i] = getattr(cd, f)
            self._ctrl[i] = cd.ctrl
        self.seeds[ids] = seeds
        for f in _STATE_FIELDS:
            if host[f].size:
                getattr(self.d, f).assign(host[f])
        t = self.d.time.numpy()
        t[ids] = 0.0
        self.d.time.assign(t)
        with self._wp.ScopedDevice(self.device):
            self._mjw.kinematics(self.m, self.d)  # site/body positions match the new qpos
        self._steps += self.substeps

    def set_targets(self, targets: np.ndarray) -> np.ndarray:
        """Absolute actuator targets (n_envs, 20), registry order. Clamped to the registry
        actuator limits; a row with a non-finite value holds that world's previous targets.
        Returns a bool (n_envs,) mask of the rows accepted."""
        t = np.asarray(targets, dtype=float)
        n_act = self.spec.n_actuators
        if t.shape == (n_act,):
            t = np.broadcast_to(t, (self.n_envs, n_act))
        if t.shape != (self.n_envs, n_act):
            raise ValueError(f"targets must be ({self.n_envs}, {n_act}), got {t.shape}")
        ok = np.isfinite(t).all(axis=1)
        rows = np.flatnonzero(ok)
        self._ctrl[np.ix_(rows, self.idx.actuator_ids)] = np.clip(t[rows], self._lo, self._hi)
        self.d.ctrl.assign(self._ctrl)
        return ok

    def actuator_targets(self) -> np.ndarray:
        return self._ctrl[:, self.idx.actuator_ids].copy()

    def _substeps(self) -> None:
        for _ in range(self.substeps):
            self._mjw.step(self.m, self.d)
        self._mjw.kinematics(self.m, self.d)  # as HandCubeSim: sites match qpos after the step

    def step_control(self) -> None:
        """Advance every world one control period (registry substeps of ``mujoco_warp.step``)."""
        wp = self._wp
        with wp.ScopedDevice(self.device):
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._substeps()
        self._steps += self.substeps

    def check_overflow(self) -> None:
        """Raise if any world ran out of contact / constraint slots (results would be wrong)."""
        nacon = int(self.d.nacon.numpy()[0])
        nefc = self.d.nefc.numpy()
        if nacon > self.d.naconmax:
            raise RuntimeError(f"contact buffer overflow: {nacon} > naconmax {self.d.naconmax}")
        if nefc.max() > self.njmax:
            raise RuntimeError(f"constraint overflow: nefc {nefc.max()} > njmax {self.njmax}")

    # ---- state (numpy copies, leading world axis) -------------------------------------------
    def _qpos(self) -> np.ndarray:
        return self.d.qpos.numpy().astype(np.float64)

    def joint_positions(self) -> np.ndarray:
        return self._qpos()[:, self.idx.qpos_adr]

    def joint_velocities(self) -> np.ndarray:
        return self.d.qvel.numpy().astype(np.float64)[:, self.idx.qvel_adr]

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions (n, 3) m world, unit quaternions (n, 4) w,x,y,z)."""
        q = self._qpos()
        a = self.idx.cube_qpos
        quat = q[:, a + 3 : a + 7]
        return q[:, a : a + 3].copy(), quat / np.linalg.norm(quat, axis=1, keepdims=True)

    def fingertip_positions(self) -> np.ndarray:
        return self.d.site_xpos.numpy().astype(np.float64)[:, self.idx.site_ids]

    def contact_counts(self) -> np.ndarray:
        """Active contacts per world (n,)."""
        n = int(self.d.nacon.numpy()[0])
        w = self.d.contact.worldid.numpy()[:n]
        return np.bincount(w, minlength=self.n_envs)


def cpu_reference(hand: str = "shadow") -> HandCubeSim:
    """The CPU MuJoCo sim the batched one is checked against (float64, ``mj_step``)."""
    return HandCubeSim(hand, render=False)


__all__ = ["BatchedHandCube", "cpu_reference", "default_device"]
