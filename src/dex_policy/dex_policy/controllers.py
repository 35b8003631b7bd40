"""Controllers that drive ``DexCubeEnv`` for evaluation and teaching: the ONNX student (the node's
runtime), the sampling-MPC teacher (privileged: plans from the env's true state and its episode
model, randomization included), and the floors every result is read against (zero action =
hold the targets, uniformly random bins).

A controller is ``reset(env)`` at the start of a trial, then ``step(env, obs)`` once per control
step, which applies its action and returns the env's ``(obs, reward, terminated, truncated,
info)``. ``timing`` holds the per-step decision time (planning or inference) in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from dex_common.actions import soft_labels
from dex_common.stats import RollingStats
from dex_policy.mpc import MPCConfig, SamplingPlanner
from dex_sim.env import DexCubeEnv

StepResult = tuple[np.ndarray, float, bool, bool, dict]


class Controller(Protocol):
    name: str
    timing: RollingStats

    def reset(self, env: DexCubeEnv) -> None: ...

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult: ...

    def describe(self) -> dict: ...


def bins_of(env: DexCubeEnv, deltas: np.ndarray) -> np.ndarray:
    """Nearest action bins [n] (ints) of raw per-actuator deltas (rad)."""
    return env.decoder.nearest_bins(deltas)


class OnnxPolicyController:
    """The ONNX student through ``PolicyRuntime`` (the policy node's runtime)."""

    name = "onnx"

    def __init__(self, model_path: str | Path, hand: str) -> None:
        from dex_policy.runtime import PolicyRuntime

        self.runtime = PolicyRuntime(model_path, hand)
        self.timing = self.runtime.infer_stats

    def reset(self, env: DexCubeEnv) -> None:
        self.runtime.reset(env.current_actuator_positions())

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult:
        return env.step_targets(self.runtime.act(obs))

    def describe(self) -> dict:
        return {"controller": self.name, "model": str(self.runtime.model_path),
                "model_sha256": self.runtime.sha256, "action": self.runtime.decoder.scale()}


class MPCController:
    """The sampling-MPC teacher acting in the student's action space (nearest bins of its
    planned deltas), planning from the env's true state with the episode's own model."""

    name = "mpc"

    def __init__(self, env: DexCubeEnv, config: MPCConfig | None = None) -> None:
        if not env.task.discrete:
            raise ValueError("MPCController acts in bins: use a TaskConfig with discrete=True")
        sim = env.sim
        self.planner = SamplingPlanner(env.hand_spec, sim.model, sim.idx.actuator_ids,
                                       sim.idx.cube_qpos, sim.idx.cube_qvel,
                                       max_delta=env.task.max_delta, ema=env.task.ema,
                                       config=config)
        self.timing = RollingStats(window=100_000)
        self.last_bins: np.ndarray | None = None
        self.last_delta: np.ndarray | None = None  # the planned continuous delta (rad)
        # Teaching: also the bin distribution over the plan's elite samples (label_probs).
        self.label_distribution = False
        self.last_label_probs: np.ndarray | None = None  # [n_actuators, bins]

    def reset(self, env: DexCubeEnv) -> None:
        self.planner.reset(seed=env.episode_seed)
        self.planner.set_model(env.sim.model)  # the episode's randomized model (privileged)
        self.planner.success_threshold = env.tracker.config.success_threshold

    def act(self, env: DexCubeEnv, student_bins: np.ndarray | None = None) -> np.ndarray:
        """The teacher's bins for the env's current state (no step taken); ``student_bins``
        [n]: the student's action here (the planner's ``student`` term)."""
        targets, smoothed = env.decoder.targets, env.decoder.smoothed_delta
        student = None if student_bins is None else env.decoder.bin_values[student_bins]
        d = self.planner.plan(env.sim.data, targets, smoothed, env.tracker.goal, student)
        self.timing.add(self.planner.last_plan_s)
        self.last_delta = d
        self.last_bins = bins_of(env, d)
        if self.label_distribution and self.planner.cfg.planner == "mppi":
            # MPPI acts on the weighted mean: that one action is the label (split between the
            # two bins nearest to it).
            self.last_label_probs = soft_labels(d, env.bins, env.task.max_delta)
        elif self.label_distribution:
            deltas, w = self.planner.elite_deltas(targets, smoothed)
            probs = np.zeros((env.n_actuators, env.bins))
            for b, wi in zip(bins_of(env, deltas), w, strict=True):
                probs[np.arange(env.n_actuators), b] += wi
            self.last_label_probs = probs
        return self.last_bins

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult:
        if self.planner.absolute:  # outside the student's action space (comparison only)
            out = self.planner.plan(env.sim.data, env.sim.actuator_targets(),
                                    env.decoder.smoothed_delta, env.tracker.goal)
            self.timing.add(self.planner.last_plan_s)
            return env.step_targets(out)
        return env.step(self.act(env))

    def describe(self) -> dict:
        return {"controller": self.name, "config": self.planner.cfg.to_dict(),
                "plan_timestep": self.planner.model.opt.timestep,
                "threads": self.planner.threads}


class MeasuredMPCController:
    """The MPC as deployed (``MPCRuntime``): plans from measurements only — joint positions and
    velocities, the cube pose, stamps — on the nominal model, without the sim's hidden state
    (contacts, solver warm start) or its episode randomization. Compared with ``MPCController``
    it measures what leaving the privileged state costs (not perception noise: the pose is the
    sim's)."""

    name = "mpc-measured"

    def __init__(self, env: DexCubeEnv, config: MPCConfig | None = None) -> None:
        from dex_common.actions import ActionDecoder
        from dex_policy.mpc_runtime import MPCRuntime

        t = env.task
        decoder = ActionDecoder(env.hand, bins=t.bins, max_delta=t.max_delta, ema=t.ema)
        self.runtime = MPCRuntime(env.hand, config, decoder)
        self.timing = self.runtime.infer_stats

    def reset(self, env: DexCubeEnv) -> None:
        self.runtime.reset(env.current_actuator_positions(), seed=env.episode_seed)
        self.runtime.planner.success_threshold = env.tracker.config.success_threshold

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult:
        from dex_policy.mpc_runtime import Measurement

        sim = env.sim
        pos, quat = sim.cube_pose()
        m = Measurement(sim.time, sim.joint_positions(), pos, quat, sim.joint_velocities())
        return env.step_targets(self.runtime.act_measured(m, env.tracker.goal))

    def describe(self) -> dict:
        return {**self.runtime.describe(), "controller": self.name}


class HoldController:
    """Zero action: the middle bin every step (the targets stay where they are)."""

    name = "zero"

    def __init__(self) -> None:
        self.timing = RollingStats()

    def reset(self, env: DexCubeEnv) -> None:
        self._bins = np.full(env.n_actuators, env.bins // 2, dtype=np.int64)

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult:
        return env.step(self._bins)

    def describe(self) -> dict:
        return {"controller": self.name}


class RandomController:
    """Uniformly random bins from its own seeded generator."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.timing = RollingStats()
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, env: DexCubeEnv) -> None:
        pass

    def step(self, env: DexCubeEnv, obs: np.ndarray) -> StepResult:
        return env.step(self._rng.integers(0, env.bins, env.n_actuators))

    def describe(self) -> dict:
        return {"controller": self.name, "seed": self.seed}
