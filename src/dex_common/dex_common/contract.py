"""The ONNX model contract: ``dex.*`` metadata_props written at export and checked at load.

A runtime refuses a model trained for other hand facts, another actuator order, observation
layout, action coding, control period or camera setup, and says every reason at once (one
readable ``ModelContractError``) rather than failing later with a shape error or, worse,
running with silently permuted joints. Keys: see docs/interfaces.md ("ONNX contracts").
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import onnx

from dex_common.observations import policy_obs_layout
from dex_description.registry import HandSpec, get_hand

CONTRACT_VERSION = "1"
COMMON_KEYS = (
    "dex.kind",
    "dex.contract_version",
    "dex.hand",
    "dex.hand_facts_hash",
    "dex.producer",
    "dex.config_hash",
    "dex.created_utc",
    "dex.eval",
    "dex.compute",
)
POLICY_KEYS = (
    "dex.obs_layout",
    "dex.obs_norm",
    "dex.action",
    "dex.control_period_s",
    "dex.lstm_hidden",
)
POSE_KEYS = ("dex.cameras", "dex.image")
IMAGE_ENCODING = "rgb8"
# Control periods are written with repr(float); allow rounding from other writers.
_PERIOD_TOL = 1e-9


class ModelContractError(ValueError):
    """A model file is missing/unreadable or its contract does not match this system."""


# ---- writing / reading ----------------------------------------------------------------------
def _to_str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def write_contract(model: onnx.ModelProto, meta: dict) -> None:
    """Set ``meta`` as metadata_props of ``model`` (in place). Strings are stored as they are,
    everything else JSON-encoded. An existing key is replaced, other keys are kept."""
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto; got {type(model).__name__}")
    new = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"metadata keys must be non-empty strings; got {k!r}")
        new[k] = _to_str(v)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in new]
    del model.metadata_props[:]
    for k, v in [*kept, *new.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_contract(path: str | Path) -> dict[str, str]:
    """All metadata_props of the model at ``path`` as {key: string value}.

    Raises ModelContractError for a missing file or one that is not a valid ONNX model. Only
    the protobuf is parsed (no external weight data is loaded)."""
    p = Path(path)
    if not p.is_file():
        raise ModelContractError(f"model file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError/RuntimeError variants
        raise ModelContractError(f"cannot read ONNX model {p}: {type(e).__name__}: {e}") from None
    if not model.graph.node and not model.graph.input and not model.metadata_props:
        # protobuf happily parses many non-ONNX byte strings into an empty message
        raise ModelContractError(f"{p} is not an ONNX model (empty graph and no metadata)")
    return {prop.key: prop.value for prop in model.metadata_props}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (reported on /trial/status so results name the exact model)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        raise ModelContractError(f"model file not found: {path}") from None
    return h.hexdigest()


# Next to shipped and exported models: "<sha256>  <file name>" per line (sha256sum's format), so
# `sha256sum -c SHA256SUMS` checks them too. A runtime refuses a listed model whose bytes differ.
SUMS_FILE = "SHA256SUMS"


def _read_sums(sums: Path) -> dict[str, str]:
    out = {}
    for line in sums.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            out[name.lstrip("*")] = digest.lower()
    return out


def verified_sha256(path: str | Path) -> str:
    """``file_sha256`` of a model, checked against the ``SHA256SUMS`` next to it when that lists
    the file: a flipped byte or a replaced file raises ``ModelContractError`` instead of
    loading silently. Unlisted files (a user's own export elsewhere) are only hashed."""
    p = Path(path)
    digest = file_sha256(p)
    sums = p.parent / SUMS_FILE
    if sums.is_file():
        want = _read_sums(sums).get(p.name)
        if want is not None and want != digest:
            raise ModelContractError(
                f"{p}: sha256 {digest[:16]}… differs from {want[:16]}… recorded in {sums} — the "
                "file is corrupted or was replaced; re-export it (its trainer rewrites "
                f"{SUMS_FILE}) or restore the original")
    return digest


def record_sha256(path: str | Path) -> str:
    """Write (or update) the model's line in ``SHA256SUMS`` next to it; returns the digest.
    Exporters call this after every write of a model file."""
    p = Path(path)
    digest = file_sha256(p)
    sums = p.parent / SUMS_FILE
    entries = _read_sums(sums) if sums.is_file() else {}
    entries[p.name] = digest
    tmp = sums.with_name(SUMS_FILE + ".tmp")
    tmp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(entries.items())))
    tmp.replace(sums)
    return digest


