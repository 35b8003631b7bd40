"""MuJoCo hand + cube physics core (pure: no rclpy). The sim node and the training env both step
this class, so what is trained is what runs.

Speed matters here (the training env steps it millions of times): every MuJoCo id / address is
looked up once at construction, stepping is one ``mj_step(..., nstep=substeps)`` call, and state
reads are fancy-indexed numpy copies.

Time: MuJoCo's ``data.time`` restarts at 0 on every reset, but the sim is the ROS clock source and
ROS time must never go backwards. So the sim keeps its own integer count of physics timesteps
since construction (``time_ns`` / ``time``); a reset does not rewind it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

# MuJoCo picks its GL backend when it is imported; default to EGL (software here, no display).
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dex_common.rotations import _qmul, _qnormalize  # noqa: E402
from dex_description.registry import HandSpec, get_hand  # noqa: E402

# Re-exported: the scene index and loader live next to the models they read.
from dex_description.scene import SceneIndex, load_model  # noqa: E402,F401
from dex_hardware.safety import CommandGuard, default_targets  # noqa: E402

# Cube placement noise on reset (m). Small: the cube must land on the palm, not beside it.
CUBE_POS_JITTER = 0.005


def default_joint_positions(spec: HandSpec, actuator_targets: np.ndarray) -> np.ndarray:
    """Joint angles matching actuator targets (coupled targets split evenly), within limits."""
    try:  # prefer the description's own default pose when it provides joint angles
        from dex_description.pose import default_joint_positions as _djp

        return np.asarray(_djp(spec), float)
    except (ImportError, AttributeError):
        pass
    q = np.zeros(spec.n_joints)
    index = {n: i for i, n in enumerate(spec.joint_names)}
    for act, t in zip(spec.actuators, actuator_targets, strict=True):
        for jn in act.joints:
            q[index[jn]] = t / len(act.joints)
    lo, hi = spec.joint_limits()
    return np.clip(q, lo, hi)


# The 6 rotations that put each cube face up (w, x, y, z); composed with a random yaw they give
# a uniformly random "resting on a face" orientation.
_S = math.sqrt(0.5)
_FACE_UP = (
    [1.0, 0.0, 0.0, 0.0],  # +z up
    [0.0, 1.0, 0.0, 0.0],  # -z up (180 deg about x)
    [_S, _S, 0.0, 0.0],  # 90 deg about x
    [_S, -_S, 0.0, 0.0],  # -90 deg about x
    [_S, 0.0, _S, 0.0],  # 90 deg about y
    [_S, 0.0, -_S, 0.0],  # -90 deg about y
)
# Everything mj_step reads (time, qpos, qvel, warm start, ctrl, applied forces, mocap poses).
_INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION


class HandCubeSim:
    """The hand + cube scene. ``render=False`` never touches OpenGL (training workers);
    ``resolution`` (width, height) renders every camera at that size instead of the
    registry's (offline datasets at another resolution)."""

    def __init__(self, hand: str = "shadow", render: bool = True,
                 resolution: tuple[int, int] | None = None) -> None:
        self.hand = hand
        self.spec = get_hand(hand)
        if resolution is not None:
            self.spec = self.spec.at_resolution(*resolution)
        self.model = load_model(hand)
        self.data = mujoco.MjData(self.model)
        if abs(self.model.opt.timestep - self.spec.timestep) > 1e-12:
            raise ValueError(
                f"MJCF timestep {self.model.opt.timestep} != registry {self.spec.timestep}"
            )
        self.idx = SceneIndex(self.model, self.spec)
        self.substeps = self.spec.substeps
        self.control_period = self.spec.control_period
        self._timestep_ns = round(self.spec.timestep * 1e9)
        self._steps = 0  # physics timesteps since construction: the monotonic clock
        self._extra_ns = 0  # extra ns from stretched control steps (timing randomization only)
        self.guard = CommandGuard(self.spec)
        self._default_targets = default_targets(self.spec)
        self._default_qpos = default_joint_positions(self.spec, self._default_targets)
        self._render_enabled = render
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._cube_geoms: np.ndarray | None = None
        self.seed: int | None = None
        self._home = self._home_state()
        self.reset(0)
        self._steps = 0

    # ---- time ---------------------------------------------------------------------------
    @property
    def time_ns(self) -> int:
        """Monotonic sim time in integer ns (exact: no float drift in stamps)."""
        return self._steps * self._timestep_ns + self._extra_ns

    @property
    def time(self) -> float:
        """Monotonic sim time in s (the ROS stamp source); never rewinds on reset."""
        return self.time_ns * 1e-9

    # ---- control --------------------------------------------------------------------------
    def reset(self, seed: int) -> np.random.Generator:
        """Default hand pose, cube above the palm with seeded jitter and a random face up/yaw.

        Returns the episode's generator (``default_rng(seed)``, after the reset's own draws);
        the training env draws its randomization from it, so one seed fixes the whole episode.
        The clock advances by one control period, so the first state after a reset has a stamp
        strictly newer than anything published before it (the policy waits for that).
        """
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        m, d, ix = self.model, self.data, self.idx
        # The home state (default hand pose and targets, zero velocities, forces and warm start)
        # as mj_resetData + those writes would leave it, in one copy.
        mujoco.mj_setState(m, d, self._home, _INTEGRATION)
        self.guard.reset(self._default_targets)
        jx, jy, yaw, face = rng.random(4).tolist()
        x, y, z = self.spec.cube.rest_pos
        yaw *= math.pi  # half angle: the yaw is uniform in [0, 2 pi)
        quat = _qnormalize(_qmul([math.cos(yaw), 0.0, 0.0, math.sin(yaw)],
                                 _FACE_UP[int(face * len(_FACE_UP))]))
        c = ix.cube_qpos
        d.qpos[c:c + 7] = [x + CUBE_POS_JITTER * (2.0 * jx - 1.0),
                           y + CUBE_POS_JITTER * (2.0 * jy - 1.0), z, *quat]
        # Positions only (fingertip sites, renders): the next mj_step computes everything else
        # itself, from the same state, so trajectories are unchanged (tested) at a third of
        # mj_forward's cost.
        mujoco.mj_kinematics(m, d)
        self._steps += self.substeps
        return rng

    def _home_state(self) -> np.ndarray:
        m, d, ix = self.model, self.data, self.idx
        mujoco.mj_resetData(m, d)
        d.qpos[ix.qpos_adr] = self._default_qpos
        d.ctrl[ix.actuator_ids] = self._default_targets
        state = np.empty(mujoco.mj_stateSize(m, _INTEGRATION))
        mujoco.mj_getState(m, d, state, _INTEGRATION)
        return state

    def set_targets(self, targets: Sequence[float] | np.ndarray) -> tuple[bool, np.ndarray, str]:
        """Validate (CommandGuard: length, finite, clamp to limits) and apply actuator targets.

        Returns the guard's (ok, applied targets, reason); a rejected command holds the last
        safe one.
        """
        ok, applied, reason = self.guard.check(targets)
        self.data.ctrl[self.idx.actuator_ids] = applied
        return ok, applied, reason

    def set_targets_trusted(self, targets: np.ndarray) -> None:
        """Apply targets that are already finite and within the actuator limits (the training
        env's decoder clips its output): the guard's checks are skipped, nothing else differs."""
        self.data.ctrl[self.idx.actuator_ids] = targets
        self.guard.note_applied(targets)

    def step_control(self, extra_time: float = 0.0) -> None:
        """Advance one control period (registry substeps of mj_step).

        ``extra_time`` (s, >= 0; timing randomization) lengthens this control step: the same
        substeps run with a stretched timestep, and the clock advances by the whole duration
        (rounded to integer ns), so it stays monotonic. 0 (default) is the exact registry step.
        """
        m, d, k = self.model, self.data, self.substeps
        if extra_time > 0.0:
            extra_ns = round(extra_time * 1e9)
            opt = m.opt  # one binding look-up (each ``m.opt`` builds a wrapper)
            opt.timestep = (self._timestep_ns * k + extra_ns) * 1e-9 / k
            try:
                mujoco.mj_step(m, d, nstep=k)
            finally:
                opt.timestep = self.spec.timestep
            self._extra_ns += extra_ns
        else:
            mujoco.mj_step(m, d, nstep=k)
        # mj_step leaves xpos/site_xpos at the pre-integration state; recompute so fingertips
        # and renders match qpos exactly (HandKinematics relies on this).
        mujoco.mj_kinematics(m, d)
        self._steps += k

    def actuator_targets(self) -> np.ndarray:
        return self.data.ctrl[self.idx.actuator_ids].copy()

    # ---- state ----------------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.idx.qpos_adr]  # fancy indexing: already a copy

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.idx.qvel_adr]

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m world, unit quaternion (4,) w,x,y,z)."""
        v = self.cube_pose_values()
        return np.array(v[:3]), np.array(v[3:])

    def cube_pose_values(self) -> list[float]:
        """``cube_pose`` as 7 floats: x, y, z, unit quaternion w, x, y, z."""
        # Scalar math on 7 floats (called every control step): same operations and order as
        # q / np.linalg.norm(q), so bit-identical, at a fraction of the numpy overhead.
        a = self.idx.cube_qpos
        x, y, z, qw, qx, qy, qz = self.data.qpos[a : a + 7].tolist()
        n = math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz)
        return [x, y, z, qw / n, qx / n, qy / n, qz / n]

    def cube_velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """(linear (3,) m/s world frame, angular (3,) rad/s cube-local frame) — MuJoCo free joint."""
        a = self.idx.cube_qvel
        return self.data.qvel[a : a + 3].copy(), self.data.qvel[a + 3 : a + 6].copy()

    def fingertip_positions(self) -> np.ndarray:
        """(5, 3) world positions of the registry fingertip sites."""
        return self.data.site_xpos[self.idx.site_ids]

    def set_goal_marker(self, quat: Sequence[float] | np.ndarray) -> None:
        """Orient the goal marker (mocap body ``goal``); rendering only, no physics effect."""
        q = np.asarray(quat, float)
        n = np.linalg.norm(q) if q.shape == (4,) else 0.0
        if not np.isfinite(n) or n < 1e-9:
            raise ValueError(f"goal quaternion must be 4 finite values, non-zero; got {quat!r}")
        if self.idx.goal_mocap < 0:
            return
        self.data.mocap_quat[self.idx.goal_mocap] = q / n
        mujoco.mj_kinematics(self.model, self.data)  # so the next render shows it

    # ---- rendering ------------------------------------------------------------------------
    def render(self, camera_name: str, show_goal: bool = False) -> np.ndarray:
        """uint8 (H, W, 3) RGB at the camera's resolution (the registry's unless overridden).

        The goal marker (geom group 2) is hidden by default: the cameras stand for the real
        cameras, which see no goal, and a second cube in view would confuse the pose CNN.
        """
        cam_id, r = self._camera_renderer(camera_name)
        r.update_scene(self.data, camera=cam_id,
                       scene_option=self._opt_goal if show_goal else self._opt_camera)
        return r.render()

    def cube_visibility(self, camera_name: str) -> float:
        """The fraction of the cube's silhouette this camera sees, 0..1 (1: nothing hides it;
        nan: the cube is out of view): cube pixels of a segmentation render of the scene over
        those of one with the cube alone (geom group 0, the hand and floor, hidden)."""
        cam_id, r = self._camera_renderer(camera_name)
        if self._cube_geoms is None:
            body = self.model.body(self.spec.cube.name).id
            self._cube_geoms = np.flatnonzero(self.model.geom_bodyid == body)
            self._opt_cube = mujoco.MjvOption()
            self._opt_cube.geomgroup[0] = self._opt_cube.geomgroup[2] = 0
        counts = []
        r.enable_segmentation_rendering()
        try:
            for opt in (self._opt_camera, self._opt_cube):
                r.update_scene(self.data, camera=cam_id, scene_option=opt)
                seg = r.render()
                cube = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0],
                                                                          self._cube_geoms)
                counts.append(int(cube.sum()))
        finally:
            r.disable_segmentation_rendering()
        return counts[0] / counts[1] if counts[1] else float("nan")

    def _camera_renderer(self, camera_name: str) -> tuple[int, mujoco.Renderer]:
        """(camera id, the renderer at its resolution); clear errors for a sim made
        without rendering or an unknown camera."""
        if not self._render_enabled:
            raise RuntimeError("HandCubeSim(render=False) cannot render")
        cam_id = self.idx.camera_ids.get(camera_name)
        if cam_id is None:
            raise KeyError(f"unknown camera {camera_name!r}; have {list(self.idx.camera_ids)}")
        cam = self.spec.camera(camera_name)
        return cam_id, self._renderer(cam.height, cam.width)

    def _renderer(self, height: int, width: int) -> mujoco.Renderer:
        r = self._renderers.get((height, width))
        if r is None:
            r = mujoco.Renderer(self.model, height=height, width=width)
            # Shadows and reflections cost ~10x in software GL and the pose CNN does not need them.
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[(height, width)] = r
            self._opt_goal = mujoco.MjvOption()
            self._opt_camera = mujoco.MjvOption()
            self._opt_camera.geomgroup[2] = 0
        return r

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass
