"""Sampling-based model-predictive control of the hand + cube (pure core: MuJoCo + numpy).

The planner acts in the student's action space (``action_space="targets"``, the default): its
decision variables are actuator-target destinations, and each control step it applies the
decoder delta (rad, within ``±max_delta``, through the same EMA and clipping as
``ActionDecoder``) that moves the targets towards the destination — so whatever the teacher does,
the LSTM student can reproduce, and its labels are (near-)exact bins of the student's categorical
action. ``"relative"`` (knots are the deltas themselves) and ``"absolute"`` (targets applied
directly, outside the student's space) are kept for comparison; docs/teacher_student.md has the
measurements.

One plan = ``horizon`` control steps, parameterized by ``knots`` (zero-order hold or linear
interpolation between knots). Each ``plan`` call:
1. shifts the previous plan by one control step (warm start);
2. samples ``n_samples`` candidate plans around it (sample 0 = the shifted plan, sample 1 = hold
   still; the rest Gaussian knot noise at a few scales), clipped to the actuator limits;
3. rolls all of them out from the true state with ``mujoco.rollout`` (threads = cores) on a
   planning model (the scene with a coarser timestep, by default);
4. scores them (``CostWeights``) and keeps the best (predictive sampling), refits a Gaussian to
   the elites for ``cem_iterations`` rounds (cross-entropy method), or takes the cost-weighted
   mean of the samples (MPPI: weights ``exp(-(cost - best) / tau)``, ``tau`` the gap to the
   ``cem_elites``-th best). The mean changes smoothly with the state where the best sample
   jumps between near-equal plans, so an MPPI teacher's actions are far easier to imitate.
The first control step of the chosen plan is returned.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field

import mujoco
import mujoco.rollout
import numpy as np

from dex_common.actions import EMA, max_delta_of
from dex_common.trial import TrialConfig
from dex_description.pose import default_actuator_targets
from dex_description.registry import HandSpec

ACTION_SPACES = ("targets", "relative", "absolute")
PLANNERS = ("ps", "cem", "mppi")


@dataclass
class CostWeights:
    """Per control step of the horizon (averaged), plus ``terminal`` × the last step."""

    rotation: float = 1.0  # per rad of rotation distance to the goal
    # per rad between the cube axis that the goal puts up and the world vertical: rewards
    # rolling the right face up first (the yaw about the vertical is then easy for the fingers)
    tilt: float = 1.0
    position: float = 50.0  # per m of cube-centre distance beyond ``position_deadzone`` of rest
    position_deadzone: float = 0.01  # m
    fall: float = 2000.0  # per m of cube-centre height below rest − ``fall_margin``
    fall_margin: float = 0.02  # m
    velocity: float = 0.0  # per m/s of cube linear speed (0.1 measured worse with tilt)
    # per rad² of the mean squared per-step change of the actuator targets over the horizon
    # ("relative": of the delta knots). Joints that do not matter then hold still, instead of
    # each plan picking them a random direction: the teacher's actions become far less random.
    effort: float = 0.0
    # per rad² of the mean squared distance of the planned targets from the hand's relaxed pose
    # (dex_description.pose), as DROP's "distance from a nominal hand pose": fingers that
    # wander off to the range limits cannot push the cube the other way.
    nominal: float = 0.0
    terminal: float = 4.0  # weight of the last control step on top of the average
    # The trial's own rule: a goal counts the moment the cube is within the success threshold,
    # and then the next goal replaces it. So a rollout that gets there at any step of the
    # horizon earns ``success`` (less as it gets there later, down to half at the last step),
    # and its orientation cost stays at that step's value for the rest of the horizon (what it
    # does to the old goal afterwards no longer matters; its position and drop costs still do).
    # Without it, only the average and the last step count, and a plan that touches the
    # threshold on the way is not preferred to one that stays 0.1 rad short of it.
    success: float = 2.0
    # success is counted below the trial's threshold less this margin: the planning model's
    # 4 ms step mispredicts the sim's cube by ~0.013 rad per control step (measured in the
    # MPC prototype), so a rollout that only grazes the threshold may miss it in the sim
    success_margin: float = 0.05
    # per unit of mean |first-step delta − the student's delta| / max_delta over the actuators
    # (only when ``plan`` is given the student's action). Many plans are
    # near-equally good: this breaks the tie towards the one the student would take, so the
    # teacher's labels become a function the student can learn (after PLATO, Kahn et al. 2017,
    # which weighs the student's log-likelihood instead: measured weaker here, because a
    # student unsure between two directions prefers neither — its argmax still picks one).
    student: float = 0.0


@dataclass
class MPCConfig:
    planner: str = "ps"  # "ps" predictive sampling | "cem" cross-entropy method | "mppi"
    # "targets": knots are actuator target destinations, noise scaled by each actuator's range;
    #   each control step the decoder delta that moves the targets towards the destination
    #   (within ±max_delta, through the EMA) is applied — exactly what the student can output.
    # "relative": knots are per-step decoder deltas (noise scaled by max_delta).
    # "absolute": knots are targets applied directly (outside the student's space; comparison).
    action_space: str = "targets"
    n_samples: int = 64
    horizon: int = 8  # control steps (8 × 80 ms = 0.64 s)
    knots: int = 4  # decision points over the horizon
    interpolation: str = "linear"  # "linear" | "zero" (zero-order hold between knots)
    # knot noise (sample groups): fractions of each actuator's range ("targets", "absolute") or
    # of max_delta ("relative")
    sigmas: tuple[float, ...] = (0.4, 0.8)
    # Fraction of the actuators a sample perturbs (drawn per sample; the rest follow the warm
    # start). Below 1, plans that move only the joints that matter exist among the samples, so
    # with an effort cost the others hold still instead of moving at random.
    noise_fraction: float = 1.0
    plan_timestep: float = 0.004  # s; the sim runs 0.002 (None-equivalent: 0 = the sim's)
    # The planning model's solver (docs/teacher_student.md has what each costs in successes):
    plan_iterations: int = 0  # constraint-solver iterations; 0 = the sim's (30)
    plan_cone: str = ""  # friction cone: "" = the sim's (elliptic), "pyramidal", "elliptic"
    threads: int = 0  # rollout threads; 0 = all cores
    cem_iterations: int = 1  # CEM refits (planner "cem"); PS ignores it
    cem_elites: int = 8  # CEM's elites; MPPI's temperature is the cost gap to this rank
    seed: int = 0
    cost: CostWeights = field(default_factory=CostWeights)

    def validate(self) -> None:
        errs = []
        if self.planner not in PLANNERS:
            errs.append(f"planner must be one of {PLANNERS}; got {self.planner!r}")
        if self.action_space not in ACTION_SPACES:
            errs.append(f"action_space must be one of {ACTION_SPACES}; got {self.action_space!r}")
        if self.interpolation not in ("linear", "zero"):
            errs.append(f"interpolation must be 'linear' or 'zero'; got {self.interpolation!r}")
        if self.n_samples < 2:
            errs.append(f"n_samples must be >= 2; got {self.n_samples}")
        if self.horizon < 1 or not 1 <= self.knots <= self.horizon:
            errs.append(f"need 1 <= knots ({self.knots}) <= horizon ({self.horizon})")
        if not self.sigmas or any(not 0 < s <= 4 for s in self.sigmas):
            errs.append(f"sigmas must be in (0, 4]; got {self.sigmas}")
        if not 0 < self.noise_fraction <= 1:
            errs.append(f"noise_fraction must be in (0, 1]; got {self.noise_fraction}")
        if self.plan_timestep < 0:
            errs.append(f"plan_timestep must be >= 0; got {self.plan_timestep}")
        if self.plan_iterations < 0:
            errs.append(f"plan_iterations must be >= 0; got {self.plan_iterations}")
        if self.plan_cone not in ("", "pyramidal", "elliptic"):
            errs.append(f"plan_cone must be '', 'pyramidal' or 'elliptic'; got {self.plan_cone!r}")
        if self.planner != "ps" and not 2 <= self.cem_elites < self.n_samples:
            errs.append(f"cem_elites must be in [2, n_samples); got {self.cem_elites}")
        if errs:
            raise ValueError("invalid MPCConfig: " + "; ".join(errs))

    def to_dict(self) -> dict:
        return asdict(self)


def add_mpc_options(p: argparse.ArgumentParser) -> None:
    """The teacher's command-line options (``dex-policy-eval``, ``dex-policy-dagger``)."""
    d, c = MPCConfig, CostWeights
    p.add_argument("--mpc-samples", type=int, default=d.n_samples,
                   help=f"samples per plan (default: {d.n_samples})")
    p.add_argument("--mpc-horizon", type=int, default=d.horizon,
                   help=f"control steps per plan (default: {d.horizon})")
    p.add_argument("--mpc-planner", choices=PLANNERS, default=d.planner,
                   help=f"default: {d.planner}")
    p.add_argument("--mpc-sigmas", type=_floats, default=d.sigmas,
                   help="knot noise scales, fractions of each actuator's range (default: "
                        f"{','.join(map(str, d.sigmas))})")
    p.add_argument("--mpc-noise-fraction", type=float, default=d.noise_fraction,
                   help=f"fraction of actuators each sample perturbs (default: {d.noise_fraction})")
    p.add_argument("--mpc-effort", type=float, default=c.effort,
                   help=f"cost per rad² of mean squared target change (default: {c.effort})")
    p.add_argument("--mpc-nominal", type=float, default=c.nominal,
                   help="cost per rad² of mean squared distance of the planned targets from "
                        f"the relaxed hand pose (default: {c.nominal})")
    p.add_argument("--mpc-tilt", type=float, default=c.tilt,
                   help=f"cost per rad of the goal's up face off vertical (default: {c.tilt})")
    p.add_argument("--mpc-success", type=float, default=c.success,
                   help="cost bonus for a rollout that reaches the goal at any step of the "
                        f"horizon (the trial's success rule; default: {c.success})")
    p.add_argument("--mpc-plan-timestep", type=float, default=d.plan_timestep,
                   help="the planning model's timestep, s (0 = the sim's; default: "
                        f"{d.plan_timestep})")
    p.add_argument("--mpc-plan-iterations", type=int, default=d.plan_iterations,
                   help="the planning model's solver iterations (0 = the sim's; default: "
                        f"{d.plan_iterations})")
    p.add_argument("--mpc-plan-cone", choices=("", "pyramidal", "elliptic"),
                   default=d.plan_cone, help="the planning model's friction cone ('' = the sim's)")
    p.add_argument("--mpc-student", type=float, default=c.student,
                   help="cost per unit of mean |delta - the student's argmax delta| / max "
                        "delta: ties between near-equal plans go the student's way, so the "
                        "labels become learnable (DAgger iterations after the first; default: "
                        f"{c.student})")


