"""dex_policy: nets, a tiny real PPO run + ONNX export, ORT == torch, the contract, the runtime."""

import json
import warnings

import numpy as np
import onnx
import pytest
import torch

from dex_common.config_cli import this_machine
from dex_common.contract import ModelContractError, read_contract
from dex_common.observations import POLICY_OBS_LAYOUT
from dex_description.registry import get_hand
from dex_policy import evaluate, train
from dex_policy.export import check_ort_matches_torch, write_metadata
from dex_policy.net import PolicyNet, ValueNet
from dex_policy.ppo import PPOConfig, PPOTrainer
from dex_policy.runtime import PolicyRuntime, default_model_path
from dex_sim.env import DexCubeEnv

SPEC = get_hand("shadow")


def test_net_shapes_and_state_reset():
    torch.manual_seed(0)
    p = PolicyNet(22, SPEC.n_actuators, 11)
    v = ValueNet(84)
    obs = torch.randn(3, 22)
    flat, (h, c) = p.step(obs, p.initial_state(3))
    assert p.logits(flat).shape == (3, 20, 11) and h.shape == c.shape == (1, 3, 512)
    val, _ = v.step(torch.randn(3, 84), v.initial_state(3))
    assert val.shape == (3, 1)
    # sequence(): a start flag zeroes the carried state, so step t=2 with starts[2]=1 equals a
    # fresh first step on the same input.
    x = torch.randn(4, 2, 22)
    starts = torch.zeros(4, 2)
    starts[2, 0] = 1.0
    out = p.sequence(x, p.initial_state(2), starts)
    fresh, _ = p.step(x[2], p.initial_state(2))
    assert out.shape == (4, 2, 220)
    torch.testing.assert_close(out[2, 0], fresh[0])
    assert not torch.allclose(out[2, 1], fresh[1])  # env 1 carried its state


def test_fused_sequence_equals_stepping_with_resets_inside():
    """``sequence`` runs the LSTM fused between episode starts; stepping one at a time (what the
    node and the rollouts do) must give the same outputs, with starts mid-chunk for some envs."""
    torch.manual_seed(0)
    net = PolicyNet(19, 16, 11, dense=64, hidden=32)
    x = torch.randn(12, 3, 19)
    starts = torch.zeros(12, 3)
    starts[0, :] = 1.0
    starts[5, 1] = 1.0
    starts[9, 0] = starts[9, 2] = 1.0
    h = (torch.randn(1, 3, 32), torch.randn(1, 3, 32))
    fused = net.sequence(x, h, starts)
    state, outs = h, []
    for t in range(12):
        keep = (1.0 - starts[t]).view(1, -1, 1)
        out, state = net.step(x[t], (state[0] * keep, state[1] * keep))
        outs.append(out)
    assert torch.allclose(fused, torch.stack(outs), atol=1e-6)
    # and the reset matters: without it env 1's output after t = 5 differs
    no_mid = starts.clone()
    no_mid[5, 1] = 0.0
    assert not torch.allclose(net.sequence(x, h, no_mid)[5:, 1], fused[5:, 1], atol=1e-4)


