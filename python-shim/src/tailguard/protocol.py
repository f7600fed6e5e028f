"""Wire protocol v1 codec (the Python half of `proto/README.md`).

A message is a list of frames: frame 0 is a msgpack header map, frames 1..n are raw little-endian
buffers in the order of `header["buffers"]`. Buffers are sent and decoded without copies: encoding
returns memoryviews of the caller's arrays, decoding returns numpy views of the received frames.

torch is never imported here; a CPU tensor is recognised by its `.numpy()` method.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NoReturn, Sequence

import msgpack
import numpy as np

PROTOCOL_VERSION = (1, 0)
MAX_FRAME_BYTES = 4 * 1024 * 1024

# Defaults until a `welcome` says otherwise (the engine's limits win once known).
DEFAULT_LIMITS = {
    "max_message_bytes": 64 * 1024 * 1024,
    "max_frame_bytes": MAX_FRAME_BYTES,
    "max_frames": 64,
    "max_header_bytes": 64 * 1024,
    "max_tokens_per_step": 2**27,
    "step_timeout_ms": 30_000,
}

# Sketch payloads (proto/README.md "Sketch payloads"); sketch.py computes them and checks it agrees.
SKETCH_HIST = {"exp_min": -24, "exp_max": 8, "mant_bits": 9}
SKETCH_HIST_BINS = 2 + ((SKETCH_HIST["exp_max"] - SKETCH_HIST["exp_min"]) << SKETCH_HIST["mant_bits"])  # 16386
SKETCH_SUMS_FIELDS = (
    "n", "nonfinite", "sum", "sum_abs", "sum_sq", "sum_k3", "exceed_1_5", "exceed_2", "exceed_3", "clip",
    "abs_max", "lse_max", "lse_sum", "lse2_sum", "seq_n", "seq_max", "seq_sum", "seq2_sum",
    "seqn_max", "seqn_sum", "seqn2_sum",
)  # fmt: skip
SKETCH_SLICES = ("all", "pre_tool", "post_tool", "tool_output")
_SKETCH_BUFFER = re.compile(r"^sketch/([a-z_]+)/([a-z_]+)/(hist|sums)$")

DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype("<f4"),
    "u8": np.dtype("u1"),
    "i32": np.dtype("<i4"),
    "u16": np.dtype("<u2"),
    "u32": np.dtype("<u4"),
    "f64": np.dtype("<f8"),
}

PAIRS = ("policy_vs_old", "policy_vs_ref", "old_vs_rollout")

# Step buffer name -> (dtype, length kind). "T": one per token, "S": one per sequence, "S+1": offsets.
STEP_BUFFERS: dict[str, tuple[str, str]] = {
    "policy_vs_old": ("f32", "T"),
    "policy_vs_ref": ("f32", "T"),
    "old_vs_rollout": ("f32", "T"),
    "completion_mask": ("u8", "T"),
    "tool_mask": ("u8", "T"),
    "slice_ids": ("u16", "T"),
    "token_ids": ("i32", "T"),
    "offsets": ("i32", "S+1"),
    "advantages": ("f32", "S"),
    "rewards": ("f32", "S"),
    "group_ids": ("i32", "S"),
    "seq_ids": ("i32", "S"),
}
REQUIRED_STEP_BUFFERS = ("completion_mask", "tool_mask", "offsets")

MESSAGE_TYPES = ("hello", "welcome", "step", "directive", "ack", "error", "bye")

class ProtocolError(Exception):
    """A message that breaks the spec. `code` is the stable `E_*` code of proto/README.md."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------- msgpack (options pinned for interop)


def pack_header(header: Mapping[str, Any]) -> bytes:
    # use_bin_type: str -> msgpack str, bytes -> bin. Floats stay float64 (never single), ints minimal width.
    return msgpack.packb(header, use_bin_type=True, use_single_float=False, strict_types=False)


class _Pairs(list):
    """A decoded msgpack map before its keys are checked (keys may be unhashable or non-strings)."""


