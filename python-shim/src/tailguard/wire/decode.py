"""Decoding: frames → (header, numpy views of the buffer frames), every stage of proto/README.md
"Validation order" in order; the first failure wins, so every runner reports the same code."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .arrays import DTYPES
from .errors import ProtocolError
from .header import unpack_header
from .sketch_payload import check_sketch_step
from .tables import DEFAULT_LIMITS, REQUIRED_STEP_BUFFERS, STEP_BUFFERS
from .validate import check_frame_limits, validate_header


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
            (check_sketch_step if header.get("sketch") else _check_step)(header, arrays)
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
        per = STEP_BUFFERS[name]["per"]
        want = tokens if per == "token" else n_seqs if per == "seq" else n_seqs + 1
        if arr.shape[0] != want:
            raise ProtocolError("E_FRAME_LENGTH", f"buffer {name} has length {arr.shape[0]}, expected {want} ({per})")
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