def test_running_norm_matches_numpy():
    p = PolicyNet(22, 20, 11)
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 22)).astype(np.float32)
    p.norm.update(torch.from_numpy(data[:200]))
    p.norm.update(torch.from_numpy(data[200:]))
    np.testing.assert_allclose(p.norm.mean.numpy(), data.mean(0), atol=1e-3)
    np.testing.assert_allclose(p.norm.var.numpy(), data.var(0), rtol=1e-3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two PPO iterations of a small net (same code path as the default model), exported."""
    out = tmp_path_factory.mktemp("ppo")
    args = ["--steps", "80", "--out", str(out), "--envs", "2", "--rollout", "20",
            "--dense", "64", "--lstm", "32", "--eval-trials", "1", "--seed", "3"]
    assert train.main(args) == 0
    return out, args


def test_tiny_ppo_run_exports_with_contract(tiny_run):
    out, args = tiny_run
    model = out / "policy_dex_shadow.onnx"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2] and log[-1]["total_steps"] == 80
    # The update of a batch runs beside the next rollout: the first iteration updates nothing.
    assert np.isnan(log[0]["pi_loss"])
    assert all(np.isfinite(r["pi_loss"]) and np.isfinite(r["v_loss"]) for r in log[1:])
    meta = read_contract(model)
    assert meta["dex.kind"] == "policy" and meta["dex.hand"] == SPEC.name
    assert meta["dex.hand_facts_hash"] == SPEC.facts_hash()
    assert json.loads(meta["dex.obs_layout"]) == [[n, s] for n, s in POLICY_OBS_LAYOUT]
    assert meta["dex.obs_norm"] == "in_graph" and meta["dex.lstm_hidden"] == "32"
    assert json.loads(meta["dex.action"])["actuators"] == SPEC.actuator_names
    assert json.loads(meta["dex.action"])["max_delta"] == 0.3  # Shadow's own action scale
    assert float(meta["dex.control_period_s"]) == SPEC.control_period
    assert meta["dex.producer"] == "dex-policy-train " + " ".join(args)
    assert meta["dex.compute"] == this_machine() and meta["dex.compute"].startswith("cpu x")
    ev = json.loads(meta["dex.eval"])
    assert ev["trials"] == 1 and ev["train_steps"] == 80
    g = onnx.load(str(model)).graph
    assert [i.name for i in g.input] == ["obs", "h_in", "c_in"]
    assert [o.name for o in g.output] == ["logits", "h_out", "c_out"]
    # Input normalisation is in the graph: the running mean is a constant in the file.
    trainer = PPOTrainer.load(out / "checkpoint.pt")
    assert trainer.policy.norm.count > 1  # statistics were updated from rollouts
    # ORT (batch 3, three recurrent steps) == torch, for the trained weights.
    assert check_ort_matches_torch(trainer.policy, model, batch=3) < 1e-4


def test_resume_continues(tiny_run, tmp_path):
    out, _ = tiny_run
    import shutil

    run = tmp_path / "run"
    shutil.copytree(out, run)
    assert train.main(["--steps", "120", "--out", str(run), "--resume",
                       "--eval-trials", "0"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3] and log[-1]["total_steps"] == 120
    # A checkpoint from before the per-hand action scale resumes at the 0.15 it trained with.
    from dex_common.checkpoints import load_checkpoint, save_checkpoint

    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["config"]["max_delta"] == 0.0  # 0 = the hand's
    del ck["config"]["max_delta"]
    save_checkpoint(ck, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="fresh episodes"):  # its saved episodes ran at 0.3
        old = PPOTrainer.load(tmp_path / "old.pt")
    assert old.cfg.max_delta == old.task.max_delta == 0.15


def test_contract_mismatch_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((out / "policy_dex_shadow.onnx").read_bytes())
    write_metadata(bad, {"dex.control_period_s": "0.05", "dex.hand_facts_hash": "deadbeef",
                         "dex.obs_layout": json.dumps([["fingertip_pos", 15]])})
    with pytest.raises(ModelContractError) as e:
        PolicyRuntime(bad, "shadow")
    msg = str(e.value)
    assert "control period" in msg and "hand facts hash" in msg and "obs layout" in msg
    assert "3 problem" in msg
    # The good model refuses another control period too.
    with pytest.raises(ModelContractError, match="control period"):
        PolicyRuntime(out / "policy_dex_shadow.onnx", "shadow", control_period=0.05)
    with pytest.raises(ModelContractError, match="not found"):
        PolicyRuntime(tmp_path / "missing.onnx", "shadow")


def test_runtime_state_and_decoding(tiny_run):
    out, _ = tiny_run
    rt = PolicyRuntime(out / "policy_dex_shadow.onnx", "shadow")
    env = DexCubeEnv(seed=0)
    obs, _ = env.reset(seed=4)
    start = env.current_actuator_positions()
    rt.reset(start)
    l1 = rt.logits(obs).copy()
    l2 = rt.logits(obs).copy()
    assert l1.shape == (20, 11)
    assert not np.allclose(l1, l2)  # the LSTM state carried across steps
    rt.reset(start)
    np.testing.assert_allclose(rt.logits(obs), l1, atol=1e-6)  # reset zeroes the state
    rt.reset(start)
    targets = rt.act(obs)
    lo, hi = SPEC.actuator_limits()
    assert targets.shape == (20,) and np.all(targets >= lo) and np.all(targets <= hi)
    # Relative decoding: each target moved by at most (1 - ema) * max_delta from the start.
    assert np.all(np.abs(targets - np.clip(start, lo, hi)) <= 0.7 * 0.15 + 1e-9)
    assert rt.infer_stats.count == 4
    with pytest.raises(ValueError):
        rt.act(np.full(22, np.nan, np.float32))


def test_evaluate_cli(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    js = tmp_path / "eval.json"
    assert evaluate.main(["--model", str(out / "policy_dex_shadow.onnx"), "--trials", "2",
                          "--seed", "5", "--json", str(js)]) == 0
    res = json.loads(js.read_text())
    assert [r["seed"] for r in res["rows"]] == [5, 6]
    assert all(r["end_reason"] in ("dropped", "timeout", "completed") for r in res["rows"])
    assert res["summary"]["trials"] == 2 and len(res["model_sha256"]) == 64
    table = capsys.readouterr().out
    assert "consecutive successes: mean" in table and "end reason" in table
    # Two Ray workers (a local runtime) run the same seeded trials: the same rows.
    js2 = tmp_path / "eval2.json"
    assert evaluate.main(["--model", str(out / "policy_dex_shadow.onnx"), "--trials", "2",
                          "--seed", "5", "--json", str(js2), "--workers", "2"]) == 0
    res2 = json.loads(js2.read_text())
    assert res2["rows"] == res["rows"] and res2["workers"] == 2
    assert res2["decision_time"]["p50_ms"] > 0
    # A model with a broken contract: a clear error and exit status 2, no traceback.
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((out / "policy_dex_shadow.onnx").read_bytes())
    write_metadata(bad, {"dex.kind": "pose"})
    assert evaluate.main(["--model", str(bad), "--trials", "1", "--json", str(js)]) == 2
    assert "kind" in capsys.readouterr().err


def test_default_model_loads_and_acts():
    path = default_model_path("shadow")
    assert path.is_file(), f"default model missing: {path}"
    assert path.name == "policy_dex_shadow.onnx"
    rt = PolicyRuntime(path, "shadow", SPEC.control_period)
    assert rt.hidden == 512 and rt.meta["dex.kind"] == "policy"
    assert json.loads(rt.meta["dex.eval"]).get("trials", 0) >= 1
    rt.reset(np.zeros(20))
    assert rt.act(np.zeros(22, np.float32)).shape == (20,)


def test_cli_options_take_their_defaults_from_the_configs():
    """dex-policy-train / dex-policy-dagger options are derived from PPOConfig / DaggerConfig:
    parsing no options gives the dataclass defaults; an option changes only its field."""
    import argparse
    import dataclasses

    from dex_common.config_cli import add_config_options, config_kwargs
    from dex_policy.dagger import DAGGER_OPTIONS, DaggerConfig
    from dex_policy.ppo import PPOConfig
    from dex_policy.train import TRAIN_OPTIONS

    for cls, options, argv, changed in (
            (PPOConfig, TRAIN_OPTIONS, ["--envs", "7", "--adr"], {"n_envs": 7, "adr": True}),
            (DaggerConfig, DAGGER_OPTIONS, ["--episode-steps", "300", "--randomize"],
             {"episode_steps": 300, "randomize": True})):
        p = argparse.ArgumentParser()
        add_config_options(p, cls, options)
        assert cls(**config_kwargs(p.parse_args([]), options)) == cls()
        assert cls(**config_kwargs(p.parse_args(argv), options)) == dataclasses.replace(
            cls(), **changed)

    @dataclasses.dataclass
    class Toy:
        flag: bool = True
        rate: float = 0.5

    with pytest.raises(KeyError, match="no field 'nope'"):
        add_config_options(argparse.ArgumentParser(), Toy, {"nope": ("--nope", "")})
    with pytest.raises(ValueError, match="must default to False"):
        add_config_options(argparse.ArgumentParser(), Toy, {"flag": ("--flag", "")})


def test_ppo_benchmark_measures_against_the_bare_env(tmp_path, capsys):
    from dex_policy import bench_ppo

    js = tmp_path / "bench.json"
    assert bench_ppo.main(["--hand", "leap", "--envs", "2", "--iterations", "1",
                           "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["bare_env_steps_per_s"] > 0 and 0 < r["ppo_steps_per_s"]
    # An iteration is its rollout plus the update: never faster than the rollout alone.
    assert r["ppo_steps_per_s"] <= r["ppo_rollout_steps_per_s"]
    assert abs(r["ppo_vs_bare"] - r["ppo_steps_per_s"] / r["bare_env_steps_per_s"]) < 2e-3
    assert "x bare" in capsys.readouterr().out


@pytest.mark.parametrize(("adr", "overlap"), [(False, True), (True, True), (False, False)],
                         ids=["randomized", "adr", "sequential"])
def test_a_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, adr, overlap):
    """Killed after an iteration and resumed from its checkpoint, training continues with the
    same episodes (mid-episode envs, randomization draws, ADR, every RNG) and ends with the
    same weights, bit for bit. Goals time out after ~7 steps, so episodes end and restart
    inside the 20-step rollouts and the checkpoint catches envs mid-episode. With ``overlap``
    the checkpoint also carries the batch whose update runs beside the next rollout."""
    cfg = PPOConfig(hand="leap", n_envs=2, rollout_steps=20, dense=32, lstm_hidden=16,
                    seed=11, goal_timeout_s=0.56, randomize=True, adr=adr, adr_queue=2,
                    update_threads=1, overlap=overlap)
    straight = PPOTrainer(cfg)
    logs = [straight.iterate() for _ in range(3)]
    first = PPOTrainer(cfg)
    first.iterate()
    assert any(m["actions"] for m in first.envs.state_dict()["members"])  # mid-episode
    first.save(tmp_path / "ck.pt")
    del first
    resumed = PPOTrainer.load(tmp_path / "ck.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to fresh episodes
        later = [resumed.iterate() for _ in range(2)]
    assert [r["episodes"] for r in later] == [r["episodes"] for r in logs[1:]]
    assert [r["mean_reward"] for r in later] == [r["mean_reward"] for r in logs[1:]]
    for name in ("policy", "value"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"
    np.testing.assert_array_equal(straight.obs, resumed.obs)
    if adr:
        assert straight.adr.state_dict() == resumed.adr.state_dict()


def test_cell_step_is_the_lstm_step_and_a_bf16_update_tracks_fp32():
    """The rollout's written-out LSTM cell equals nn.LSTM's step (the exported graph); an
    update in bf16 gives the fp32 update's losses within bf16 rounding, and the first
    iteration's importance ratios stay near 1 (the rollout acted in fp32). With ``overlap``
    the first iteration updates nothing (nan statistics) and the second updates the first
    batch while collecting its own."""
    torch.manual_seed(0)
    for net in (PolicyNet(19, 16, 11, dense=64, hidden=32), ValueNet(50, dense=64, hidden=32)):
        x = torch.randn(5, net.dense.in_features)
        state = (torch.randn(1, 5, 32), torch.randn(1, 5, 32))
        a, (ha, ca) = net.step(x, state)
        b, (hb, cb) = net.cell_step(x, state)
        for u, w in ((a, b), (ha, hb), (ca, cb)):
            torch.testing.assert_close(u, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="update_precision"):
        PPOConfig(update_precision="fp16").validate()
    stats = {}
    for prec in ("fp32", "bf16"):
        tr = PPOTrainer(PPOConfig(hand="leap", n_envs=2, rollout_steps=20, dense=64,
                                  lstm_hidden=32, seed=5, update_precision=prec, epochs=1))
        first = tr.iterate()
        assert np.isnan(first["pi_loss"]) and first["iteration"] == 1
        stats[prec] = tr.iterate()
        assert tr.bf16 == (prec == "bf16") and stats[prec]["iteration"] == 2
    for k in ("pi_loss", "v_loss", "entropy"):
        assert stats["bf16"][k] == pytest.approx(stats["fp32"][k], rel=0.05, abs=2e-3), k
    assert stats["bf16"]["approx_kl"] < 0.01 and stats["fp32"]["approx_kl"] < 0.01