def mpc_config_of(a: argparse.Namespace) -> MPCConfig:
    """The ``MPCConfig`` of parsed ``add_mpc_options`` (validated)."""
    cfg = MPCConfig(n_samples=a.mpc_samples, horizon=a.mpc_horizon, planner=a.mpc_planner,
                    sigmas=a.mpc_sigmas, noise_fraction=a.mpc_noise_fraction,
                    plan_timestep=a.mpc_plan_timestep, plan_iterations=a.mpc_plan_iterations,
                    plan_cone=a.mpc_plan_cone,
                    cost=CostWeights(effort=a.mpc_effort, student=a.mpc_student,
                                     nominal=a.mpc_nominal, tilt=a.mpc_tilt,
                                     success=a.mpc_success))
    cfg.validate()
    return cfg


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers; got {text!r}") from None


def rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector ``v`` [3] by unit quaternions ``q`` [..., 4] (w, x, y, z)."""
    w, u = q[..., :1], q[..., 1:]
    t = 2.0 * np.cross(u, np.broadcast_to(v, u.shape))
    return v + w * t + np.cross(u, t)


def goal_up_axis(goal: np.ndarray) -> np.ndarray:
    """The cube-frame axis that points up (world +z) when the cube is at ``goal``."""
    g = np.asarray(goal, float)
    return rotate(np.array([g[0], -g[1], -g[2], -g[3]]), np.array([0.0, 0.0, 1.0]))


def rotation_angles(q: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Rotation distance (rad) between unit quaternions ``q`` [..., 4] and ``goal`` [4]."""
    dot = np.abs(q @ goal) / np.linalg.norm(q, axis=-1)
    return 2.0 * np.arccos(np.minimum(dot, 1.0))


