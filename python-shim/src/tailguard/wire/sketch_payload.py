"""Stage D of a `step` with `sketch: true` (proto/README.md "Sketch payloads"): stateless, so the golden
vectors and both decoders agree on it (ts-core/src/protocol/sketch.ts is the engine's)."""

from __future__ import annotations

import re

import numpy as np

from .arrays import DTYPES
from .errors import ProtocolError
from .schema_check import MAX_SAFE_INT, is_int
from .tables import PAIRS, SCHEMAS

# Sketch payloads (proto/README.md "Sketch payloads"); sketch/layout.py computes them and checks it agrees.
_LAYOUT = SCHEMAS["step"]["properties"]["hist"]["properties"]
SKETCH_HIST = {k: _LAYOUT[k]["const"] for k in ("exp_min", "exp_max", "mant_bits")}  # from step.schema.json
SKETCH_HIST_BINS = 2 + ((SKETCH_HIST["exp_max"] - SKETCH_HIST["exp_min"]) << SKETCH_HIST["mant_bits"])  # 16386
SKETCH_SUMS_FIELDS = (
    "n", "nonfinite", "sum", "sum_abs", "sum_sq", "sum_k3", "exceed_1_5", "exceed_2", "exceed_3", "clip",
    "abs_max", "lse_max", "lse_sum", "lse2_sum", "seq_n", "seq_max", "seq_sum", "seq2_sum",
    "seqn_max", "seqn_sum", "seqn2_sum",
)  # fmt: skip
SKETCH_SLICES = ("all", "pre_tool", "post_tool", "tool_output")
_SKETCH_BUFFER = re.compile(r"^sketch/([a-z_]+)/([a-z_]+)/(hist|sums)$")


def is_uint(v) -> bool:
    return is_int(v) and 0 <= v <= MAX_SAFE_INT


def check_sketch_step(h: dict, b: dict[str, np.ndarray]) -> None:
    """Stage D of a step with `sketch: true`: layout, field list, slice counts, then each buffer in order."""
    hist = h.get("hist")
    if not isinstance(hist, dict) or any(hist.get(k) != v for k, v in SKETCH_HIST.items()):
        raise ProtocolError("E_SKETCH_LAYOUT", f"hist layout {hist!r} != {SKETCH_HIST!r}")
    sf = h.get("sums_fields")
    if not isinstance(sf, list) or sf != list(SKETCH_SUMS_FIELDS):
        raise ProtocolError("E_SKETCH_LAYOUT", f"sums_fields must be {list(SKETCH_SUMS_FIELDS)}")
    sc = h.get("slice_counts")
    for s in ("pre_tool", "post_tool", "tool_output"):
        if not isinstance(sc, dict) or not is_uint(sc.get(s)):
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
