"""Stages A and B3..B7 of proto/README.md "Validation order", driven by the proto/v1 schemas
(tables.py, generated). The rules a JSON Schema cannot say (rank < world_size, index < count, the step
buffer table, declared sizes) are written here, as in ts-core/src/protocol/validate.ts."""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from .errors import ProtocolError, describe
from .schema_check import MAX_SAFE_INT, Schema, check_object, check_value, is_int
from .tables import DEFAULT_LIMITS, DTYPE_BYTES, MESSAGE_TYPES, PROTOCOL_VERSION, SCHEMAS, STEP_BUFFERS


def _is_stage_d(s: Schema) -> bool:
    # Fields marked "$comment": "stage D: ..." belong to the sketch payload check (sketch_payload.py).
    return str(s.get("$comment", "")).startswith("stage D")


def _prepare(schema: Schema) -> tuple[Schema, Schema, tuple[str, ...]]:
    """B5 fields (no type/version, stage-D fields or buffer entries), one B6 buffer item, the dtypes."""
    s = copy.deepcopy(schema)
    props = s.get("properties", {})
    drop = {"type", "version", *(k for k, p in props.items() if _is_stage_d(p))}
    s["properties"] = {k: p for k, p in props.items() if k not in drop}
    for part in (s, s.get("then"), s.get("else")):
        if part and "required" in part:
            part["required"] = [k for k in part["required"] if k not in drop]
    item = copy.deepcopy(s["properties"].get("buffers", {}).get("items", {"type": "object"}))
    dtypes = tuple(item.get("properties", {}).get("dtype", {}).pop("enum", ()))
    if "buffers" in s["properties"]:
        s["properties"]["buffers"] = {**s["properties"]["buffers"], "items": {"type": "object"}}
    return s, item, dtypes


_PREPARED = {t: _prepare(SCHEMAS[t]) for t in MESSAGE_TYPES}


def check_frame_limits(frames: Sequence[memoryview], lim: Mapping[str, int]) -> None:
    """Stage A: limits on the frames themselves, before anything is decoded."""
    if len(frames) == 0:
        raise ProtocolError("E_FRAME_COUNT", "empty message: no header frame")
    if len(frames) > lim["max_frames"]:
        raise ProtocolError("E_TOO_LARGE", f"{len(frames)} frames exceeds max_frames {lim['max_frames']}")
    if len(frames[0]) > lim["max_header_bytes"]:
        raise ProtocolError("E_TOO_LARGE", f"header frame {len(frames[0])} bytes exceeds max_header_bytes {lim['max_header_bytes']}")
    total = 0
    for i, f in enumerate(frames):
        if i > 0 and len(f) > lim["max_frame_bytes"]:
            raise ProtocolError("E_TOO_LARGE", f"frame {i} is {len(f)} bytes, exceeds max_frame_bytes {lim['max_frame_bytes']}")
        total += len(f)
    if total > lim["max_message_bytes"]:
        raise ProtocolError("E_TOO_LARGE", f"message is {total} bytes, exceeds max_message_bytes {lim['max_message_bytes']}")


def _is_uint(v: Any) -> bool:
    return is_int(v) and 0 <= v <= MAX_SAFE_INT


def validate_header(h: dict, limits: Mapping[str, int] | None = None) -> dict:
    """Stages B3..B7 on a decoded header map. Returns it; raises `ProtocolError`.

    >>> validate_header({"version": [1, 0], "type": "bye", "run_id": "r1", "rank": 0})["type"]
    'bye'
    >>> validate_header({"version": [1, 0], "type": "hello", "run_id": "r1", "rank": 2, "world_size": 2, "trainer": "x"})
    Traceback (most recent call last):
    ...
    tailguard.wire.errors.ProtocolError: E_RANK: rank 2 must be < world_size 2
    """
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    # B3: version first, so a future major with new types is reported as E_VERSION.
    if "version" not in h:
        raise ProtocolError("E_MISSING_FIELD", "missing required field version")
    ver = h["version"]
    if not (isinstance(ver, list) and len(ver) == 2 and all(_is_uint(x) for x in ver)):
        raise ProtocolError("E_FIELD_TYPE", f"version must be [major, minor] non-negative integers, got {describe(ver)}")
    if ver[0] != PROTOCOL_VERSION[0]:
        raise ProtocolError("E_VERSION", f"protocol major {ver[0]} is not supported (this side speaks {PROTOCOL_VERSION[0]}.x)")
    # B4
    if "type" not in h:
        raise ProtocolError("E_MISSING_FIELD", "missing required field type")
    if not isinstance(h["type"], str):
        raise ProtocolError("E_FIELD_TYPE", f"type must be a string, got {describe(h['type'])}")
    if h["type"] not in MESSAGE_TYPES:
        raise ProtocolError("E_UNKNOWN_TYPE", f"unknown message type {h['type']!r}")
    # B5, then the cross-field rules.
    fields, item, dtypes = _PREPARED[h["type"]]
    check_object(fields, h)
    c = h.get("chunk")
    if h["type"] == "step" and c["index"] >= c["count"]:
        raise ProtocolError("E_FIELD_TYPE", f"chunk.index {c['index']} must be < chunk.count {c['count']}")
    if h["type"] in ("hello", "step") and h["rank"] >= h["world_size"]:
        raise ProtocolError("E_RANK", f"rank {h['rank']} must be < world_size {h['world_size']}")
    # B6 + B7
    if "buffers" in h:
        _check_buffers(h, item, dtypes, lim)
    return h


def _check_buffers(h: dict, item: Schema, dtypes: tuple[str, ...], lim: Mapping[str, int]) -> None:
    raw = h["buffers"]
    is_step = h["type"] == "step"
    seen: set[str] = set()
    for i, b in enumerate(raw):
        p = f"buffers[{i}]"
        check_value(item, b, p)
        name, dtype = b["name"], b["dtype"]
        if dtype not in dtypes:
            raise ProtocolError("E_DTYPE", f"{p} ({name}): unknown dtype {dtype!r}")
        want = STEP_BUFFERS[name]["dtype"] if is_step and name in STEP_BUFFERS else dtype
        if want != dtype:
            raise ProtocolError("E_DTYPE", f"buffer {name} must be {want}, got {dtype}")
        if name in seen:
            raise ProtocolError("E_FIELD_TYPE", f"buffer {name} is listed twice")
        seen.add(name)
    # B7: declared sizes, before any frame is looked at.
    total = 0
    for b in raw:
        nbytes = int(b["length"]) * DTYPE_BYTES[b["dtype"]]
        if nbytes > lim["max_frame_bytes"]:
            raise ProtocolError("E_TOO_LARGE", f"buffer {b['name']}: {nbytes} bytes exceeds max_frame_bytes {lim['max_frame_bytes']}")
        total += nbytes
    if total > lim["max_message_bytes"]:
        raise ProtocolError("E_TOO_LARGE", f"buffers total {total} bytes exceeds max_message_bytes {lim['max_message_bytes']}")
    if is_step and h.get("sketch") is not True:  # a sketch's tokens total all ranks; its size is fixed
        for f in ("tokens", "n_seqs"):
            if h[f] > lim["max_tokens_per_step"]:
                raise ProtocolError("E_TOO_LARGE", f"{f} {h[f]} exceeds max_tokens_per_step {lim['max_tokens_per_step']}")
