"""Stage D of a `step` with `sketch: true` (proto/README.md "Sketch payloads"): stateless, so the golden
vectors and both decoders agree on it (ts-core/src/protocol/sketch.ts is the engine's)."""

from __future__ import annotations

import re

import numpy as np

from .arrays import DTYPES
from .errors import ProtocolError
from .histcoding import HIST_CODINGS, HIST_DECODERS, SKETCH_HIST_BINS
from .schema_check import MAX_SAFE_INT, is_int
from .tables import PAIRS, SCHEMAS

# Sketch payloads (proto/README.md "Sketch payloads"); sketch/layout.py computes them and checks it agrees.
_LAYOUT = SCHEMAS["step"]["properties"]["hist"]["properties"]
SKETCH_HIST = {k: _LAYOUT[k]["const"] for k in ("exp_min", "exp_max", "mant_bits")}  # from step.schema.json
SKETCH_SUMS_FIELDS = (
    "n", "nonfinite", "sum", "sum_abs", "sum_sq", "sum_k3", "exceed_1_5", "exceed_2", "exceed_3", "clip",
    "abs_max", "lse_max", "lse_sum", "lse2_sum", "seq_n", "seq_max", "seq_sum", "seq2_sum",
    "seqn_max", "seqn_sum", "seqn2_sum",
)  # fmt: skip
SKETCH_SLICES = ("all", "pre_tool", "post_tool", "tool_output")
# User slices in a sketch step: `sketch/<pair>/user/<id>/...`, id < this and < len(slice_names) (each one is a
# histogram per pair in the ranks' reduce and on the wire, so the count is bounded).
SKETCH_MAX_USER_SLICES = 16
# `sketch/per_rank`: f64, row-major (rank, sums buffer in buffer order, field), from each rank's own sketch.
SKETCH_PER_RANK = "sketch/per_rank"
SKETCH_PER_RANK_FIELDS = tuple(SCHEMAS["step"]["properties"]["per_rank"]["properties"]["fields"]["const"])
_SKETCH_BUFFER = re.compile(r"^sketch/([a-z_]+)/([a-z_]+|user/(?:0|[1-9][0-9]*))/(hist|sums)$")


def is_uint(v) -> bool:
    return is_int(v) and 0 <= v <= MAX_SAFE_INT


def check_sketch_step(h: dict, b: dict[str, np.ndarray]) -> None:
    """Stage D of a step with `sketch: true`: layout, field list, slice counts, then each buffer in order."""
    hist = h.get("hist")
    if not isinstance(hist, dict) or any(hist.get(k) != v for k, v in SKETCH_HIST.items()):
        raise ProtocolError("E_SKETCH_LAYOUT", f"hist layout {hist!r} != {SKETCH_HIST!r}")
    coding = hist.get("coding", "dense")
    if coding not in HIST_CODINGS:
        raise ProtocolError("E_SKETCH_LAYOUT", f"hist.coding {coding!r} is not one of {list(HIST_CODINGS)}")
    sf = h.get("sums_fields")
    if not isinstance(sf, list) or sf != list(SKETCH_SUMS_FIELDS):
        raise ProtocolError("E_SKETCH_LAYOUT", f"sums_fields must be {list(SKETCH_SUMS_FIELDS)}")
    sc = h.get("slice_counts")
    for s in ("pre_tool", "post_tool", "tool_output"):
        if not isinstance(sc, dict) or not is_uint(sc.get(s)):
            raise ProtocolError("E_SKETCH_LAYOUT", f"slice_counts.{s} must be a non-negative integer")
    user = h.get("slice_names") or []
    if len(user) > SKETCH_MAX_USER_SLICES or len(set(user)) != len(user):
        raise ProtocolError("E_SKETCH_LAYOUT", f"a sketch step takes at most {SKETCH_MAX_USER_SLICES} distinct slice_names")
    have: dict[str, int] = {}
    for name, arr in b.items():
        if name == SKETCH_PER_RANK:
            if arr.dtype != DTYPES["f64"]:
                raise ProtocolError("E_DTYPE", f"buffer {name} must be f64")
            continue
        m = _SKETCH_BUFFER.match(name)
        if not m:
            raise ProtocolError("E_SKETCH_LAYOUT", f"unexpected buffer {name} in a sketch step")
        pair, slice_, kind = m.groups()
        if pair not in PAIRS or not (slice_ in SKETCH_SLICES or slice_.startswith("user/") and int(slice_[5:]) < len(user)):
            raise ProtocolError("E_SKETCH_LAYOUT", f"unknown pair/slice in {name} (a user slice id must be < len(slice_names))")
        if kind == "hist" and coding != "dense":
            if arr.dtype != DTYPES["u8"]:
                raise ProtocolError("E_DTYPE", f"buffer {name} must be u8 (hist.coding {coding})")
            if slice_ == "all" and arr.size:
                raise ProtocolError("E_SKETCH_LAYOUT", f"{name} must be empty ({coding}: all = pre_tool + post_tool)")
            HIST_DECODERS[coding](arr, name)
            have[f"{pair}/{slice_}"] = have.get(f"{pair}/{slice_}", 0) | 1
            continue
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
    for key, got in have.items():
        if got != 3:
            raise ProtocolError("E_SKETCH_LAYOUT", f"sketch/{key} needs both hist and sums")
    _check_per_rank(h, b, len(have))


def _check_per_rank(h: dict, b: dict[str, np.ndarray], rows: int) -> None:
    """Step 6: `per_rank` and the `sketch/per_rank` buffer come together and agree with the sums buffers."""
    pr, arr = h.get("per_rank"), b.get(SKETCH_PER_RANK)
    if pr is None and arr is None:
        return
    if not isinstance(pr, dict) or arr is None:
        raise ProtocolError("E_SKETCH_LAYOUT", "per_rank and the sketch/per_rank buffer must be sent together")
    ranks, tokens = pr.get("ranks"), pr.get("tokens")
    if ranks != h.get("world_size") or not is_uint(ranks):
        raise ProtocolError("E_SKETCH_LAYOUT", f"per_rank.ranks {ranks!r} must equal world_size {h.get('world_size')!r}")
    if list(pr.get("fields") or ()) != list(SKETCH_PER_RANK_FIELDS):
        raise ProtocolError("E_SKETCH_LAYOUT", f"per_rank.fields must be {list(SKETCH_PER_RANK_FIELDS)}")
    if not isinstance(tokens, list) or len(tokens) != ranks or not all(is_uint(t) for t in tokens):
        raise ProtocolError("E_SKETCH_LAYOUT", "per_rank.tokens must be ranks non-negative integers")
    want = ranks * rows * len(SKETCH_PER_RANK_FIELDS)
    if arr.shape[0] != want:
        raise ProtocolError("E_FRAME_LENGTH", f"buffer {SKETCH_PER_RANK} has {arr.shape[0]} elements, want {want} "
                            f"(ranks × sums buffers × fields)")
    if not bool(np.all(arr[0::len(SKETCH_PER_RANK_FIELDS)] >= 0)):
        raise ProtocolError("E_SKETCH_LAYOUT", f"{SKETCH_PER_RANK}: every n must be a count")
