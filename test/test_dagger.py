"""DAgger teacher → student: labels, shards, resume, the student learning the teacher's bins, and
an exported student that the node's runtime loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dex_common.actions import soft_labels
from dex_policy import dagger
from dex_policy.evaluate import evaluate
from dex_policy.mpc import CostWeights, MPCConfig


def test_soft_labels_split_between_the_two_nearest_bins() -> None:
    d = np.array([-0.15, 0.0, 0.015, 0.15, 0.4])
    y = soft_labels(d, 11, 0.15)
    np.testing.assert_allclose(y.sum(-1), 1.0)
    assert y[0, 0] == 1.0 and y[1, 5] == 1.0 and y[3, 10] == 1.0 and y[4, 10] == 1.0
    np.testing.assert_allclose(y[2, 5:7], [0.5, 0.5])  # halfway between bins 5 and 6
    # The mean bin under the soft label is the continuous delta.
    np.testing.assert_allclose((y * np.linspace(-0.15, 0.15, 11)).sum(-1)[:4], d[:4], atol=1e-7)


def _cfg(**kw) -> dagger.DaggerConfig:
    base = dict(hand="leap", iterations=2, episodes=2, episode_steps=4, updates=4, batch=2, window=4,
                mpc=MPCConfig(n_samples=6, horizon=4, knots=2, threads=1))
    return dagger.DaggerConfig(**{**base, **kw})


def test_run_collects_shards_trains_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # The student term on: iteration 1's teacher plans with the student's log-probabilities.
    cfg = _cfg(eval_trials=2, eval_steps=3,
               mpc=MPCConfig(n_samples=6, horizon=4, knots=2, threads=1,
                             cost=CostWeights(student=0.5)))
    res = dagger.run(out, cfg, progress=False)
    assert res["stopped"] == "done" and res["iteration"] == 1
    shards = sorted(p.name for p in (out / "shards").glob("*.npz"))
    assert shards == ["it000_ep000.npz", "it000_ep001.npz", "it001_ep000.npz", "it001_ep001.npz"]
    eps, held = dagger.load_shards(out)
    assert held == []  # only every tenth episode (ep..9) is held out
    assert all(e["by_teacher"].all() for e in eps[:2])  # iteration 0: pure cloning
    assert all(e["obs"].shape == (4, eps[0]["obs"].shape[1]) for e in eps)
    assert all(np.all(np.abs(e["deltas"]) <= 0.15 + 1e-6) for e in eps)
    for e in eps:  # the elite distribution sums to 1 and includes the executed (best) bin
        p = e["label_probs"].astype(np.float64)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=3e-3)
        executed = np.take_along_axis(p, e["bins"][..., None].astype(np.int64), -1)
        assert (executed > 0).all()
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [0, 1] and lines[1]["labels"] == 16
    assert lines[1]["student_step_fraction"] > 0  # beta 0.5: the student acted sometimes
    # Each iteration ends with the student driving alone on 2 unseen seeds, 3 steps each.
    assert all(len(r["student_eval"]["sorted"]) == 2 for r in lines)

    # A run killed after collecting part of an iteration resumes with only what is missing.
    (out / "shards" / "it001_ep001.npz").unlink()
    ck = (out / "student.pt").read_bytes()
    with pytest.raises(ValueError, match="another config"):
        dagger.run(out, _cfg(updates=3), resume=True, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npz")}
    res = dagger.run(out, cfg, resume=True, progress=False)
    # iteration 1 was complete in the checkpoint: nothing to do; the deleted shard is not needed
    assert res["stopped"] == "done" and (out / "student.pt").read_bytes() == ck
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npz")} == before


def test_student_learns_the_teachers_bins_and_exports(tmp_path: Path) -> None:
    # Cloning on a fixed set of labelled steps drives the loss down and the bin accuracy up
    # (the student can represent the teacher); the export loads in the node's runtime.
    out = tmp_path / "run"
    cfg = _cfg(iterations=1, episodes=2, episode_steps=6, updates=1,
               window=6)
    dagger.run(out, cfg, progress=False)
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    res = dagger.run(tmp_path / "run2", _cfg(iterations=1, episodes=2, episode_steps=6,
                                             updates=60, window=6, elite_labels=False),
                     progress=False)
    assert res["loss"] < first["loss"] - 0.5 and res["bin_accuracy"] > 0.6, (first, res)
    onnx = tmp_path / "student.onnx"
    diff = dagger.export_student(res["net"], cfg, onnx, "pytest", "test")
    assert diff < 1e-4
    r = evaluate(onnx, "leap", trials=1, seed=0, progress=False, max_steps=3)
    assert r["controller"] == "onnx" and r["rows"][0]["steps"] == 3


def test_every_tenth_episode_is_held_out() -> None:
    names = [Path(f"it002_ep{k:03d}.npz") for k in range(25)]
    assert [p.stem for p in names if dagger.is_held_out(p)] == ["it002_ep009", "it002_ep019"]


def test_ray_workers_collect_the_same_episodes(tmp_path: Path) -> None:
    # Episodes are seeded by (run seed, iteration, index): two Ray workers (a local runtime),
    # one planning thread each, write the shards the in-process collector writes, exactly.
    cfg = _cfg(iterations=1, episodes=3, episode_steps=3)
    assert dagger.collect_iteration(tmp_path / "a", cfg, 0, None, workers=1) is True
    assert dagger.collect_iteration(tmp_path / "b", cfg, 0, None, workers=2) is True
    for k in range(3):
        a = np.load(dagger.shard_path(tmp_path / "a", 0, k))
        b = np.load(dagger.shard_path(tmp_path / "b", 0, k))
        assert a.files == b.files
        for f in a.files:
            np.testing.assert_array_equal(a[f], b[f], err_msg=f)
    # A deadline already past: nothing new is collected, and the caller is told.
    (tmp_path / "b" / "shards" / "it000_ep001.npz").unlink()
    assert dagger.collect_iteration(tmp_path / "b", cfg, 0, None, workers=2,
                                    deadline=0.0) is False
    assert not dagger.shard_path(tmp_path / "b", 0, 1).exists()
