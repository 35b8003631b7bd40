"""Minimal training env (gymnasium API) on the SAME cores the ROS graph runs.

``DexCubeEnv`` steps ``HandCubeSim`` (render=False), judges with ``TrialTracker``, decodes actions
with ``ActionDecoder`` and builds observations with ``policy_observation`` — the code the sim node
and the policy node use — and computes fingertips with ``HandKinematics`` from joint angles, as the
policy node does. Randomisation comes in a later issue.

Action: 20 bin indices (MultiDiscrete 11). Observation: the 22-float policy observation;
``info["value_obs"]`` holds the asymmetric value observation (``VALUE_OBS_LAYOUT``).
Episode = one trial: terminated on drop / 50 goals, truncated on the goal timeout.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dex_common.actions import ActionDecoder
from dex_common.observations import POLICY_OBS_LAYOUT, policy_observation
from dex_common.trial import TrialConfig, TrialTracker
from dex_description.registry import HandSpec, get_hand
from dex_sim.kinematics import HandKinematics
from dex_sim.physics import HandCubeSim


def value_obs_layout(hand: HandSpec) -> list[tuple[str, int]]:
    """Asymmetric critic input (Dactyl): policy obs + privileged state."""
    return [*POLICY_OBS_LAYOUT, ("cube_quat", 4), ("goal_quat", 4),
            ("joint_pos", hand.n_joints), ("joint_vel", hand.n_joints),
            ("cube_linvel", 3), ("cube_angvel", 3)]


def value_obs_dim(hand: HandSpec | str = "shadow") -> int:
    spec = get_hand(hand) if isinstance(hand, str) else hand
    return sum(n for _, n in value_obs_layout(spec))


def trial_config_for(spec: HandSpec) -> TrialConfig:
    """The trial rules used by env, evaluator and node (registry control period)."""
    return TrialConfig.for_hand(spec)


class DexCubeEnv(gym.Env):
    """One hand + cube; one step = one control period (80 ms)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, hand: str = "shadow", seed: int | None = None,
                 trial_config: TrialConfig | None = None) -> None:
        self.hand = hand
        self.spec = get_hand(hand)
        self.sim = HandCubeSim(hand, render=False)
        self.kin = HandKinematics(hand)
        self.tracker = TrialTracker(trial_config or trial_config_for(self.spec))
        self.decoder = ActionDecoder(self.spec)
        self._act_matrix = self.spec.actuation_matrix()
        self._rng = np.random.default_rng(seed)
        self.obs_dim = sum(n for _, n in POLICY_OBS_LAYOUT)
        self.value_dim = value_obs_dim(self.spec)
        self.n_actuators, self.bins = self.spec.n_actuators, self.decoder.bins
        self.action_space = spaces.MultiDiscrete([self.bins] * self.n_actuators, seed=seed)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.episode_seed: int | None = None
        self.last_event: Any = None

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset physics and the trial with ``seed`` (drawn from the env's rng when None)."""
        if seed is None:
            seed = int(self._rng.integers(0, 2**31 - 1))
        self.episode_seed = int(seed)
        self.sim.reset(self.episode_seed)
        # The goal clock starts at the reset state's stamp, which is then judged like every
        # later state (reward 0) — the policy node does exactly the same on a trial's first set.
        self.tracker.start(self.episode_seed, stamp=self.sim.time)
        # Decoder starts from the measured actuator positions, as the policy node does.
        self.decoder.reset(self.current_actuator_positions())
        self.last_event = self._judge()
        obs = self._observe()
        return obs, self._info(self.last_event, obs)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply 20 bin indices (decoded by ``ActionDecoder``) for one control period."""
        return self.step_targets(self.decoder.decode(np.asarray(action)))

    def step_targets(self, targets: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply absolute actuator targets (e.g. from ``PolicyRuntime.act``) for one period."""
        self.sim.set_targets(targets)
        self.sim.step_control()
        ev = self._judge()
        self.last_event = ev
        terminated = bool(ev.ended) and ev.end_reason != "timeout"
        truncated = bool(ev.ended) and ev.end_reason == "timeout"
        obs = self._observe()
        return obs, float(ev.reward), terminated, truncated, self._info(ev, obs)

    # ---- helpers -------------------------------------------------------------------------------
    def current_actuator_positions(self) -> np.ndarray:
        """Actuator-space positions (A @ q; coupled J0 = J1 + J2) from the joint angles."""
        return self._act_matrix @ self.sim.joint_positions()

    def _judge(self) -> Any:
        pos, quat = self.sim.cube_pose()
        return self.tracker.step(self.sim.time, pos, quat)

    def _observe(self) -> np.ndarray:
        pos, quat = self.sim.cube_pose()
        tips = self.kin.fingertips(self.sim.joint_positions())
        return policy_observation(tips, pos, quat, self.tracker.goal)

    def value_observation(self, policy_obs: np.ndarray) -> np.ndarray:
        _, quat = self.sim.cube_pose()
        lin, ang = self.sim.cube_velocity()
        return np.concatenate([policy_obs, quat, self.tracker.goal, self.sim.joint_positions(),
                               self.sim.joint_velocities(), lin, ang]).astype(np.float32)

    def _info(self, ev: Any, obs: np.ndarray) -> dict:
        return {
            "value_obs": self.value_observation(obs),
            "state": ev.state,
            "successes": int(ev.successes),
            "end_reason": ev.end_reason,
            "seed": self.episode_seed,
        }

    def close(self) -> None:
        self.sim.close()


class VecDexCubeEnv:
    """``n`` envs stepped in a loop, auto-reset on episode end (final info in ``info["final"]``).

    Arrays are stacked: obs [n, 22], value_obs [n, V], rewards/terminated/truncated [n].
    Episode seeds come from each env's own rng (env i seeded with ``seed * 1000 + i``)."""

    def __init__(self, n: int, hand: str = "shadow", seed: int = 0) -> None:
        if n < 1:
            raise ValueError(f"need at least one env; got {n}")
        self.envs = [DexCubeEnv(hand, seed=seed * 1000 + i) for i in range(n)]
        self.n = n

    def reset(self) -> tuple[np.ndarray, np.ndarray]:
        out = [e.reset() for e in self.envs]
        return (np.stack([o for o, _ in out]), np.stack([i["value_obs"] for _, i in out]))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                 np.ndarray, list[dict]]:
        obs, vobs, rew, term, trunc, infos = [], [], [], [], [], []
        for env, a in zip(self.envs, actions, strict=True):
            o, r, te, tr, info = env.step(a)
            if te or tr:
                # Keep the final value obs: PPO bootstraps V(final) on truncation (timeout).
                info = dict(info, final=True, final_value_obs=info["value_obs"])
                o, reset_info = env.reset()
                info["value_obs"] = reset_info["value_obs"]
            obs.append(o)
            vobs.append(info["value_obs"])
            rew.append(r)
            term.append(te)
            trunc.append(tr)
            infos.append(info)
        return (np.stack(obs), np.stack(vobs), np.array(rew, np.float32), np.array(term),
                np.array(trunc), infos)

    def close(self) -> None:
        for e in self.envs:
            e.close()
