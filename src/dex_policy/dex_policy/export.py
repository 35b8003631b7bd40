"""Export the policy to ONNX with its contract (docs/interfaces.md) and check ORT == torch."""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from dex_common import contract
from dex_common.actions import ActionDecoder
from dex_common.config_cli import this_machine
from dex_common.observations import policy_obs_layout
from dex_description.registry import get_hand
from dex_policy.net import PolicyExport, PolicyNet

INPUTS = ["obs", "h_in", "c_in"]
OUTPUTS = ["logits", "h_out", "c_out"]
OPSET = 17


def policy_contract(hand: str, decoder: ActionDecoder, lstm_hidden: int, producer: str,
                    config_hash: str, eval_result: dict | None = None,
                    compute: str = "") -> dict[str, str]:
    """The ``dex.*`` metadata of a policy model (all values strings, JSON where structured)."""
    spec = get_hand(hand)
    return {
        "dex.kind": "policy",
        "dex.contract_version": "1",
        "dex.hand": spec.name,
        "dex.hand_facts_hash": spec.facts_hash(),
        "dex.producer": producer,
        "dex.config_hash": config_hash,
        "dex.created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dex.eval": json.dumps(eval_result or {}),
        "dex.compute": compute or this_machine(),
        "dex.obs_layout": json.dumps([[n, s] for n, s in policy_obs_layout(spec)]),
        "dex.obs_norm": "in_graph",
        "dex.action": json.dumps(decoder.describe()),
        "dex.control_period_s": repr(float(spec.control_period)),
        "dex.lstm_hidden": str(lstm_hidden),
    }


def export_onnx(policy: PolicyNet, path: str | Path, meta: dict[str, str]) -> Path:
    """Write the policy graph (dynamic batch, opset 17) with ``meta`` as metadata_props."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = PolicyExport(policy).eval()
    b = 2
    args = (torch.zeros(b, policy.in_size), *policy.initial_state(b))
    dyn = {"obs": {0: "B"}, "h_in": {1: "B"}, "c_in": {1: "B"}, "logits": {0: "B"},
           "h_out": {1: "B"}, "c_out": {1: "B"}}
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter writes one self-contained file (no external data) in <1 s.
        torch.onnx.export(wrapper, args, str(tmp), input_names=INPUTS, output_names=OUTPUTS,
                          dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    model = onnx.load(str(tmp))
    contract.write_contract(model, meta)
    onnx.save(model, str(tmp))
    tmp.replace(path)
    contract.record_sha256(path)
    return path


def write_metadata(path: str | Path, updates: dict[str, str]) -> None:
    """Rewrite some contract values of an existing model (e.g. ``dex.eval`` after evaluation)."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(updates)
    del model.metadata_props[:]
    contract.write_contract(model, meta)
    onnx.save(model, str(path))
    contract.record_sha256(path)


@torch.no_grad()
def check_ort_matches_torch(policy: PolicyNet, path: str | Path, batch: int = 3, steps: int = 3,
                            atol: float = 1e-4, seed: int = 0) -> float:
    """Run torch and ORT side by side for a few recurrent steps; returns the max abs difference
    and raises AssertionError when it exceeds ``atol``."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = PolicyExport(policy).eval()
    g = torch.Generator().manual_seed(seed)
    h, c = policy.initial_state(batch)
    hn, cn = h.numpy(), c.numpy()
    worst = 0.0
    for _ in range(steps):
        obs = torch.randn(batch, policy.in_size, generator=g) * 0.1
        ref = wrapper(obs, h, c)
        got = sess.run(OUTPUTS, {"obs": obs.numpy(), "h_in": hn, "c_in": cn})
        for r, o in zip(ref, got, strict=True):
            worst = max(worst, float(np.abs(r.numpy() - o).max()))
        _, h, c = ref
        hn, cn = got[1], got[2]
    if worst > atol:
        raise AssertionError(f"ONNX Runtime differs from torch by {worst:g} (> {atol:g})")
    return worst


def read_eval(path: str | Path) -> dict[str, Any]:
    return json.loads(contract.read_contract(path).get("dex.eval", "{}") or "{}")
