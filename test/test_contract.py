"""ONNX model contract: write/read round trip on a real (tiny) ONNX model, every mismatch listed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from dex_common.actions import ActionDecoder
from dex_common.contract import (
    ModelContractError,
    check_policy_contract,
    check_pose_contract,
    file_sha256,
    read_contract,
    write_contract,
)
from dex_common.observations import POLICY_OBS_LAYOUT
from dex_description.registry import get_hand

HAND = get_hand("shadow")


def tiny_model() -> onnx.ModelProto:
    """obs[B,22] -> logits[B,22] (x * 2): small but real, ONNX Runtime runs it."""
    x = helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", 22])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 22])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", ["obs", "two"], ["logits"])
    graph = helper.make_graph([node], "tiny", [x], [y], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def common(kind: str) -> dict:
    return {
        "dex.kind": kind,
        "dex.contract_version": "1",
        "dex.hand": HAND.name,
        "dex.hand_facts_hash": HAND.facts_hash(),
        "dex.producer": "pytest",
        "dex.config_hash": "abc",
        "dex.created_utc": "2026-01-01T00:00:00Z",
        "dex.eval": {},
        "dex.compute": "cpu x2",
    }


def policy_meta() -> dict:
    return {
        **common("policy"),
        "dex.obs_layout": [[n, s] for n, s in POLICY_OBS_LAYOUT],
        "dex.obs_norm": "in_graph",
        "dex.action": ActionDecoder(HAND).describe(),
        "dex.control_period_s": repr(HAND.control_period),
        "dex.lstm_hidden": 512,
    }


def pose_meta() -> dict:
    cam = HAND.cameras[0]
    return {
        **common("pose"),
        "dex.cameras": HAND.camera_names,
        "dex.image": {"height": cam.height, "width": cam.width, "encoding": "rgb8"},
    }


def save(tmp_path: Path, meta: dict, name: str = "m.onnx") -> Path:
    model = tiny_model()
    write_contract(model, meta)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_round_trip_strings_and_json(tmp_path: Path) -> None:
    path = save(tmp_path, policy_meta())
    got = read_contract(path)
    assert all(isinstance(v, str) for v in got.values())
    assert got["dex.kind"] == "policy" and got["dex.lstm_hidden"] == "512"
    assert json.loads(got["dex.action"])["actuators"] == HAND.actuator_names
    assert json.loads(got["dex.eval"]) == {}
    check_policy_contract(got, HAND, HAND.control_period)  # a matching model passes
    check_policy_contract(got, "shadow", HAND.control_period,
                          expected_action={"bins": 11, "max_delta": 0.3, "ema": 0.3})
    # ONNX Runtime sees the same metadata and still runs the model.
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_modelmeta().custom_metadata_map["dex.hand"] == HAND.name
    out = sess.run(None, {"obs": np.ones((2, 22), np.float32)})[0]
    np.testing.assert_allclose(out, 2.0)


def test_write_replaces_existing_keys_and_keeps_others() -> None:
    model = tiny_model()
    write_contract(model, {"dex.eval": {"mean": 1}, "other": "x"})
    write_contract(model, {"dex.eval": {"mean": 2}})
    props = [(p.key, p.value) for p in model.metadata_props]
    assert props.count(("other", "x")) == 1
    assert [v for k, v in props if k == "dex.eval"] == ['{"mean": 2}']
    with pytest.raises(TypeError):
        write_contract({"not": "a model"}, {})  # type: ignore[arg-type]


def test_every_policy_mismatch_is_listed_at_once() -> None:
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in policy_meta().items()}
    act = ActionDecoder(HAND).describe()
    act["actuators"] = act["actuators"][1:] + ["XXJ9"]
    act["bins"] = 1
    meta.update({
        "dex.kind": "pose",
        "dex.hand": "other_hand",
        "dex.hand_facts_hash": "0000",
        "dex.obs_layout": json.dumps([["cube_pos", 3]]),
        "dex.action": json.dumps(act),
        "dex.control_period_s": "0.05",
    })
    with pytest.raises(ModelContractError) as e:
        check_policy_contract(meta, HAND, 0.08, source="m.onnx")
    msg = str(e.value)
    for what in ("kind", "hand: model is for 'other_hand'", "hand facts hash", "obs layout",
                 "actuators", "XXJ9", "missing ['WRJ2']", "action bins", "control period",
                 "0.05", "m.onnx"):
        assert what in msg, (what, msg)
    assert "7 problem(s)" in msg


def test_actuator_order_and_bins_against_expectation() -> None:
    meta = policy_meta()
    act = dict(meta["dex.action"])
    names = list(act["actuators"])
    names[2], names[3] = names[3], names[2]
    act["actuators"] = names
    act["bins"] = 21
    meta["dex.action"] = json.dumps(act)
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    with pytest.raises(ModelContractError) as e:
        check_policy_contract(meta, HAND, HAND.control_period, expected_action={"bins": 11})
    msg = str(e.value)
    assert "different order" in msg and "index 2" in msg
    assert "action bins: model 21, expected 11" in msg


def test_missing_keys_and_bad_json_are_reported() -> None:
    meta = {"dex.kind": "policy", "dex.action": "{not json"}
    with pytest.raises(ModelContractError) as e:
        check_policy_contract(meta, HAND, HAND.control_period)
    msg = str(e.value)
    assert "missing dex.obs_layout" in msg and "dex.action is not valid JSON" in msg
    assert "lstm hidden" in msg and "control period" in msg


def test_pose_contract(tmp_path: Path) -> None:
    path = save(tmp_path, pose_meta(), "pose.onnx")
    check_pose_contract(read_contract(path), HAND)
    meta = read_contract(path)
    meta["dex.cameras"] = json.dumps(["cam0", "cam2", "cam1"])
    meta["dex.image"] = json.dumps({"height": 200, "width": 200, "encoding": "bgr8"})
    meta["dex.hand_facts_hash"] = "ffff"
    with pytest.raises(ModelContractError) as e:
        check_pose_contract(meta, HAND)
    msg = str(e.value)
    for what in ("cameras", "different order", "image height", "image width", "image encoding",
                 "hand facts hash"):
        assert what in msg, (what, msg)
    with pytest.raises(ModelContractError, match="kind"):
        check_pose_contract({k: (v if isinstance(v, str) else json.dumps(v))
                             for k, v in policy_meta().items()}, HAND)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="not found"):
        read_contract(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe this is not protobuf \x00\x01" * 10)
    with pytest.raises(ModelContractError):
        read_contract(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelContractError):
        read_contract(empty)
    with pytest.raises(ModelContractError, match="not found"):
        file_sha256(tmp_path / "nope.onnx")


def test_file_sha256(tmp_path: Path) -> None:
    path = save(tmp_path, pose_meta())
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_flipped_byte_in_a_listed_model_is_refused(tmp_path):
    # The shipped models are listed in SHA256SUMS next to them; a copy keeps loading while its
    # bytes match what the exporter recorded, and is refused once one byte differs.
    import shutil

    from dex_common.contract import SUMS_FILE, record_sha256, verified_sha256
    from dex_perception.runtime import PoseEstimator
    from dex_policy.runtime import PolicyRuntime, default_model_path

    shipped = default_model_path("shadow")
    listed = (shipped.parent / SUMS_FILE).read_text()
    assert f"{verified_sha256(shipped)}  {shipped.name}" in listed
    model = tmp_path / shipped.name
    shutil.copy(shipped, model)
    PolicyRuntime(model, "shadow")  # not listed yet: only hashed
    assert record_sha256(model) == verified_sha256(model)
    PolicyRuntime(model, "shadow")  # listed and intact
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # a weight byte: still a valid ONNX file
    model.write_bytes(bytes(data))
    with pytest.raises(ModelContractError, match="corrupted or was replaced"):
        PolicyRuntime(model, "shadow")
    from dex_perception.runtime import default_model_path as pose_default

    pose = tmp_path / "pose" / pose_default("shadow").name
    pose.parent.mkdir()
    shutil.copy(pose_default("shadow"), pose)
    record_sha256(pose)
    pose.write_bytes(pose.read_bytes()[:-1] + bytes([pose.read_bytes()[-1] ^ 0xFF]))
    with pytest.raises(ModelContractError, match="corrupted or was replaced"):
        PoseEstimator(pose, "shadow")
