"""The sketch layout (proto/README.md "Sketch payloads"): histogram bins, the sums fields and how ranks
merge them, and the `Sketch` container. Must equal the wire contract in `tailguard.wire` (checked below)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..wire import (PAIRS, SKETCH_HIST, SKETCH_HIST_BINS, SKETCH_MAX_USER_SLICES, SKETCH_SUMS_FIELDS, ProtocolError,
                    encode_hist_runs, encode_hist_varint)

HIST_EXP_MIN = -24
HIST_EXP_MAX = 8
HIST_MANT_BITS = 9
HIST_BINS = 2 + ((HIST_EXP_MAX - HIST_EXP_MIN) << HIST_MANT_BITS)  # 16386
HIST_LAYOUT = {"exp_min": HIST_EXP_MIN, "exp_max": HIST_EXP_MAX, "mant_bits": HIST_MANT_BITS}
_BITS_MIN = (127 + HIST_EXP_MIN) << 23  # float32 bits of 2^-24
_BITS_MAX = (127 + HIST_EXP_MAX) << 23  # float32 bits of 2^8
_SHIFT = 23 - HIST_MANT_BITS

BUILTIN_SLICES = ("all", "pre_tool", "post_tool", "tool_output")
# Disjoint base slices computed in one pass; "all" = pre_tool + post_tool (model tokens).
_BASE = ("pre_tool", "post_tool", "tool_output")

EXCEED_LOG = (math.log(1.5), math.log(2.0), math.log(3.0))

# Field order of `sketch/<pair>/<slice>/sums`. Kinds say how ranks merge:
# "sum" adds, "max" takes the maximum, "lse:<max field>" is a scaled exp-sum relative to that max.
SUMS_FIELDS: tuple[tuple[str, str], ...] = (
    ("n", "sum"),  # finite tokens
    ("nonfinite", "sum"),
    ("sum", "sum"),  # Σℓ
    ("sum_abs", "sum"),  # Σ|ℓ|
    ("sum_sq", "sum"),  # Σℓ²
    ("sum_k3", "sum"),  # Σ(expm1(ℓ) − ℓ)
    ("exceed_1_5", "sum"),  # #{|ℓ| > log 1.5}
    ("exceed_2", "sum"),
    ("exceed_3", "sum"),
    ("clip", "sum"),  # #{w < 1−ε_low or w > 1+ε_high}
    ("abs_max", "max"),
    ("lse_max", "max"),  # m = max ℓ
    ("lse_sum", "lse:lse_max"),  # Σ exp(ℓ − m)
    ("lse2_sum", "lse2:lse_max"),  # Σ exp(2(ℓ − m))
    ("seq_n", "sum"),  # sequences with ≥1 finite token in the slice
    ("seq_max", "max"),  # max L_i, L_i = Σ_t ℓ_t
    ("seq_sum", "lse:seq_max"),
    ("seq2_sum", "lse2:seq_max"),
    ("seqn_max", "max"),  # max L_i/|y_i|
    ("seqn_sum", "lse:seqn_max"),
    ("seqn2_sum", "lse2:seqn_max"),
)
FIELD_INDEX = {name: i for i, (name, _) in enumerate(SUMS_FIELDS)}
# The wire contract lives in wire/ (no torch there); this module must compute exactly that layout.
assert tuple(FIELD_INDEX) == SKETCH_SUMS_FIELDS and HIST_LAYOUT == SKETCH_HIST and HIST_BINS == SKETCH_HIST_BINS
N_FIELDS = len(SUMS_FIELDS)
_MAX_IDX = [i for i, (_, kind) in enumerate(SUMS_FIELDS) if kind == "max"]
_LSE = [(i, FIELD_INDEX[k.split(":")[1]], 2.0 if k.startswith("lse2") else 1.0)
        for i, (_, k) in enumerate(SUMS_FIELDS) if k.startswith("lse")]


def check_user_slices(slice_names) -> list[str]:
    """The user slice names of a sketch: distinct strs, at most SKETCH_MAX_USER_SLICES (each costs a histogram
    per pair in the reduce and on the wire), else E_SKETCH_LAYOUT, the engine's answer to such a step."""
    names = list(slice_names or ())
    if len(names) > SKETCH_MAX_USER_SLICES or len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
        raise ProtocolError("E_SKETCH_LAYOUT", f"sketch mode takes at most {SKETCH_MAX_USER_SLICES} distinct user slice "
                            f"names, got {len(names)} ({len(set(names))} distinct): merge slice ids or use mode='raw'")
    return names