def decode(meta: dict[str, str], key: str) -> Any:
    """JSON value of ``meta[key]``; ModelContractError if missing or not JSON."""
    if key not in meta:
        raise ModelContractError(f"missing {key}")
    try:
        return json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as e:
        raise ModelContractError(f"{key} is not valid JSON ({e}): {meta[key]!r}") from None


# ---- checking --------------------------------------------------------------------------------
def _spec(hand: HandSpec | str) -> HandSpec:
    return get_hand(hand) if isinstance(hand, str) else hand


def _list_diff(what: str, got: list, want: list) -> str:
    missing = [x for x in want if x not in got]
    extra = [x for x in got if x not in want]
    parts = [f"{what}: model has {len(got)}, this system {len(want)}"]
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    if not missing and not extra:
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
        parts.append(f"same names in a different order (first difference at index {first}: "
                     f"model {got[first]!r}, system {want[first]!r})")
    return "; ".join(parts)


def _check_common(meta: dict, kind: str, hand: HandSpec, errs: list[str]) -> None:
    if not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict; got {type(meta).__name__}")
    if meta.get("dex.kind") != kind:
        errs.append(f"kind: model is {meta.get('dex.kind')!r}, expected {kind!r}")
    if meta.get("dex.contract_version") != CONTRACT_VERSION:
        errs.append(f"contract version: model {meta.get('dex.contract_version')!r}, "
                    f"expected {CONTRACT_VERSION!r}")
    mh = meta.get("dex.hand")
    try:
        same_hand = mh is not None and get_hand(str(mh)) is hand
    except KeyError:
        same_hand = False
    if not same_hand and mh != hand.name:
        errs.append(f"hand: model is for {mh!r}, this system is {hand.name!r}")
    if meta.get("dex.hand_facts_hash") != hand.facts_hash():
        errs.append(f"hand facts hash: model {meta.get('dex.hand_facts_hash')!r}, registry "
                    f"{hand.facts_hash()!r} (joint/actuator/camera facts changed since export)")


def _json(meta: dict, key: str, errs: list[str]) -> Any:
    try:
        return decode(meta, key)
    except ModelContractError as e:
        errs.append(str(e))
        return None


def _raise(kind: str, errs: list[str], source: str) -> None:
    if errs:
        where = f" ({source})" if source else ""
        lines = "\n".join(f"  - {e}" for e in errs)
        raise ModelContractError(
            f"{kind} model contract mismatch{where}: {len(errs)} problem(s):\n{lines}"
        )