def unpack_header(frame: bytes | memoryview) -> dict:
    """Stages B1 + B2: one msgpack value → a map with string keys at every depth."""
    try:
        # Maps arrive as key/value pairs so that any key type reaches our own check (E_HEADER_TYPE);
        # raw=False decodes msgpack str as UTF-8; trailing bytes raise ExtraData.
        raw = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=False, use_list=True, object_pairs_hook=_Pairs)
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input, never a crash
        raise ProtocolError("E_HEADER_DECODE", f"frame 0 is not one valid msgpack object ({type(e).__name__}: {e})") from None
    if _too_deep(raw):
        raise ProtocolError("E_HEADER_DECODE", f"frame 0 nests arrays/maps deeper than {MAX_HEADER_DEPTH} levels")
    out = _plain(raw, "header")
    if not isinstance(out, dict):
        raise ProtocolError("E_HEADER_TYPE", f"frame 0 must be a msgpack map, got {_describe(out)}")
    return out


MAX_HEADER_DEPTH = 64  # the header map is level 1; deeper is E_HEADER_DECODE (same as the engine)


def _too_deep(root: Any) -> bool:
    # Iterative: a recursive walk hit Python's recursion limit (E_INTERNAL) on ~1000-deep headers.
    stack = [(root, 1)]
    while stack:
        v, d = stack.pop()
        kids = [x for kv in v for x in kv] if isinstance(v, _Pairs) else v if isinstance(v, list) else None
        if kids is None:
            continue
        if d > MAX_HEADER_DEPTH:
            return True
        stack.extend((k, d + 1) for k in kids if isinstance(k, (list, _Pairs)))
    return False


def _plain(v: Any, path: str) -> Any:
    # Allowed: nil, bool, int, float, str, array, map. bin, ext and timestamps are not.
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, _Pairs):
        o: dict[str, Any] = {}
        for k, x in v:
            if not isinstance(k, str):
                raise ProtocolError("E_HEADER_TYPE", f"{path} has a non-string key ({_describe(k)}); keys must be msgpack str")
            if k == "__proto__":
                continue  # the engine drops it too (prototype safety); keep both sides equal
            o[k] = _plain(x, f"{path}.{k}")
        return o
    if isinstance(v, list):
        return [_plain(x, f"{path}[{i}]") for i, x in enumerate(v)]
    kind = "bin" if isinstance(v, (bytes, bytearray)) else "timestamp ext" if isinstance(v, msgpack.Timestamp) else "ext"
    raise ProtocolError("E_HEADER_DECODE", f"{path}: {kind} values are not allowed in a header")


def _describe(v: Any) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (dict, _Pairs)):
        return "map"
    if isinstance(v, list):
        return "array"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, (int, float)):
        return f"{'int' if float(v).is_integer() else 'float'} {v}"
    if isinstance(v, str):
        return f"str {v[:40]!r}"
    return "bin" if isinstance(v, (bytes, bytearray)) else type(v).__name__


# ---------------------------------------------------------------- arrays (zero-copy when possible)


def as_wire_array(x: Any, dtype: str) -> np.ndarray:
    """A C-contiguous little-endian numpy array of the wire dtype; a view of `x` whenever possible.

    Accepts numpy arrays, CPU torch tensors (shared memory via `.numpy()`), and sequences.
    """
    want = DTYPES[dtype]
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # torch.Tensor, without importing torch
        t = x.detach()
        if getattr(t, "device", None) is not None and t.device.type != "cpu":
            t = t.cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16") and want.kind == "f":
            t = t.float()  # numpy has no bfloat16; this is the one conversion that must copy
        x = t.numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.dtype == want:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_ and want.itemsize == 1:
        return np.ascontiguousarray(a).view(want)  # bool masks are bytes already
    if a.dtype.kind == want.kind and a.dtype.itemsize == want.itemsize:
        return np.ascontiguousarray(a).astype(want, copy=False)  # byte order only
    return np.ascontiguousarray(a, dtype=want)