class SamplingPlanner:
    """Plans the hand's actuator commands for one hand + cube scene (see module docstring)."""

    def __init__(self, spec: HandSpec, model: mujoco.MjModel, actuator_ids: np.ndarray,
                 cube_qpos: int, cube_qvel: int, max_delta: float | None = None, ema: float = EMA,
                 config: MPCConfig | None = None) -> None:
        self.cfg = config if config is not None else MPCConfig()
        self.cfg.validate()
        self.spec = spec
        self.nu_model = model.nu
        self.act_ids = np.asarray(actuator_ids, dtype=np.intp)
        self.n = len(self.act_ids)
        if max_delta is None:  # the hand's action scale
            max_delta = max_delta_of(spec)
        self.max_delta, self.ema = float(max_delta), float(ema)
        self.lower, self.upper = spec.actuator_limits()
        self.rest = np.asarray(spec.cube.rest_pos, float)
        # the trial's success threshold (rad), for the ``success`` cost term; controllers set it
        # from the trial rules they run under
        self.success_threshold = TrialConfig.success_threshold
        self.nominal = default_actuator_targets(spec)
        self.absolute = self.cfg.action_space == "absolute"
        self.destinations = self.cfg.action_space in ("targets", "absolute")  # knots = targets
        # Noise unit per actuator: max_delta (relative) or the actuator's range (targets).
        self._unit = ((self.upper - self.lower) if self.destinations
                      else np.full(len(actuator_ids), float(max_delta)))
        self._cube_qpos, self._cube_qvel = int(cube_qpos), int(cube_qvel)
        self._rng = np.random.default_rng(self.cfg.seed)
        threads = self.cfg.threads or os.cpu_count() or 1
        self._rollout = mujoco.rollout.Rollout(nthread=threads)
        self.threads = threads
        self._interp = _interp_matrix(self.cfg.knots, self.cfg.horizon, self.cfg.interpolation)
        self.set_model(model)
        self.reset()

    # ---- model and state -----------------------------------------------------------------------
    def set_model(self, model: mujoco.MjModel) -> None:
        """Plan with a copy of ``model`` (e.g. the episode's randomized model) at the planning
        timestep; the control period stays the sim's."""
        period = self.spec.control_period
        m = copy.copy(model)
        dt = self.cfg.plan_timestep or model.opt.timestep
        self.substeps = max(1, round(period / dt))
        m.opt.timestep = period / self.substeps
        if self.cfg.plan_iterations:
            m.opt.iterations = self.cfg.plan_iterations
        if self.cfg.plan_cone:
            m.opt.cone = (mujoco.mjtCone.mjCONE_PYRAMIDAL if self.cfg.plan_cone == "pyramidal"
                          else mujoco.mjtCone.mjCONE_ELLIPTIC)
        self.model = m
        self._datas = [mujoco.MjData(m) for _ in range(self.threads)]
        self._nstate = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        # Offsets in the FULLPHYSICS state vector: [time, qpos, qvel, act, ...].
        self._qpos0, self._qvel0 = 1, 1 + m.nq

    def reset(self, seed: int | None = None) -> None:
        """Forget the plan (new episode): the warm start becomes 'hold still'. ``seed``
        (e.g. the episode's) restarts the sampling noise from ``(config seed, seed)``, so an
        episode's plans do not depend on what was planned before it."""
        if seed is not None:
            self._rng = np.random.default_rng([self.cfg.seed, int(seed)])
        self.plan_knots = None if self.destinations else np.zeros((self.cfg.knots, self.n))
        self.last_cost = math.nan
        self.last_plan_s = math.nan
        self.last_samples: tuple[np.ndarray, np.ndarray] | None = None  # (knots, costs)

    # ---- planning ------------------------------------------------------------------------------
    def plan(self, data: mujoco.MjData, targets: np.ndarray, smoothed: np.ndarray,
             goal: np.ndarray, student_delta: np.ndarray | None = None) -> np.ndarray:
        """One MPC step from the state in ``data`` with the decoder's current ``targets`` and
        ``smoothed`` delta: returns the decoder delta [n] (rad) to apply this control step
        (absolute targets for ``action_space="absolute"``). ``student_delta`` [n]: the
        student's action here (rad; "targets" action space): a quarter of the samples start
        with it, and the ``student`` cost term applies."""
        t0 = time.perf_counter()
        cfg = self.cfg
        state = np.empty(self._nstate)
        mujoco.mj_getState(self.model, data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        goal = np.asarray(goal, float) / np.linalg.norm(goal)
        if self.plan_knots is None:  # destinations: start by holding the current targets
            self.plan_knots = np.tile(np.asarray(targets, float), (cfg.knots, 1))
        self._shift()
        mean = self.plan_knots
        sig = np.full((cfg.knots, self.n), 1.0)
        iters = cfg.cem_iterations if cfg.planner == "cem" else 1
        best_knots, best_cost = mean, math.inf
        if self.cfg.action_space != "targets":
            student_delta = None
        for it in range(iters):
            knots = self._sample(mean, sig if cfg.planner == "cem" and it > 0 else None, targets)
            if student_delta is not None:
                # The student's first step: the destination its delta reaches.
                dest = targets + self.ema * smoothed + (1.0 - self.ema) * student_delta
                knots[2 : 2 + max(1, cfg.n_samples // 4), 0] = np.clip(dest, self.lower,
                                                                       self.upper)
            costs = self._evaluate(state, knots, targets, smoothed, goal, data)
            if student_delta is not None and cfg.cost.student:
                deltas = self.delta_towards(np.einsum("k,skn->sn", self._interp[0], knots),
                                            np.asarray(targets, float), np.asarray(smoothed))
                away = np.abs(deltas - student_delta).mean(-1) / self.max_delta
                costs = costs + cfg.cost.student * away
            self.last_samples = (knots, costs)
            order = np.argsort(costs)
            if costs[order[0]] < best_cost:
                best_cost, best_knots = float(costs[order[0]]), knots[order[0]].copy()
            if cfg.planner == "mppi":
                idx, w = elite_weights(costs, len(costs), cfg.cem_elites)
                best_knots = np.einsum("s,skn->kn", w, knots[idx])
            elif cfg.planner == "cem":
                elites = knots[order[: cfg.cem_elites]]
                mean = elites.mean(axis=0)
                sig = np.maximum(elites.std(axis=0) / self._unit, 0.05)
        self.plan_knots = best_knots
        self.last_cost = best_cost
        self.last_plan_s = time.perf_counter() - t0
        first = self._interp[0] @ best_knots
        if self.cfg.action_space == "targets":
            return self.delta_towards(first, np.asarray(targets, float), np.asarray(smoothed))
        return first.copy()  # a delta (relative), or targets (absolute)

    def elite_deltas(self, targets: np.ndarray, smoothed: np.ndarray,
                     elites: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first-step decoder deltas [k, n] of the last plan's ``elites`` best samples
        (default ``cem_elites``) and their weights [k] (sum 1): ``exp(-(cost - best) / tau)``
        with ``tau`` the cost gap to the k-th best, so the weights do not depend on the cost's
        scale. Many plans are near-equally good; this is the teacher's action *distribution*
        over them, a steadier thing to imitate than the single best sample. (Call after
        ``plan`` with the ``targets`` and ``smoothed`` it was given; ``targets`` action space.)"""
        knots, costs = self.last_samples
        k = min(elites or self.cfg.cem_elites, len(costs))
        order, w = elite_weights(costs, k, k)
        first = np.einsum("k,skn->sn", self._interp[0], knots[order])
        return self.delta_towards(first, np.asarray(targets, float), np.asarray(smoothed)), w

    def delta_towards(self, destination: np.ndarray, targets: np.ndarray,
                      smoothed: np.ndarray) -> np.ndarray:
        """The decoder delta (within ±max_delta) whose EMA step moves ``targets`` as close to
        ``destination`` as one control step allows (any leading shape)."""
        d = (destination - targets - self.ema * smoothed) / (1.0 - self.ema)
        return np.clip(d, -self.max_delta, self.max_delta)

    def _shift(self) -> None:
        """Warm start: the plan one control step later (last knot held)."""
        k, h = self.cfg.knots, self.cfg.horizon
        if k == 1:
            return
        steps = self._interp @ self.plan_knots  # [H, n]
        # Knot times in control steps, shifted by one; resample the old plan there.
        times = np.linspace(0, h - 1, k) + 1.0
        idx = np.clip(times, 0, h - 1)
        lo = np.floor(idx).astype(int)
        hi = np.minimum(lo + 1, h - 1)
        w = (idx - lo)[:, None]
        self.plan_knots = (1 - w) * steps[lo] + w * steps[hi]

    def _sample(self, mean: np.ndarray, sig: np.ndarray | None,
                targets: np.ndarray) -> np.ndarray:
        """[N, knots, n] candidate knots: 0 = mean, 1 = hold, rest mean + noise (clipped)."""
        cfg, n_s = self.cfg, self.cfg.n_samples
        noise = self._rng.standard_normal((n_s, cfg.knots, self.n))
        if sig is None:  # sample groups at the configured scales
            scales = np.repeat(np.asarray(cfg.sigmas), math.ceil(n_s / len(cfg.sigmas)))[:n_s]
            noise *= scales[:, None, None]
        else:
            noise *= sig[None]
        if cfg.noise_fraction < 1:
            noise *= (self._rng.random((n_s, 1, self.n)) < cfg.noise_fraction)
        knots = mean[None] + noise * self._unit
        knots[0] = mean
        if self.destinations:
            knots[1] = targets
            np.clip(knots, self.lower, self.upper, out=knots)
        else:
            knots[1] = 0.0
            np.clip(knots, -self.max_delta, self.max_delta, out=knots)
        return knots

    def targets_of(self, knots: np.ndarray, targets: np.ndarray,
                   smoothed: np.ndarray) -> np.ndarray:
        """Absolute targets [N, H, n] the decoder would produce from knot plans [N, K, n]
        (absolute plans: the interpolated knots themselves)."""
        steps = np.einsum("hk,skn->shn", self._interp, knots)
        if self.absolute:
            return steps
        out = np.empty_like(steps)
        s = np.broadcast_to(smoothed, steps[:, 0].shape).copy()
        t = np.broadcast_to(targets, steps[:, 0].shape).copy()
        for h in range(steps.shape[1]):
            d = self.delta_towards(steps[:, h], t, s) if self.destinations else steps[:, h]
            s *= self.ema
            s += (1.0 - self.ema) * d
            t += s
            np.maximum(t, self.lower, out=t)
            np.minimum(t, self.upper, out=t)
            out[:, h] = t
        return out

    def rollout_ends(self, state: np.ndarray, tg: np.ndarray, ctrl: np.ndarray,
                     warmstart: np.ndarray | None = None) -> np.ndarray:
        """Roll target plans [N, H, n] (``targets_of``) out from a FULLPHYSICS ``state`` (other
        actuators keep ``ctrl``; ``warmstart``: the solver's qacc_warmstart, as the sim has it);
        returns the states at the end of each control step [N, H, nstate]."""
        n_s, h, sub = tg.shape[0], self.cfg.horizon, self.substeps
        full = np.broadcast_to(np.asarray(ctrl, float), (n_s, h, self.nu_model)).copy()
        full[:, :, self.act_ids] = tg
        full = np.repeat(full, sub, axis=1)  # [N, H*sub, nu]: targets held a control period
        ws = None if warmstart is None else np.asarray(warmstart, float)[None]
        states, _ = self._rollout.rollout(self.model, self._datas, state[None], full,
                                          initial_warmstart=ws)
        return states[:, sub - 1 :: sub]

    def cube_of(self, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cube position [..., 3], quaternion [..., 4] and linear velocity [..., 3] of states."""
        a = self._qpos0 + self._cube_qpos
        v = self._qvel0 + self._cube_qvel
        return ends[..., a : a + 3], ends[..., a + 3 : a + 7], ends[..., v : v + 3]

    def costs(self, ends: np.ndarray, knots: np.ndarray, goal: np.ndarray,
              moves: np.ndarray | None = None, targets: np.ndarray | None = None,
              start_angle: float = math.inf) -> np.ndarray:
        """Cost [N] of each rollout (``CostWeights``; ``moves`` [N, H, n]: the per-step
        changes of the targets, for the effort term; ``targets`` [N, H, n]: the planned
        targets, for the nominal-pose term; ``start_angle``: the cube's rotation to the goal
        where the plans start); NaN rollouts cost inf."""
        c = self.cfg.cost
        pos, quat, lin = self.cube_of(ends)
        rot = rotation_angles(quat, goal)
        dist = np.linalg.norm(pos - self.rest, axis=-1)
        pos_cost = np.maximum(dist - c.position_deadzone, 0.0)
        fall = np.maximum((self.rest[2] - c.fall_margin) - pos[..., 2], 0.0)
        speed = np.linalg.norm(lin, axis=-1)
        orient = c.rotation * rot
        if c.tilt:
            qn = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
            up = rotate(qn, goal_up_axis(goal))[..., 2]
            orient = orient + c.tilt * np.arccos(np.clip(up, -1.0, 1.0))
        bonus = 0.0
        success_at = self.success_threshold - c.success_margin
        # Only for plans that start short of the goal: one that starts "there" has a cube the
        # judge does not see there (an estimate, a model error), so it keeps the plain cost,
        # which still pulls it closer.
        if c.success and start_angle >= success_at:
            hit = rot < success_at  # [N, H]
            reached = hit.any(axis=1)
            h = rot.shape[1]
            first = np.where(reached, hit.argmax(axis=1), h - 1)
            # after the first success the orientation cost keeps that step's value
            orient = np.take_along_axis(
                orient, np.minimum(np.arange(h)[None], first[:, None]), axis=1)
            bonus = c.success * reached * (1.0 - 0.5 * first / max(h - 1, 1))
        per_step = orient + c.position * pos_cost + c.fall * fall + c.velocity * speed
        total = per_step.mean(axis=1) + c.terminal * per_step[:, -1] - bonus
        if c.effort:
            steps = knots if moves is None or not self.destinations else moves
            total += c.effort * np.mean(steps ** 2, axis=(1, 2))
        if c.nominal and targets is not None:
            total += c.nominal * np.mean((targets - self.nominal) ** 2, axis=(1, 2))
        # A rollout that went unstable (NaN) is never chosen.
        return np.where(np.isfinite(total), total, np.inf)

    def _evaluate(self, state: np.ndarray, knots: np.ndarray, targets: np.ndarray,
                  smoothed: np.ndarray, goal: np.ndarray, data: mujoco.MjData) -> np.ndarray:
        tg = self.targets_of(knots, targets, smoothed)  # [N, H, n]
        ends = self.rollout_ends(state, tg, data.ctrl, data.qacc_warmstart)
        start = np.broadcast_to(np.asarray(targets, float), tg[:, :1].shape)
        angle = float(rotation_angles(self.cube_of(state)[1], goal))
        return self.costs(ends, knots, goal, np.diff(tg, axis=1, prepend=start), tg, angle)

    def close(self) -> None:
        self._rollout.close()


def elite_weights(costs: np.ndarray, k: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` lowest-cost sample indices and their weights (sum 1):
    ``exp(-(cost - best) / tau)`` with ``tau`` the cost gap from the best to the ``rank``-th
    best, so the weights do not depend on the cost's scale. Infinite costs weigh 0."""
    order = np.argsort(costs)
    c = costs[order]
    finite = np.isfinite(c)
    if not finite.any():
        return order[:k], np.full(k, 1.0 / k)
    ref = c[min(rank, int(finite.sum())) - 1]
    tau = max(float(ref - c[0]), 1e-9)
    w = np.where(finite, np.exp(-(c - c[0]) / tau), 0.0)[:k]
    return order[:k], w / w.sum()


def _interp_matrix(knots: int, horizon: int, mode: str) -> np.ndarray:
    """[horizon, knots] weights: per-control-step deltas = W @ knot values."""
    w = np.zeros((horizon, knots))
    if knots == 1:
        w[:, 0] = 1.0
        return w
    times = np.linspace(0, horizon - 1, knots)
    for h in range(horizon):
        if mode == "zero":
            w[h, int(np.searchsorted(times, h, side="right") - 1)] = 1.0
        else:
            j = min(int(np.searchsorted(times, h, side="right") - 1), knots - 2)
            f = (h - times[j]) / (times[j + 1] - times[j])
            w[h, j], w[h, j + 1] = 1.0 - f, f
    return w
