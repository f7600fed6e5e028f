"""Encoding: a header and named arrays → frames; one rank's step → chunk messages of whole sequences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .arrays import DTYPES, as_wire_array, frame_view
from .errors import ProtocolError
from .header import pack_header
from .tables import DEFAULT_LIMITS, PROTOCOL_VERSION, REQUIRED_STEP_BUFFERS, STEP_BUFFERS

MAX_FRAME_BYTES = DEFAULT_LIMITS["max_frame_bytes"]


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
            dtype = STEP_BUFFERS[name]["dtype"] if name in STEP_BUFFERS else _dtype_name(np.asarray(x).dtype)
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
        arrs[name] = as_wire_array(x, STEP_BUFFERS[name]["dtype"])
    for name in REQUIRED_STEP_BUFFERS:
        if name not in arrs:
            raise ProtocolError("E_MISSING_FIELD", f"step buffer {name!r} is required")
    offsets = arrs["offsets"]
    n_seqs = offsets.shape[0] - 1
    if n_seqs < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ProtocolError("E_OFFSETS", "offsets must start at 0 and never decrease")
    tokens = int(offsets[-1])
    for name, a in arrs.items():
        per = STEP_BUFFERS[name]["per"]
        want = tokens if per == "token" else n_seqs if per == "seq" else n_seqs + 1
        if a.shape[0] != want:
            raise ProtocolError("E_FRAME_LENGTH", f"{name} has {a.shape[0]} elements, expected {want} ({per})")

    tok_item = max((a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n]["per"] == "token"), default=1)
    seq_item = max((a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n]["per"] != "token"), default=4)
    tok_sum = sum(a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n]["per"] == "token")
    seq_sum = sum(a.itemsize for n, a in arrs.items() if STEP_BUFFERS[n]["per"] != "token")
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
            per = STEP_BUFFERS[name]["per"]
            if name == "offsets":
                part[name] = arr[a : b + 1] - np.int32(t0) if t0 else arr[a : b + 1]
            elif per == "token":
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