def frame_view(a: np.ndarray) -> memoryview:
    """A byte view of a contiguous array, for `send_multipart(copy=False)`."""
    return memoryview(a).cast("B")


# ---------------------------------------------------------------- checksum


FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a32(data: bytes | memoryview | np.ndarray, h: int = FNV_OFFSET) -> int:
    """FNV-1a 32-bit, continuing from `h` so a checksum can run across frames and chunks."""
    if isinstance(data, np.ndarray):
        data = frame_view(np.ascontiguousarray(data))
    for b in bytes(data):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def step_checksum(buffer_frames: Iterable[bytes | memoryview | np.ndarray]) -> int:
    """`received.checksum`: FNV-1a over every buffer frame of a step, in frame order across chunks."""
    h = FNV_OFFSET
    for f in buffer_frames:
        h = fnv1a32(f, h)
    return h


# ---------------------------------------------------------------- encode


def encode_message(header: Mapping[str, Any], buffers: Mapping[str, Any] | None = None) -> list:
    """Frames of one message. `buffers` (name -> array) fills `header["buffers"]` in mapping order.

    Step buffers get their spec dtype; other names must be numpy arrays of a wire dtype.
    Frames above `MAX_FRAME_BYTES` raise `E_TOO_LARGE` (use `chunk_step` first).
    """
    h = dict(header)
    h.setdefault("version", list(PROTOCOL_VERSION))
    frames: list = []
    if buffers is not None:
        descs = []
        for name, x in buffers.items():
            dtype = STEP_BUFFERS[name][0] if name in STEP_BUFFERS else _dtype_name(np.asarray(x).dtype)
            a = as_wire_array(x, dtype)
            if a.nbytes > MAX_FRAME_BYTES:
                raise ProtocolError("E_TOO_LARGE", f"buffer {name!r} is {a.nbytes} bytes > {MAX_FRAME_BYTES}")
            descs.append({"name": name, "dtype": dtype, "length": int(a.shape[0])})
            frames.append(frame_view(a))
        h["buffers"] = descs
    return [pack_header(h), *frames]


def _dtype_name(dt: np.dtype) -> str:
    for name, d in DTYPES.items():
        if d == dt.newbyteorder("<") or d == dt:
            return name
    raise ProtocolError("E_DTYPE", f"no wire dtype for numpy {dt}")


# ---------------------------------------------------------------- chunking


@dataclass
class StepChunk:
    index: int
    count: int
    tokens: int
    n_seqs: int
    arrays: dict[str, np.ndarray]


