"""Sparse codings of a sketch histogram (proto/README.md "Sketch payloads", `hist.coding`), exact for integer
counts up to 2^53 - 1; ts-core/src/protocol/histcoding.ts is the engine's twin.

- "varint": LEB128 (gap, count) for each non-zero bin, gap = bins skipped since the previous one.
- "runs": for each maximal run of consecutive non-zero bins, LEB128 gap (bins skipped since the previous run),
  length, the run's first count, then each next count as the zigzag-coded difference to the one before.
  Occupied bins of real data come in long runs of similar counts, so this saves the varint coding's gap
  byte per bin and most of each count's high bytes (docs/sketch.md: ~45% smaller on heavy-tailed data).
"""

from __future__ import annotations

import numpy as np

from .errors import ProtocolError
from .tables import SCHEMAS

_L = SCHEMAS["step"]["properties"]["hist"]["properties"]
SKETCH_HIST_BINS = 2 + ((_L["exp_max"]["const"] - _L["exp_min"]["const"]) << _L["mant_bits"]["const"])  # 16386
HIST_CODINGS = tuple(_L["coding"]["enum"])  # "dense" (default: f64[16386] per hist), "varint", "runs"
_MAX_COUNT = 2**53 - 1


def _bad(name: str, why: str) -> ProtocolError:
    return ProtocolError("E_SKETCH_LAYOUT", f"{name}: {why}")


def _leb128(vals: np.ndarray) -> np.ndarray:
    """Unsigned LEB128 of each value (uint64), concatenated."""
    n = np.ones(vals.size, np.int64)  # bytes per varint
    for k in range(1, 8):
        n += vals >= np.uint64(1 << (7 * k))
    start = np.cumsum(n) - n
    out = np.empty(int(n.sum()), np.uint8)
    for k in range(8):
        m = n > k
        byte = (vals[m] >> np.uint64(7 * k)) & np.uint64(127)
        out[start[m] + k] = byte.astype(np.uint8) | np.where(n[m] > k + 1, 128, 0).astype(np.uint8)
    return out


def _unleb128(buf: np.ndarray, name: str) -> np.ndarray:
    """The values of a LEB128 stream (uint64); E_SKETCH_LAYOUT if truncated, a varint is over 8 bytes or not minimal."""
    b = np.asarray(buf, np.uint8)
    if b.size == 0:
        return np.zeros(0, np.uint64)
    ends = np.flatnonzero(b < 128)
    if ends.size == 0 or ends[-1] != b.size - 1:
        raise _bad(name, "truncated varint stream")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lens = ends - starts + 1
    if lens.max() > 8 or bool(np.any((lens > 1) & (b[ends] == 0))):
        raise _bad(name, "a varint is longer than 8 bytes or not minimal")
    pos = np.arange(b.size) - np.repeat(starts, lens)
    return np.add.reduceat((b & 127).astype(np.uint64) << (7 * pos).astype(np.uint64), starts)


def encode_hist_varint(counts: np.ndarray) -> np.ndarray:
    """A dense histogram (integer counts) as its "varint" coding."""
    c = np.asarray(counts)
    nz = np.flatnonzero(c)
    vals = np.empty(2 * nz.size, np.uint64)
    vals[0::2] = np.diff(nz, prepend=-1) - 1
    vals[1::2] = c[nz].astype(np.uint64)
    return _leb128(vals)


