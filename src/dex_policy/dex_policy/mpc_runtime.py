"""The sampling-MPC teacher as a deployable controller (pure: no rclpy, no simulator import).

In training the teacher plans from the simulator's true state (``controllers.MPCController``).
Deployed — in the ROS graph, or on a real hand — it only has what the policy node receives: joint
positions (and velocities when the source publishes them) and the estimated cube pose, each with
a stamp. ``MPCRuntime`` rebuilds a MuJoCo state from those measurements on the hand's nominal
model (dex_description's scene: no randomization is known to it), estimates what is not measured
from consecutive stamps, plans, and steps the same ``ActionDecoder`` the LSTM policy uses — so it
is a drop-in for ``PolicyRuntime`` ("synced inputs → absolute targets").

State estimate per control step:
- hand joints: positions as measured; velocities from /joint_states when it carries them for
  every joint (finite), else the finite difference of positions over the stamp difference;
- cube: pose as estimated; linear and angular velocity from the difference of the last two poses
  (``mj_differentiatePos``: quaternion-correct for the free joint);
- the actuators hold the controller's own last targets (what the hand is tracking).
A first step, a stamp that does not advance, or a gap longer than ``max_gap_s`` gives zero
velocities (counted in ``stats``): a difference over a reset or a long outage means nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import mujoco
import numpy as np

from dex_common.actions import ActionDecoder
from dex_common.stats import RollingStats
from dex_description.registry import get_hand
from dex_description.scene import SceneIndex, load_model
from dex_policy.mpc import MPCConfig, SamplingPlanner


@dataclass
class Measurement:
    """What the controller receives for one control step (registry joint order, world frame)."""

    stamp: float  # s
    joint_positions: np.ndarray  # [n_joints] rad
    cube_pos: np.ndarray  # [3] m
    cube_quat: np.ndarray  # [4] (w, x, y, z)
    joint_velocities: np.ndarray | None = None  # [n_joints] rad/s, when the source has them


class MPCRuntime:
    """Sampling MPC on measured state → absolute actuator targets (see module docstring)."""

    name = "mpc"

    def __init__(self, hand: str = "shadow", config: MPCConfig | None = None,
                 decoder: ActionDecoder | None = None, max_gap_s: float = 0.5) -> None:
        """``decoder``: the action space to act in (default: ``ActionDecoder``'s, the one the
        shipped policies use)."""
        self.spec = get_hand(hand)
        self.config = config if config is not None else MPCConfig()
        self.model = load_model(hand)
        self.idx = SceneIndex(self.model, self.spec)
        self.data = mujoco.MjData(self.model)
        self.decoder = decoder if decoder is not None else ActionDecoder(self.spec)
        self.planner = SamplingPlanner(self.spec, self.model, self.idx.actuator_ids,
                                       self.idx.cube_qpos, self.idx.cube_qvel,
                                       max_delta=self.decoder.max_delta, ema=self.decoder.ema,
                                       config=self.config)
        self.max_gap_s = float(max_gap_s)
        self.infer_stats = RollingStats()  # planning time per control step
        self.stats = {"plans": 0, "velocity_from_positions": 0, "velocity_zeroed": 0}
        self._prev: tuple[float, np.ndarray] | None = None  # (stamp, qpos) of the last step
        self.last_bins: np.ndarray | None = None
        self.last_delta: np.ndarray | None = None
        # Identifies this controller in trial records the way a model's sha256 does.
        self.sha256 = hashlib.sha256(json.dumps(
            {"controller": "mpc", "hand": self.spec.name, "config": self.config.to_dict(),
             "action": self.decoder.describe()}, sort_keys=True).encode()).hexdigest()

    @property
    def targets(self) -> np.ndarray | None:
        return self.decoder.targets

    def describe(self) -> dict:
        return {"controller": self.name, "config": self.config.to_dict(),
                "plan_timestep": self.planner.model.opt.timestep, "threads": self.planner.threads,
                "action": self.decoder.scale()}

    def reset(self, current_targets: np.ndarray, seed: int | None = None) -> None:
        """New trial: the decoder starts from ``current_targets``; the plan and the velocity
        history are forgotten; ``seed`` restarts the sampling noise (reproducible trials)."""
        self.decoder.reset(current_targets)
        self.planner.reset(seed=seed)
        self._prev = None
        self.last_bins = self.last_delta = None

    def estimate(self, m: Measurement) -> mujoco.MjData:
        """The MuJoCo state the planner starts from (``self.data``), from one measurement."""
        d, idx = self.data, self.idx
        q = np.asarray(m.joint_positions, float)
        if q.shape != (self.spec.n_joints,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint_positions must be {self.spec.n_joints} finite values")
        pos, quat = np.asarray(m.cube_pos, float), np.asarray(m.cube_quat, float)
        n = float(np.linalg.norm(quat)) if quat.shape == (4,) else 0.0
        if pos.shape != (3,) or not (np.all(np.isfinite(pos)) and math.isfinite(n) and n > 1e-6):
            raise ValueError("cube pose must be a finite position [3] and a non-zero quaternion [4]")
        if not math.isfinite(m.stamp):
            raise ValueError(f"stamp must be finite; got {m.stamp}")
        d.qpos[idx.qpos_adr] = q
        c = idx.cube_qpos
        d.qpos[c : c + 3] = pos
        d.qpos[c + 3 : c + 7] = quat / n
        qvel = np.zeros(self.model.nv)
        dt = None if self._prev is None else m.stamp - self._prev[0]
        if dt is not None and 0.0 < dt <= self.max_gap_s:
            mujoco.mj_differentiatePos(self.model, qvel, dt, self._prev[1], d.qpos)
            if m.joint_velocities is None:
                self.stats["velocity_from_positions"] += 1
        else:
            self.stats["velocity_zeroed"] += 1
        v = None if m.joint_velocities is None else np.asarray(m.joint_velocities, float)
        if v is not None and v.shape == (self.spec.n_joints,) and np.all(np.isfinite(v)):
            qvel[idx.qvel_adr] = v
        d.qvel[:] = qvel
        d.ctrl[idx.actuator_ids] = self.decoder.targets
        d.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self.model, d)
        self._prev = (float(m.stamp), d.qpos.copy())
        return d

    def act_measured(self, m: Measurement, goal: np.ndarray) -> np.ndarray:
        """One control step: estimate → plan → nearest bins → decoder → absolute targets."""
        if self.decoder.targets is None:
            raise RuntimeError("MPCRuntime.act_measured called before reset(current_targets)")
        data = self.estimate(m)
        delta = self.planner.plan(data, self.decoder.targets, self.decoder.smoothed_delta, goal)
        self.infer_stats.add(self.planner.last_plan_s)
        self.stats["plans"] += 1
        bins = self.decoder.nearest_bins(delta)
        self.last_delta, self.last_bins = delta, bins
        return self.decoder.decode(bins)

    def close(self) -> None:
        self.planner.close()