def chunk_step(
    arrays: Mapping[str, Any],
    max_frame_bytes: int = MAX_FRAME_BYTES,
    max_message_bytes: int | None = None,
) -> list[StepChunk]:
    """Split one rank's step into chunks of whole sequences (views, no copies).

    Every buffer frame of every chunk is ≤ `max_frame_bytes`, and the sum of a chunk's frames is
    ≤ `max_message_bytes` minus room for the header. Each chunk's `offsets` start at 0.
    A single sequence too large for one frame raises `E_TOO_LARGE`.
    """
    arrs: dict[str, np.ndarray] = {}
    for name, x in arrays.items():
        if x is None:
            continue
        if name not in STEP_BUFFERS:
            raise ProtocolError("E_FIELD_TYPE", f"unknown step buffer {name!r}")
        arrs[name] = as_wire_array(x, STEP_BUFFERS[name][0])
    for name in REQUIRED_STEP_BUFFERS:
        if name not in arrs:
            raise ProtocolError("E_MISSING_FIELD", f"step buffer {name!r} is required")
    offsets = arrs["offsets"]
    n_seqs = offsets.shape[0] - 1
    if n_seqs < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ProtocolError("E_OFFSETS", "offsets must start at 0 and never decrease")
    tokens = int(offsets[-1])
    for name, a in arrs.items():
        kind = STEP_BUFFERS[name][1]
        want = tokens if kind == "T" else n_seqs if kind == "S" else n_seqs + 1
        if a.shape[0] != want:
            raise ProtocolError("E_FRAME_LENGTH", f"{name} has {a.shape[0]} elements, expected {want} ({kind})")

    tok_item = max((a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n][1] == "T"), default=1)
    seq_item = max((a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n][1] != "T"), default=4)
    tok_sum = sum(a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n][1] == "T")
    seq_sum = sum(a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n][1] != "T")
    max_tok = max_frame_bytes // tok_item
    max_seq = max_frame_bytes // seq_item - 1  # offsets carry one more element than sequences
    if max_message_bytes is not None:
        room = max_message_bytes - 64 * 1024  # header allowance
        max_tok = min(max_tok, room // max(tok_sum, 1))
        max_seq = min(max_seq, (room - 4) // max(seq_sum, 1))

    if tokens <= max_tok and n_seqs <= max_seq:
        return [StepChunk(0, 1, tokens, n_seqs, arrs)]

    bounds = [0]
    s = 0
    while s < n_seqs:
        # Last sequence e such that offsets[e] - offsets[s] <= max_tok and e - s <= max_seq.
        e = int(np.searchsorted(offsets, offsets[s] + max_tok, side="right")) - 1
        e = min(e, s + max_seq, n_seqs)
        if e <= s:
            raise ProtocolError(
                "E_TOO_LARGE", f"sequence {s} has {int(offsets[s + 1] - offsets[s])} tokens, more than one frame holds"
            )
        bounds.append(e)
        s = e
    if n_seqs == 0:
        bounds.append(0)
    count = len(bounds) - 1
    chunks = []
    for i in range(count):
        a, b = bounds[i], bounds[i + 1]
        t0, t1 = int(offsets[a]), int(offsets[b])
        part: dict[str, np.ndarray] = {}
        for name, arr in arrs.items():
            kind = STEP_BUFFERS[name][1]
            if name == "offsets":
                part[name] = arr[a : b + 1] - np.int32(t0) if t0 else arr[a : b + 1]
            elif kind == "T":
                part[name] = arr[t0:t1]
            else:
                part[name] = arr[a:b]
        chunks.append(StepChunk(i, count, t1 - t0, b - a, part))
    return chunks


def encode_step(header: Mapping[str, Any], arrays: Mapping[str, Any], limits: Mapping[str, int] | None = None) -> list[list]:
    """All chunk messages of one step: a list of frame lists. `header` holds the non-buffer fields."""
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    chunks = chunk_step(arrays, int(lim["max_frame_bytes"]), int(lim["max_message_bytes"]))
    tokens = sum(c.tokens for c in chunks)
    if tokens > lim["max_tokens_per_step"]:
        raise ProtocolError("E_TOO_LARGE", f"{tokens} tokens exceeds max_tokens_per_step {lim['max_tokens_per_step']}")
    out = []
    for c in chunks:
        h = {**header, "chunk": {"index": c.index, "count": c.count}, "tokens": c.tokens, "n_seqs": c.n_seqs}
        out.append(encode_message(h, c.arrays))
    return out


# ---------------------------------------------------------------- validation (proto/README.md "Validation order")
#
# Checks run in the documented order and the first failure wins, so every runner reports the same code:
# A frame limits → B1/B2 header decode → B3 version → B4 type → B5 fields → B6 buffer descriptors →
# B7 declared sizes → C1 frame count → C2 frame lengths → D step semantics.

RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ACTIONS = ("noop", "warn", "tighten", "rollback", "stop", "curriculum")
MAX_SAFE_INT = 2**53 - 1

Check = Callable[[Any, str], None]


def _type_err(path: str, want: str, v: Any) -> NoReturn:
    raise ProtocolError("E_FIELD_TYPE", f"{path} must be {want}, got {_describe(v)}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_uint(v: Any) -> bool:
    # An integral float (7.0) counts as an integer; NaN, ±Inf, negatives and > 2^53-1 do not.
    if not _is_num(v) or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer())):
        return False
    return 0 <= v <= MAX_SAFE_INT


def _uint(v: Any, p: str) -> None:
    if not _is_uint(v):
        _type_err(p, "a non-negative integer", v)


def _posint(v: Any, p: str) -> None:
    if not (_is_uint(v) and v >= 1):
        _type_err(p, "a positive integer", v)


def _str(v: Any, p: str) -> None:
    if not isinstance(v, str):
        _type_err(p, "a string", v)


def _bool(v: Any, p: str) -> None:
    if not isinstance(v, bool):
        _type_err(p, "a boolean", v)


def _finite(v: Any, p: str) -> None:
    if not (_is_num(v) and math.isfinite(v)):
        _type_err(p, "a finite number", v)


def _map(v: Any, p: str) -> None:
    if not isinstance(v, dict):
        _type_err(p, "a map", v)


def _nullable(c: Check) -> Check:
    def check(v: Any, p: str) -> None:
        if v is not None:
            c(v, p)

    return check


def _list_of(c: Check) -> Check:
    def check(v: Any, p: str) -> None:
        if not isinstance(v, list):
            _type_err(p, "an array", v)
        for i, x in enumerate(v):
            c(x, f"{p}[{i}]")

    return check


def _num_map(v: Any, p: str) -> None:
    # Trainer scalars: numbers (NaN/Inf allowed: they are findings, not errors) or nil.
    _map(v, p)
    for k, x in v.items():
        if x is not None and not _is_num(x):
            _type_err(f"{p}.{k}", "a number or nil", x)


def _one_of(values: Iterable[str]) -> Check:
    allowed = tuple(values)

    def check(v: Any, p: str) -> None:
        _str(v, p)
        if v not in allowed:
            _type_err(p, f"one of {'|'.join(allowed)}", v)

    return check


def _run_id(v: Any, p: str) -> None:
    _str(v, p)
    if not RUN_ID_RE.fullmatch(v):
        raise ProtocolError("E_RUN_ID", f"run_id {v!r} does not match ^{RUN_ID_RE.pattern}$")


Fields = list  # [(name, required, check)] in the documented order


def _struct(fields: Fields) -> Check:
    def check(v: Any, p: str) -> None:
        _map(v, p)
        _check_fields(v, fields, f"{p}.")

    return check


def _check_fields(h: dict, fields: Fields, prefix: str = "") -> None:
    for name, required, check in fields:
        if name not in h:
            if required:
                raise ProtocolError("E_MISSING_FIELD", f"missing required field {prefix}{name}")
            continue
        check(h[name], prefix + name)


def _chunk(v: Any, p: str) -> None:
    _struct([("index", True, _uint), ("count", True, _posint)])(v, p)
    if v["index"] >= v["count"]:
        raise ProtocolError("E_FIELD_TYPE", f"chunk.index {v['index']} must be < chunk.count {v['count']}")


_RANK_FIELDS: Fields = [("run_id", True, _run_id), ("rank", True, _uint)]

FIELDS: dict[str, Fields] = {
    "hello": [
        *_RANK_FIELDS,
        ("world_size", True, _posint),
        ("trainer", True, _str),
        ("mode", False, _one_of(("raw", "sketch"))),
        ("config", False, _map),
        ("client", False, _map),
        ("checksum", False, _bool),
    ],
    "welcome": [
        *_RANK_FIELDS,
        ("session", True, _str),
        ("engine", True, _struct([("name", True, _str), ("version", True, _str)])),
        ("limits", True, _struct([(k, True, _uint) for k in DEFAULT_LIMITS])),
        ("resume", True, _nullable(_struct([("last_step", True, _nullable(_uint))]))),
    ],
    "step": [
        *_RANK_FIELDS,
        ("world_size", True, _posint),
        ("step", True, _uint),
        ("chunk", True, _chunk),
        ("tokens", True, _uint),
        ("n_seqs", True, _uint),
        ("buffers", True, _list_of(_map)),
        ("implicit", False, _list_of(_one_of(PAIRS))),
        ("knobs", False, _num_map),
        ("logs", False, _num_map),
        ("slice_names", False, _list_of(_str)),
        ("sent_at", False, _finite),
        ("sketch", False, _bool),
    ],
    "directive": [
        *_RANK_FIELDS,
        ("step", True, _uint),
        ("directive", True, _struct([
            ("id", True, _str),
            ("action", True, _one_of(ACTIONS)),
            ("step", True, _uint),
            ("apply_at_step", True, _uint),
            ("params", True, _map),
            ("reason", True, _str),
            ("evidence", True, _map),
        ])),
        ("received", True, _struct([
            ("tokens", True, _uint),
            ("n_seqs", True, _uint),
            ("slices", True, _struct([(k, True, _uint) for k in ("all", "pre_tool", "post_tool", "tool_output")])),
            ("checksum", True, _nullable(_uint)),
        ])),
        ("metrics", True, _num_map),
        ("metrics_step", True, _nullable(_uint)),
    ],
    "ack": [
        *_RANK_FIELDS,
        ("directive_id", True, _str),
        ("step", True, _uint),
        ("applied", True, _bool),
        ("changes", False, _list_of(_struct([
            ("knob", True, _str), ("old", True, _nullable(_finite)), ("new", True, _nullable(_finite)),
        ]))),
        ("refused", False, _nullable(_str)),
    ],
    "ack_engine": [("of", True, _str), *_RANK_FIELDS],
    "error": [("code", True, _str), ("message", True, _str), ("fatal", True, _bool), ("ref", False, _map)],
    "bye": [*_RANK_FIELDS, ("last_step", False, _nullable(_uint)), ("stats", False, _num_map)],
}


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


def validate_header(h: dict, limits: Mapping[str, int] | None = None) -> dict:
    """Stages B3..B7 on a decoded header map. Returns it; raises `ProtocolError`."""
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    # B3: version first, so a future major with new types is reported as E_VERSION.
    if "version" not in h:
        raise ProtocolError("E_MISSING_FIELD", "missing required field version")
    ver = h["version"]
    if not (isinstance(ver, list) and len(ver) == 2 and all(_is_uint(x) for x in ver)):
        _type_err("version", "[major, minor] non-negative integers", ver)
    if ver[0] != PROTOCOL_VERSION[0]:
        raise ProtocolError("E_VERSION", f"protocol major {ver[0]} is not supported (this side speaks {PROTOCOL_VERSION[0]}.x)")
    # B4
    if "type" not in h:
        raise ProtocolError("E_MISSING_FIELD", "missing required field type")
    _str(h["type"], "type")
    if h["type"] not in MESSAGE_TYPES:
        raise ProtocolError("E_UNKNOWN_TYPE", f"unknown message type {h['type']!r}")
    # B5
    key = "ack_engine" if h["type"] == "ack" and "of" in h else h["type"]
    _check_fields(h, FIELDS[key])
    if key in ("hello", "step") and h["rank"] >= h["world_size"]:
        raise ProtocolError("E_RANK", f"rank {h['rank']} must be < world_size {h['world_size']}")
    # B6 + B7
    _check_buffers(h, lim)
    return h


def _check_buffers(h: dict, lim: Mapping[str, int]) -> None:
    raw = h.get("buffers")
    if raw is None and "buffers" not in h:
        return
    if not isinstance(raw, list):
        _type_err("buffers", "an array", raw)
    is_step = h["type"] == "step"
    seen: set[str] = set()
    for i, b in enumerate(raw):
        p = f"buffers[{i}]"
        _map(b, p)
        _check_fields(b, [("name", True, _str), ("dtype", True, _str), ("length", True, _uint)], f"{p}.")
        name, dtype = b["name"], b["dtype"]
        if dtype not in DTYPES:
            raise ProtocolError("E_DTYPE", f"{p} ({name}): unknown dtype {dtype!r}")
        if is_step and name in STEP_BUFFERS and STEP_BUFFERS[name][0] != dtype:
            raise ProtocolError("E_DTYPE", f"buffer {name} must be {STEP_BUFFERS[name][0]}, got {dtype}")
        if name in seen:
            raise ProtocolError("E_FIELD_TYPE", f"buffer {name} is listed twice")
        seen.add(name)
    # B7: declared sizes, before any frame is looked at.
    total = 0
    for b in raw:
        nbytes = int(b["length"]) * DTYPES[b["dtype"]].itemsize
        if nbytes > lim["max_frame_bytes"]:
            raise ProtocolError("E_TOO_LARGE", f"buffer {b['name']}: {nbytes} bytes exceeds max_frame_bytes {lim['max_frame_bytes']}")
        total += nbytes
    if total > lim["max_message_bytes"]:
        raise ProtocolError("E_TOO_LARGE", f"buffers total {total} bytes exceeds max_message_bytes {lim['max_message_bytes']}")
    if is_step and h.get("sketch") is not True:  # a sketch's tokens total all ranks; its size is fixed
        for f in ("tokens", "n_seqs"):
            if h[f] > lim["max_tokens_per_step"]:
                raise ProtocolError("E_TOO_LARGE", f"{f} {h[f]} exceeds max_tokens_per_step {lim['max_tokens_per_step']}")


def decode_message(frames: Sequence[Any], limits: Mapping[str, int] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Validate one message and return `(header, {name: numpy view of its frame})`.

    Accepts bytes, memoryviews or `zmq.Frame`s. Raises only `ProtocolError`.
    """
    lim = {**DEFAULT_LIMITS, **(limits or {})}
    try:
        bufs = [_frame_bytes(f) for f in frames]
        check_frame_limits(bufs, lim)
        header = validate_header(unpack_header(bufs[0]), lim)
        descs = header.get("buffers") or []
        # C1, C2
        if len(bufs) - 1 != len(descs):
            raise ProtocolError("E_FRAME_COUNT", f"header lists {len(descs)} buffers but {len(bufs) - 1} buffer frames follow")
        arrays: dict[str, np.ndarray] = {}
        for i, d in enumerate(descs):
            dt = DTYPES[d["dtype"]]
            want, got = int(d["length"]) * dt.itemsize, len(bufs[i + 1])
            if got != want:
                raise ProtocolError(
                    "E_FRAME_LENGTH", f"buffer {d['name']} declares {d['length']} × {d['dtype']} = {want} bytes, frame {i + 1} has {got}"
                )
            arrays[d["name"]] = np.frombuffer(bufs[i + 1], dtype=dt)
        if header["type"] == "step":
            (_check_sketch_step if header.get("sketch") else _check_step)(header, arrays)
        return header, arrays
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder bug is still reported with a code
        raise ProtocolError("E_INTERNAL", f"decoder failure: {type(e).__name__}: {e}") from e


def _frame_bytes(f: Any) -> memoryview:
    if hasattr(f, "buffer") and not isinstance(f, np.ndarray):  # zmq.Frame
        f = f.buffer
    m = memoryview(f)
    return m if m.format == "B" and m.ndim == 1 else m.cast("B")


def _check_step(h: dict, b: dict[str, np.ndarray]) -> None:
    """Stage D: step semantics (required buffers, lengths vs tokens/n_seqs, offsets)."""
    for name in REQUIRED_STEP_BUFFERS:
        if name not in b:
            raise ProtocolError("E_MISSING_FIELD", f"step is missing required buffer {name}")
    tokens, n_seqs = int(h["tokens"]), int(h["n_seqs"])
    for name, arr in b.items():
        if name not in STEP_BUFFERS:
            continue  # a later minor version's buffer: ignored
        per = STEP_BUFFERS[name][1]
        want = tokens if per == "T" else n_seqs if per == "S" else n_seqs + 1
        if arr.shape[0] != want:
            what = {"T": "tokens", "S": "n_seqs", "S+1": "n_seqs+1"}[per]
            raise ProtocolError("E_FRAME_LENGTH", f"buffer {name} has length {arr.shape[0]}, expected {want} ({what})")
    off = b["offsets"]
    if off[0] != 0:
        raise ProtocolError("E_OFFSETS", f"offsets[0] must be 0, got {off[0]}")
    bad = np.flatnonzero(np.diff(off) < 0)
    if bad.size:
        i = int(bad[0]) + 1
        raise ProtocolError("E_OFFSETS", f"offsets must be non-decreasing (offsets[{i}]={off[i]} < offsets[{i - 1}]={off[i - 1]})")
    if off[-1] != tokens:
        raise ProtocolError("E_OFFSETS", f"offsets[n_seqs] must equal tokens {tokens}, got {off[-1]}")
    if "slice_ids" in b and "slice_names" not in h:
        raise ProtocolError("E_MISSING_FIELD", "slice_ids needs slice_names")


def _check_sketch_step(h: dict, b: dict[str, np.ndarray]) -> None:
    """Stage D of a step with `sketch: true`: layout, field list, slice counts, then each buffer in order."""
    hist = h.get("hist")
    if not isinstance(hist, dict) or any(hist.get(k) != v for k, v in SKETCH_HIST.items()):
        raise ProtocolError("E_SKETCH_LAYOUT", f"hist layout {hist!r} != {SKETCH_HIST!r}")
    sf = h.get("sums_fields")
    if not isinstance(sf, list) or sf != list(SKETCH_SUMS_FIELDS):
        raise ProtocolError("E_SKETCH_LAYOUT", f"sums_fields must be {list(SKETCH_SUMS_FIELDS)}")
    sc = h.get("slice_counts")
    for s in ("pre_tool", "post_tool", "tool_output"):
        if not isinstance(sc, dict) or not _is_uint(sc.get(s)):
            raise ProtocolError("E_SKETCH_LAYOUT", f"slice_counts.{s} must be a non-negative integer")
    have: dict[str, int] = {}
    for name, arr in b.items():
        if name == "sketch/per_rank":
            if arr.dtype != DTYPES["f64"]:
                raise ProtocolError("E_DTYPE", f"buffer {name} must be f64")
            continue
        m = _SKETCH_BUFFER.match(name)
        if not m:
            raise ProtocolError("E_SKETCH_LAYOUT", f"unexpected buffer {name} in a sketch step")
        pair, slice_, kind = m.groups()
        if pair not in PAIRS or slice_ not in SKETCH_SLICES:
            raise ProtocolError("E_SKETCH_LAYOUT", f"unknown pair/slice in {name}")
        if arr.dtype != DTYPES["f64"]:
            raise ProtocolError("E_DTYPE", f"buffer {name} must be f64")
        want = SKETCH_HIST_BINS if kind == "hist" else len(SKETCH_SUMS_FIELDS)
        if arr.shape[0] != want:
            raise ProtocolError("E_FRAME_LENGTH", f"buffer {name} has {arr.shape[0]} elements, want {want}")
        if kind == "hist":
            if not bool(np.all((arr >= 0) & (arr <= 2.0**53 - 1))):
                raise ProtocolError("E_SKETCH_LAYOUT", f"{name} holds a value that is not a count")
        elif not (arr[0] >= 0 and arr[1] >= 0):
            raise ProtocolError("E_SKETCH_LAYOUT", f"{name}: n and nonfinite must be counts")
        have[f"{pair}/{slice_}"] = have.get(f"{pair}/{slice_}", 0) | (1 if kind == "hist" else 2)
    for pair in dict.fromkeys(k.split("/")[0] for k in have):
        for s in SKETCH_SLICES:
            if have.get(f"{pair}/{s}") != 3:
                raise ProtocolError("E_SKETCH_LAYOUT", f"pair {pair} needs sketch/{pair}/{s}/hist and /sums")
