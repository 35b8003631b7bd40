"""Policy runtime (pure: no rclpy): ONNX Runtime LSTM policy with its contract checked.

The policy node and the evaluator both run this class, so deployment and evaluation execute the
same code: contract check → (obs, h, c) → argmax bins → ``ActionDecoder`` → absolute targets.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from dex_common import contract
from dex_common.actions import ActionDecoder
from dex_common.contract import ModelContractError
from dex_common.ort_session import cpu_session
from dex_common.stats import RollingStats
from dex_description.registry import get_hand

__all__ = ["ModelContractError", "PolicyRuntime", "default_model_path", "file_sha256"]


def default_model_path(hand: str = "shadow") -> Path:
    """The default policy shipped as package data: ``models/policy_<hand name>.onnx``."""
    name = get_hand(hand).name
    return Path(str(resources.files("dex_policy") / "models" / f"policy_{name}.onnx"))


file_sha256 = contract.file_sha256


class PolicyRuntime:
    """Loads a policy ONNX model, refuses a contract mismatch, keeps the LSTM state."""

    def __init__(self, model_path: str | Path, hand: str = "shadow",
                 control_period: float | None = None, threads: int = 2) -> None:
        self.spec = get_hand(hand)
        self.control_period = (self.spec.control_period if control_period is None
                               else float(control_period))
        path = Path(model_path)
        if not path.is_file():
            raise ModelContractError(f"policy model file not found: {path}")
        self.model_path = path
        # The bytes first (a listed model that differs is refused before it is parsed).
        self.sha256 = contract.verified_sha256(path)
        self.meta = contract.read_contract(path)
        contract.check_policy_contract(self.meta, self.spec, self.control_period,
                                       source=str(path))
        act = json.loads(self.meta["dex.action"])
        self.decoder = ActionDecoder(self.spec, bins=int(act["bins"]),
                                     max_delta=float(act["max_delta"]), ema=float(act["ema"]))
        self.hidden = int(self.meta["dex.lstm_hidden"])
        self.session = cpu_session(path, threads)
        self._check_io()
        self.infer_stats = RollingStats()  # ONNX Runtime call only
        self.step_stats = RollingStats()  # whole act(): inference + decode
        self.last_logits: np.ndarray | None = None
        self.last_bins: np.ndarray | None = None
        self._h = np.zeros((1, 1, self.hidden), np.float32)
        self._c = np.zeros_like(self._h)

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        problems = [f"missing input {n!r}" for n in ("obs", "h_in", "c_in") if n not in ins]
        problems += [f"missing output {n!r}" for n in ("logits", "h_out", "c_out")
                     if n not in outs]
        if not problems:
            if ins["obs"].shape[-1] != self.obs_size:
                problems.append(f"input obs has {ins['obs'].shape[-1]} features, contract "
                                f"layout has {self.obs_size}")
            if ins["h_in"].shape[-1] != self.hidden:
                problems.append(f"h_in size {ins['h_in'].shape[-1]} != dex.lstm_hidden "
                                f"{self.hidden}")
        if problems:
            raise ModelContractError(f"policy model {self.model_path}: " + "; ".join(problems))

    @property
    def obs_size(self) -> int:
        return sum(int(n) for _, n in json.loads(self.meta["dex.obs_layout"]))

    @property
    def targets(self) -> np.ndarray | None:
        return self.decoder.targets

    def reset(self, current_targets: np.ndarray, seed: int | None = None) -> None:
        """New episode: zero the LSTM state; the decoder starts from ``current_targets``.
        (``seed`` is unused: the argmax policy draws nothing; every controller resets alike.)"""
        self._h = np.zeros((1, 1, self.hidden), np.float32)
        self._c = np.zeros_like(self._h)
        self.decoder.reset(current_targets)
        self.last_logits = self.last_bins = None

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """One recurrent inference step (advances the state): logits [n_actuators, bins]."""
        x = np.asarray(obs, np.float32).reshape(1, -1)
        if x.shape[1] != self.obs_size or not np.all(np.isfinite(x)):
            raise ValueError(f"obs must be {self.obs_size} finite floats; got shape {x.shape}")
        t0 = time.perf_counter()
        logits, self._h, self._c = self.session.run(
            ["logits", "h_out", "c_out"], {"obs": x, "h_in": self._h, "c_in": self._c})
        self.infer_stats.add(time.perf_counter() - t0)
        self.last_logits = logits[0]
        return logits[0]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs[22] → absolute actuator targets [20] (argmax bins → ActionDecoder)."""
        t0 = time.perf_counter()
        bins = np.argmax(self.logits(obs), axis=-1)
        self.last_bins = bins
        targets = self.decoder.decode(bins)
        self.step_stats.add(time.perf_counter() - t0)
        return targets