def hist_bins(abs_vals: torch.Tensor) -> torch.Tensor:
    """Bin index (int64) of finite, non-negative float32 values: the engine's bit-histogram formula."""
    bits = abs_vals.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    mid = 1 + ((bits - _BITS_MIN) >> _SHIFT)
    return torch.where(bits < _BITS_MIN, 0, torch.where(bits >= _BITS_MAX, HIST_BINS - 1, mid))


@dataclass
class Sketch:
    """One step's sketch: `hist[p, s]` and `sums[p, s]` for pair p × slice s (float64 tensors)."""

    pairs: list[str]
    slices: list[str]
    hist: torch.Tensor  # (P, S, HIST_BINS) float64
    sums: torch.Tensor  # (P, S, N_FIELDS) float64
    tokens: int
    n_seqs: int
    slice_counts: dict[str, int] = field(default_factory=dict)
    per_rank: torch.Tensor | None = None  # (world, P, S, 4): PER_RANK_FIELDS of each rank's own sketch
    rank_tokens: list[int] | None = None  # completion tokens of each rank, with per_rank
    failed: int = 0  # ranks whose part could not be computed (summed by reduce_sketch; then nothing is sent)

    @property
    def slice_names(self) -> list[str]:
        """User slice names, index = slice id (the step header's `slice_names`)."""
        return [s[len("user:"):] for s in self.slices[len(BUILTIN_SLICES):]]

    def field(self, pair: str, slice_: str, name: str) -> float:
        return float(self.sums[self.pairs.index(pair), self.slices.index(slice_), FIELD_INDEX[name]])

    def buffers(self, coding: str = "runs") -> dict[str, "object"]:
        """Wire buffers (host numpy), named `sketch/<pair>/<slice>/{hist,sums}` (user slice k: `.../user/<k>/...`,
        sent only where it has tokens, as raw mode reports it). `coding` (the step header's `hist.coding`):
        "runs" (≤ 64 KB a pair in practice) or "varint" code each hist as u8 varints of its non-zero bins, and
        `all`'s is empty (= pre_tool + post_tool, exact); "dense": f64[HIST_BINS] (526 KB a pair)."""
        encode = {"runs": encode_hist_runs, "varint": encode_hist_varint}.get(coding)
        hist = self.hist.detach().cpu().numpy()
        sums = self.sums.detach().cpu().numpy()
        out = {}
        rows = []  # (pair, slice) of each sums buffer, in buffer order: the order of sketch/per_rank's rows
        B = len(BUILTIN_SLICES)
        for p, pair in enumerate(self.pairs):
            for s, sl in enumerate(self.slices):
                if s >= B:
                    if sums[p, s, FIELD_INDEX["n"]] + sums[p, s, FIELD_INDEX["nonfinite"]] == 0:
                        continue
                    sl = f"user/{s - B}"
                rows.append((p, s))
                if coding == "dense":
                    out[f"sketch/{pair}/{sl}/hist"] = hist[p, s]
                else:
                    out[f"sketch/{pair}/{sl}/hist"] = (np.zeros(0, np.uint8) if sl == "all"
                                                       else encode(hist[p, s]))
                out[f"sketch/{pair}/{sl}/sums"] = sums[p, s]
        if self.per_rank is not None:
            pr = self.per_rank.detach().cpu().numpy()
            idx = np.array(rows, np.int64).reshape(-1, 2)
            out["sketch/per_rank"] = np.ascontiguousarray(pr[:, idx[:, 0], idx[:, 1], :], np.float64).reshape(-1)
        return out