def check_policy_contract(
    meta: dict[str, str],
    hand: HandSpec | str,
    control_period: float,
    *,
    expected_action: dict | None = None,
    obs_layout: list[tuple[str, int]] | None = None,
    source: str = "",
) -> None:
    """Raise ModelContractError listing every way ``meta`` does not fit this system.

    ``expected_action`` (optional): {bins, max_delta, ema} the caller requires; without it any
    valid action coding is accepted (the runtime builds its decoder from the contract)."""
    spec = _spec(hand)
    errs: list[str] = []
    _check_common(meta, "policy", spec, errs)
    layout = policy_obs_layout(spec) if obs_layout is None else obs_layout
    want_layout = [[n, int(s)] for n, s in layout]
    got_layout = _json(meta, "dex.obs_layout", errs)
    if got_layout is not None and got_layout != want_layout:
        errs.append(f"obs layout: model {got_layout}, expected {want_layout}")
    if meta.get("dex.obs_norm") != "in_graph":
        errs.append(f"obs norm: model {meta.get('dex.obs_norm')!r}, expected 'in_graph'")
    act = _json(meta, "dex.action", errs)
    if act is not None:
        if not isinstance(act, dict):
            errs.append(f"action: expected a JSON object, got {act!r}")
        else:
            _check_action(act, spec, expected_action, errs)
    cp = meta.get("dex.control_period_s")
    try:
        got_cp = float(cp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        errs.append(f"control period: model {cp!r} is not a number (expected {control_period})")
    else:
        if not math.isfinite(got_cp) or abs(got_cp - float(control_period)) > _PERIOD_TOL:
            errs.append(f"control period: model {got_cp} s, this system {control_period} s")
    lh = meta.get("dex.lstm_hidden")
    try:
        if int(lh) < 1:  # type: ignore[arg-type]
            raise ValueError
    except (TypeError, ValueError):
        errs.append(f"lstm hidden: {lh!r} is not a positive integer")
    _raise("policy", errs, source)


def _check_action(act: dict, spec: HandSpec, expected: dict | None, errs: list[str]) -> None:
    if act.get("mode") != "relative":
        errs.append(f"action mode: model {act.get('mode')!r}, expected 'relative'")
    names = act.get("actuators")
    if not isinstance(names, list):
        errs.append(f"actuators: model has {names!r}, expected a list of {spec.n_actuators} names")
    elif names != spec.actuator_names:
        errs.append(_list_diff("actuators", names, spec.actuator_names))
    bins = act.get("bins")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        errs.append(f"action bins: {bins!r} is not an integer >= 2")
    md = act.get("max_delta")
    if isinstance(md, bool) or not isinstance(md, (int, float)) or not 0 < md < math.inf:
        errs.append(f"action max_delta: {md!r} is not a positive number")
    ema = act.get("ema")
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1:
        errs.append(f"action ema: {ema!r} is not in [0, 1)")
    for key, want in (expected or {}).items():
        got = act.get(key)
        if got != want and not (
            isinstance(got, (int, float)) and isinstance(want, (int, float))
            and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
        ):
            errs.append(f"action {key}: model {got!r}, expected {want!r}")


def check_pose_contract(meta: dict[str, str], hand: HandSpec | str, *, source: str = "") -> None:
    """Raise ModelContractError listing every way a pose model's ``meta`` does not fit."""
    spec = _spec(hand)
    errs: list[str] = []
    _check_common(meta, "pose", spec, errs)
    cams = _json(meta, "dex.cameras", errs)
    if cams is not None and cams != spec.camera_names:
        if isinstance(cams, list):
            errs.append(_list_diff("cameras", cams, spec.camera_names))
        else:
            errs.append(f"cameras: model {cams!r}, expected {spec.camera_names}")
    img = _json(meta, "dex.image", errs)
    want = expected_image(spec)
    if img is not None:
        if not isinstance(img, dict):
            errs.append(f"image: expected a JSON object, got {img!r}")
        else:
            for k, v in want.items():
                if img.get(k) != v:
                    errs.append(f"image {k}: model {img.get(k)!r}, this system {v!r}")
    _raise("pose", errs, source)


def expected_image(hand: HandSpec | str) -> dict[str, Any]:
    """{height, width, encoding} every camera of ``hand`` renders (they must agree)."""
    spec = _spec(hand)
    sizes = {(c.height, c.width) for c in spec.cameras}
    if len(sizes) != 1:
        raise ModelContractError(f"cameras of {spec.name} differ in resolution: {sorted(sizes)}")
    (h, w), = sizes
    return {"height": h, "width": w, "encoding": IMAGE_ENCODING}