def decode_hist_varint(buf: np.ndarray, name: str = "hist") -> np.ndarray:
    """The dense f64 histogram of a "varint" hist buffer; E_SKETCH_LAYOUT if it is not a well-formed one
    (truncated, a varint over 8 bytes or not minimal, a zero count, a count over 2^53 - 1, a bin out of range)."""
    vals = _unleb128(buf, name)
    out = np.zeros(SKETCH_HIST_BINS, np.float64)
    if vals.size == 0:
        return out
    if vals.size % 2:
        raise _bad(name, "truncated varint stream")
    gaps, counts = vals[0::2], vals[1::2]
    if bool(np.any(counts == 0)) or bool(np.any(counts > _MAX_COUNT)):
        raise _bad(name, "a count is 0 or over 2^53 - 1")
    if bool(np.any(gaps >= SKETCH_HIST_BINS)):  # before the cumsum, which could otherwise wrap
        raise _bad(name, "a bin index is past the last bin")
    idx = np.cumsum(gaps + np.uint64(1)) - np.uint64(1)
    if int(idx[-1]) >= SKETCH_HIST_BINS:
        raise _bad(name, "a bin index is past the last bin")
    out[idx.astype(np.int64)] = counts.astype(np.float64)
    return out


def encode_hist_runs(counts: np.ndarray) -> np.ndarray:
    """A dense histogram (integer counts) as its "runs" coding."""
    c = np.asarray(counts)
    nz = np.flatnonzero(c)
    if nz.size == 0:
        return np.zeros(0, np.uint8)
    first = np.concatenate([[0], np.flatnonzero(np.diff(nz) != 1) + 1])  # index in nz of each run's first bin
    last = np.concatenate([first[1:], [nz.size]]) - 1
    at = first + 2 * np.arange(first.size)  # each run's (gap, length) header, then its counts
    vals = np.empty(nz.size + 2 * first.size, np.uint64)
    vals[at] = nz[first] - np.concatenate([[-1], nz[last[:-1]]]) - 1
    vals[at + 1] = last - first + 1
    mask = np.ones(vals.size, bool)
    mask[at], mask[at + 1] = False, False
    cnt = c[nz].astype(np.int64)
    d = np.diff(cnt, prepend=0)
    d[first] = cnt[first]  # a run starts with its count; then differences, zigzag: 0, -1, 1, -2 → 0, 1, 2, 3
    vals[mask] = np.where(d >= 0, 2 * d, -2 * d - 1).astype(np.uint64)
    vals[at + 2] = cnt[first].astype(np.uint64)
    return _leb128(vals)


def decode_hist_runs(buf: np.ndarray, name: str = "hist") -> np.ndarray:
    """The dense f64 histogram of a "runs" hist buffer; E_SKETCH_LAYOUT if it is not a well-formed one (as
    "varint", plus: a run of length 0, a run past the last bin, a gap of 0 between runs (runs are maximal))."""
    vals = _unleb128(buf, name)
    out = np.zeros(SKETCH_HIST_BINS, np.float64)
    i, bin_ = 0, 0  # bin_: the first bin after the previous run
    while i < vals.size:
        if i + 1 >= vals.size:
            raise _bad(name, "truncated varint stream")
        gap, n = int(vals[i]), int(vals[i + 1])
        if i and gap == 0:
            raise _bad(name, "a gap of 0 between runs (runs must be maximal)")
        if n == 0:
            raise _bad(name, "a run of length 0")
        start = bin_ + gap
        if start + n > SKETCH_HIST_BINS:
            raise _bad(name, "a bin index is past the last bin")
        if i + 2 + n > vals.size:
            raise _bad(name, "truncated varint stream")
        head = vals[i + 2]
        zz = vals[i + 3:i + 2 + n]
        d = (zz >> np.uint64(1)).astype(np.int64)
        if head > _MAX_COUNT or bool(np.any(d > _MAX_COUNT)):  # |difference| ≤ 2^53 − 2 between valid counts
            raise _bad(name, "a count is 0 or over 2^53 - 1")
        d = np.where((zz & np.uint64(1)) == 1, -d - 1, d)
        run = int(head) + np.cumsum(np.concatenate([[0], d]))  # exact up to the first bad count (|each| < 2^54)
        if bool(np.any(run < 1)) or bool(np.any(run > _MAX_COUNT)):
            raise _bad(name, "a count is 0 or over 2^53 - 1")
        out[start:start + n] = run.astype(np.float64)
        i, bin_ = i + 2 + n, start + n
    return out


HIST_DECODERS = {"varint": decode_hist_varint, "runs": decode_hist_runs}
