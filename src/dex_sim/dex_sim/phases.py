"""The control step of n ``DexCubeEnv`` s, in three phases run across all of them.

1. commands: decode every env's action (one ``ActionDecoder.step_state`` over [n, A]), take each
   env's per-step random numbers from its own generator, apply the action effects
   (``StepEffects``) to all rows at once, write the targets (and random forces) into each sim;
2. physics: ``step_control`` per sim;
3. outcomes: per env, judge the cube pose with its ``TrialTracker`` (the rules the nodes use)
   and build its true and (randomized) observed values in Python floats
   (``policy_observation_values``, ``StepEffects.observe``: quaternion arithmetic on a few
   floats, several times cheaper than numpy calls); then one float32 array of policy and one
   of value observations for all envs.

``DexCubeEnv`` steps a batch of one and ``VecDexCubeEnv`` one batch of all its members: the same
code. Two reasons for the shape: the commands' array arithmetic runs once per batch instead of
once per env, and phase by phase the second and later envs of a phase run with warm caches
(right after ``mj_step`` Python runs several times slower). The members' decoder state lives in
this batch's arrays (each decoder holds views of its row) and their effects state in its
``StepEffects`` rows, so every env's numbers are the bits it would get stepped alone (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dex_common.observations import policy_observation_values
from dex_sim.effects import StepEffects


class PhasedStep:
    """The batch of ``envs`` (same hand and task): state arrays and the three phases."""

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        self.sims = [e.sim for e in self.envs]
        n = self.n = len(self.envs)
        e0 = self.envs[0]
        if any(e.hand != e0.hand or e.task != e0.task for e in self.envs):
            raise ValueError("a batch steps envs of one hand and one task")
        ix, a = e0.sim.idx, e0.n_actuators
        self.decoder = e0.decoder  # the arithmetic (bins, EMA, limits) all members share
        self.smoothed, self.targets = np.zeros((n, a)), np.zeros((n, a))
        self.randomized = e0.randomizer is not None
        self.effects = StepEffects.neutral(n, a)
        # Limits tiled to [n, A]: numpy is several times slower when it has to broadcast.
        self.bounds = tuple(np.tile(b, (n, 1)) for b in e0.hand_spec.actuator_limits())
        self.add = np.zeros((n, a))  # per step: additive action noise per row
        self.cube_body = e0.randomizer.cube_body if self.randomized else -1
        # Where things sit in the state.
        self.site_ids, self.qpos_adr, self.qvel_adr = ix.site_ids, ix.qpos_adr, ix.qvel_adr
        self.cube_qpos, self.cube_qvel = ix.cube_qpos, ix.cube_qvel
        self._goal_seen: list[Any] = [None] * n  # each row's goal array ...
        self._goal_lists: list[list[float]] = [[]] * n  # ... as floats
        self.cube_quat_obs = e0.task.obs_cube_orientation
        # Per row, what each step reads (looked up once: MjData's arrays are views that live as
        # long as the MjData); the episode's randomizer generator is refreshed by ``bind``.
        self._state = [(e, e.sim, e.tracker, e.sim.data.qpos, e.sim.data.qvel,
                        e.sim.data.site_xpos) for e in self.envs]
        self._draws: list[tuple[Any, Any, np.ndarray]] = [
            (e.randomizer, e.episode_rng, e.sim.data.xfrc_applied[self.cube_body])
            for e in self.envs] if self.randomized else []

    def bind(self, i: int) -> None:
        """Env ``i`` has just been reset: its decoder and effects state join row ``i``."""
        env = self.envs[i]
        env.decoder.share_state(self.smoothed[i], self.targets[i])  # views: one state
        if env.randomizer is not None:
            self.effects.copy_row(i, env.randomizer.effects)
            self._draws[i] = (env.randomizer, env.episode_rng, self._draws[i][2])
        self._goal_seen[i] = None

    # ---- 1. commands ------------------------------------------------------------------------
    def commands(self, actions: np.ndarray) -> list[float]:
        """Decode and apply one action per env (``[n, A]``); returns each control step's extra
        duration (s; timing randomization)."""
        delta = self.decoder.deltas(actions, rows=self.n)
        self.decoder.step_state(self.smoothed, self.targets, delta, self.bounds)
        return self.apply(self.targets)

    def apply(self, targets: np.ndarray) -> list[float]:
        """Apply finite, in-limit targets ``[n, A]`` (randomized action effects first)."""
        sims = self.sims
        if not self.randomized:
            # A copy: the targets handed to the sims (and their guards) must not change later
            # (the decoder state does, in place).
            for sim, t in zip(sims, targets.copy(), strict=True):
                sim.set_targets_trusted(t)
            return [0.0] * self.n
        add, fx = self.add, self.effects
        extras = []
        # Each env's draws in its own order (actions, force, timing), from its own generator.
        for i, (r, rng, xfrc) in enumerate(self._draws):
            add[i] = r.act_draw(rng)
            if r.forces_on:
                xfrc[:3] = fx.push(i, r.force_draw(rng))
            extras.append(r.step_time(rng))
        targets = fx.act(targets, add, *self.bounds)  # a new array
        for sim, t in zip(sims, targets, strict=True):
            sim.set_targets_trusted(t)
        return extras

    # ---- 2. physics -------------------------------------------------------------------------
    def physics(self, extras: Sequence[float]) -> None:
        for sim, extra in zip(self.sims, extras, strict=True):
            sim.step_control(extra)

    # ---- 3. outcomes ------------------------------------------------------------------------
    def outcomes(self, only: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[float], list[bool], list[bool],
                            list[dict]]:
        """Judge and observe the states of all envs (or of env ``only``, after its reset):
        float32 policy obs [k, D], float32 value obs [k, V], and per env reward, terminated,
        truncated and info.

        Fingertips are the sim's fingertip sites, which ``step_control`` / ``reset`` leave
        computed from the current joint angles: the numbers ``HandKinematics`` (the policy
        node's forward kinematics) gives, bit for bit (tested), without a second FK pass."""
        rows = self._state if only is None else [self._state[only]]
        first = 0 if only is None else only
        fx, site_ids, cube_quat_obs = self.effects, self.site_ids, self.cube_quat_obs
        goal_seen, goal_lists = self._goal_seen, self._goal_lists
        qpos_adr, qvel_adr, cv = self.qpos_adr, self.qvel_adr, self.cube_qvel
        obs, values, rew, term, trunc, events = [], [], [], [], [], []
        for i, (env, sim, tracker, qp, qv, sites) in enumerate(rows, first):
            pose = sim.cube_pose_values()
            pos, quat = pose[:3], pose[3:]
            ev = env.last_event = tracker.step_trusted(sim.time, pos[2], quat)
            if ev.goal is not goal_seen[i]:  # a new goal: convert once
                goal_seen[i], goal_lists[i] = ev.goal, ev.goal.tolist()
            goal = goal_lists[i]
            tips = sites[site_ids].ravel().tolist()
            true = policy_observation_values(tips, pos, quat, goal)
            r = env.randomizer
            if r is not None and fx.obs_on[i]:
                tp, q = fx.observe(i, tips + pos, quat, r.obs_draw(env.episode_rng))
                vals = policy_observation_values(tp[:-3], tp[-3:], q, goal)
            else:
                vals, q = true, quat
            obs.append(vals + q if cube_quat_obs else vals)
            values.append(true + quat + goal + qp[qpos_adr].tolist() + qv[qvel_adr].tolist()
                          + qv[cv:cv + 6].tolist())
            timeout = ev.end_reason == "timeout"
            rew.append(ev.reward)
            term.append(ev.ended and not timeout)
            trunc.append(timeout)
            events.append(ev)
        # One float64 -> float32 rounding per value (as policy_observation does).
        obs32, value32 = np.array(obs, dtype=np.float32), np.array(values, dtype=np.float32)
        infos = [{"value_obs": value32[j], "state": ev.state, "successes": ev.successes,
                  "end_reason": ev.end_reason, "seed": row[0].episode_seed}
                 for j, (row, ev) in enumerate(zip(rows, events, strict=True))]
        return obs32, value32, rew, term, trunc, infos
