"""ADR inside PPO training: ranges move and are logged, the ADR state survives checkpoint/resume,
and every env episode is drawn from the ranges ADR handed it (reset hook)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dex_common.contract import read_contract
from dex_policy import train
from dex_policy.ppo import PPOConfig, PPOTrainer
from dex_sim.env import TaskConfig, VecDexCubeEnv

# Short goal timeout: episodes end every 5 steps. t_high 0 / queue 1: every boundary result is a
# decision to widen, so ranges move within the first iteration.
ADR_ARGS = ["--envs", "2", "--rollout", "20", "--dense", "32", "--lstm", "16",
            "--goal-timeout", "0.4", "--adr", "--adr-t-high", "0", "--adr-t-low", "-1",
            "--adr-queue", "1", "--adr-boundary-fraction", "0.5", "--seed", "5"]


def _cfg(**kw: object) -> PPOConfig:
    base = dict(n_envs=2, rollout_steps=20, dense=32, lstm_hidden=16, goal_timeout_s=0.4,
                adr=True, adr_t_high=0.0, adr_t_low=-1.0, adr_queue=1,
                adr_boundary_fraction=0.5, seed=5)
    return PPOConfig(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def adr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adr")
    assert train.main(["--steps", "80", "--out", str(out), "--eval-trials", "0",
                       *ADR_ARGS]) == 0
    return out


def test_adr_run_widens_ranges_and_logs_entropy(adr_run: Path) -> None:
    log = [json.loads(line) for line in (adr_run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2]
    collapsed = math.log(1e-6)  # entropy floor: every range starts collapsed at nominal
    assert all("adr_entropy" in r and "adr_n_active" in r for r in log)
    assert log[0]["adr_episodes"] > 0 and log[0]["adr_decisions"] > 0
    assert log[-1]["adr_expansions"] > 0 and log[-1]["adr_shrinks"] == 0
    assert collapsed < log[0]["adr_entropy"] <= log[-1]["adr_entropy"]
    assert log[-1]["adr_n_active"] >= 1
    tr = PPOTrainer.load(adr_run / "checkpoint.pt")
    widths = {n: hi - lo for n, (lo, hi) in tr.adr.ranges().items()}
    assert sum(w > 0 for w in widths.values()) == log[-1]["adr_n_active"]
    # The exported contract says how the policy was trained.
    ev = json.loads(read_contract(adr_run / "policy_dex_shadow.onnx")["dex.eval"])
    assert ev["train_adr"] is True and ev["train_randomize"] is True
    assert ev["adr_entropy"] == pytest.approx(log[-1]["adr_entropy"])
    assert json.loads((adr_run / "adr_state.json").read_text()) == json.loads(
        json.dumps(tr.adr.state_dict()))


def test_checkpoint_restores_adr_exactly_and_resume_continues(adr_run: Path,
                                                              tmp_path: Path) -> None:
    tr = PPOTrainer(_cfg())
    tr.iterate()
    ck = tmp_path / "ck.pt"
    tr.save(ck)
    back = PPOTrainer.load(ck)
    assert back.adr.state_dict() == tr.adr.state_dict()
    assert back.adr_rng.bit_generator.state == tr.adr_rng.bit_generator.state
    # Same state + same rng: the next ADR decisions and assignments are identical.
    for i, s in [(0, 0.0), (1, 0.0), (0, 3.0)]:
        r1, b1, d1 = tr.adr.advance(i, tr.adr_rng, s)
        r2, b2, d2 = back.adr.advance(i, back.adr_rng, s)
        assert (r1, b1, d1) == (r2, b2, d2)
    # A run without ADR has none (and its checkpoint loads without one).
    plain = PPOTrainer(_cfg(adr=False))
    plain.save(tmp_path / "plain.pt")
    assert PPOTrainer.load(tmp_path / "plain.pt").adr is None

    # CLI resume continues from the saved ADR state instead of restarting it.
    import shutil

    run = tmp_path / "run"
    shutil.copytree(adr_run, run)
    before = PPOTrainer.load(run / "checkpoint.pt").adr.stats()
    assert train.main(["--steps", "120", "--out", str(run), "--resume",
                       "--eval-trials", "0"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert log[-1]["adr_episodes"] > before["adr_episodes"]
    assert log[-1]["adr_expansions"] >= before["adr_expansions"]
    assert log[-1]["adr_entropy"] >= before["adr_entropy"]


def test_episodes_are_drawn_from_the_adr_ranges(adr_run: Path) -> None:
    tr = PPOTrainer.load(adr_run / "checkpoint.pt")
    adr = tr.adr
    tr._start_envs()  # every env resets through the hook; nothing is decided in between
    wide = {n for n, (lo, hi) in adr.ranges().items() if hi > lo}
    assert wide, "the run should have widened at least one range"
    for i, env in enumerate(tr.envs.envs):
        b = adr._pending[i]
        assert (b is not None) == adr.is_boundary_slot(i)
        want = adr.adr.pinned_ranges(b)
        draw = env.last_draw
        assert draw.ranges == want
        for name, (lo, hi) in want.items():
            v = np.atleast_1d(np.asarray(draw[name], float))
            assert np.all(v >= lo - 1e-9 * max(1.0, abs(lo))), (name, v, lo)
            assert np.all(v <= hi + 1e-9 * max(1.0, abs(hi))), (name, v, hi)
        if b is not None:  # the pinned boundary value itself is applied
            np.testing.assert_allclose(draw[b.name], adr.adr.value(b), rtol=1e-9)
    # Free slots sample across a widened range (not stuck at the nominal).
    free = [e for i, e in enumerate(tr.envs.envs) if not adr.is_boundary_slot(i)]
    name = sorted(wide)[0]
    nominal = {p.name: p.nominal for p in adr.adr.params}[name]
    assert any(np.any(np.asarray(e.last_draw[name]) != nominal) for e in free)


def test_reset_hook_sees_finished_episodes_and_sets_options() -> None:
    seen: list[tuple[int, dict | None]] = []
    pinned = {"friction_scale": (1.3, 1.3)}

    def hook(i: int, finished: dict | None) -> dict:
        seen.append((i, finished))
        return {"ranges": pinned}

    venv = VecDexCubeEnv(2, seed=1, task=TaskConfig(goal_timeout_s=0.24, randomize=True),
                         reset_hook=hook)
    venv.reset()
    assert [(i, f) for i, f in seen] == [(0, None), (1, None)]
    for _ in range(4):
        venv.step(np.full((2, venv.envs[0].n_actuators), 5))
    finished = [f for _, f in seen[2:]]
    assert finished and all(f is not None and "successes" in f and f["final"] for f in finished)
    for env in venv.envs:
        np.testing.assert_allclose(env.last_draw["friction_scale"], 1.3)
    venv.close()


def test_static_randomize_without_adr_and_stable_config_hash() -> None:
    tr = PPOTrainer(_cfg(adr=False, randomize=True))
    assert tr.adr is None and tr.task.enabled
    tr._start_envs()
    for env in tr.envs.envs:
        assert env.randomizer is not None and env.last_draw.ranges == {}  # Dactyl's ranges
    tr.envs.close()
    # Fields added later (task, randomization, threads) at their defaults leave an older
    # config's hash unchanged.
    import hashlib
    from dataclasses import asdict

    old = {k: v for k, v in asdict(PPOConfig()).items()
           if k not in ("goal_timeout_s", "max_delta", "randomize", "adr", "adr_t_high", "adr_t_low",
                        "adr_queue", "adr_boundary_fraction", "update_threads", "overlap",
                        "update_precision")}
    want = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert PPOConfig().hash() == want
    assert PPOConfig(adr=True).hash() != want
    with pytest.raises(ValueError, match="t_low < adr_t_high"):
        PPOTrainer(_cfg(adr_t_low=1.0, adr_t_high=0.0))
