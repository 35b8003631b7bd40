"""Checkpoints never run code: a crafted checkpoint given to --resume is refused before any of its
objects is built (policy and pose training), while real checkpoints still round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dex_common.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dex_perception import train as pose_train
from dex_policy import train as policy_train
from dex_policy.ppo import PPOTrainer


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: stands in for any code an attacker picks."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"config": {}, "policy": _Payload(marker), "net": {}, "epoch": 0}, path)
    return path


def test_the_crafted_checkpoint_runs_code_under_an_unrestricted_load(tmp_path: Path) -> None:
    # The attack is real: what the loaders below refuse would have executed.
    marker = tmp_path / "pwned"
    torch.load(_crafted(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(_crafted(tmp_path / "evil.pt", marker))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    state = {"w": torch.arange(4.0), "step": 3, "hist": [{"loss": 0.5}], "name": "x"}
    p = save_checkpoint(state, tmp_path / "a" / "ck.pt")
    got = load_checkpoint(p)
    assert torch.equal(got["w"], state["w"]) and got["hist"] == state["hist"]
    assert [f.name for f in p.parent.iterdir()] == ["ck.pt"]  # no temp file left behind


def test_policy_resume_refuses_a_crafted_checkpoint(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    _crafted(run / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError):
        PPOTrainer.load(run / "checkpoint.pt")
    with pytest.raises(SystemExit) as e:
        policy_train.main(["--out", str(run), "--resume", "--steps", "10"])
    assert e.value.code == 2
    assert "could run code" in capsys.readouterr().err
    assert not marker.exists()


def test_pose_resume_refuses_a_crafted_checkpoint(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    ck = _crafted(tmp_path / "pose.ckpt.pt", marker)
    with pytest.raises(SystemExit) as e:
        pose_train.main(["--data", str(tmp_path / "no-data"), "--out", str(tmp_path / "p.onnx"),
                         "--checkpoint", str(ck), "--resume"])
    assert e.value.code == 2
    assert "could run code" in capsys.readouterr().err
    assert not marker.exists()
