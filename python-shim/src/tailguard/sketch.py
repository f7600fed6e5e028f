"""Sketch mode: per-step histograms and exact sums computed on the tensors' own device,
reduced across ranks with ``torch.distributed``, so that rank 0 sends one small message
whose size depends on neither the token count nor the number of ranks.

The layout is the engine's (proto/README.md "Sketch payloads", docs/sketch.md):

- ``sketch/<pair>/<slice>/hist`` (f64, HIST_BINS = 16386): counts of finite |ℓ| per float32-bit bin.
- ``sketch/<pair>/<slice>/sums`` (f64, ``len(SUMS_FIELDS)``): the exact sums, in ``SUMS_FIELDS`` order.

Counts travel as f64 because a bin can exceed 2^32 at the scale this mode is for
(10^8 tokens per rank × 43 ranks); f64 counts are exact up to 2^53.

Example (run by pytest --doctest-modules):

>>> import torch
>>> from tailguard.sketch import compute_sketch
>>> lr = torch.tensor([0.0, 0.5, -1.0, 2.0])
>>> sk = compute_sketch({"policy_vs_ref": lr}, torch.ones(4, dtype=torch.uint8),
...                     torch.tensor([1, 0, 1, 1], dtype=torch.uint8), torch.tensor([0, 4]))
>>> int(sk.field("policy_vs_ref", "post_tool", "n"))
2
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from .wire import PAIRS, SKETCH_HIST, SKETCH_HIST_BINS, SKETCH_SUMS_FIELDS

log = logging.getLogger("tailguard")

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
    per_rank: torch.Tensor | None = None  # (world, P, S, 4): n, abs_q99, abs_mean, ess
    failed: int = 0  # ranks whose part could not be computed (summed by reduce_sketch; then nothing is sent)

    def field(self, pair: str, slice_: str, name: str) -> float:
        return float(self.sums[self.pairs.index(pair), self.slices.index(slice_), FIELD_INDEX[name]])

    def buffers(self) -> dict[str, "object"]:
        """Wire buffers (host numpy float64), named `sketch/<pair>/<slice>/{hist,sums}`."""
        hist = self.hist.detach().cpu().numpy()
        sums = self.sums.detach().cpu().numpy()
        out = {}
        for p, pair in enumerate(self.pairs):
            for s, sl in enumerate(self.slices):
                out[f"sketch/{pair}/{sl}/hist"] = hist[p, s]
                out[f"sketch/{pair}/{sl}/sums"] = sums[p, s]
        if self.per_rank is not None:
            out["sketch/per_rank"] = self.per_rank.detach().cpu().numpy().reshape(-1)
        return out


def _seq_index(offsets: torch.Tensor, T: int) -> torch.Tensor:
    """Sequence index (int32) of each token: a cumulative count of sequence starts (no repeat_interleave)."""
    bump = torch.zeros(T + 1, dtype=torch.int32, device=offsets.device)
    starts = offsets[1:-1].to(torch.int64)
    bump.index_add_(0, starts, torch.ones_like(starts, dtype=torch.int32))  # empty sequences bump twice
    return torch.cumsum(bump[:T], 0, dtype=torch.int32)


def slice_codes(completion_mask: torch.Tensor, tool_mask: torch.Tensor, offsets: torch.Tensor,
                seq: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token code (int32) 0=pre_tool, 1=post_tool, 2=tool_output, 3=not in any slice (padding)."""
    cm = completion_mask.to(torch.bool)
    T = cm.numel()
    if T == 0:
        return torch.zeros(0, dtype=torch.int32, device=cm.device)
    tool_out = cm & ~tool_mask.to(torch.bool)
    if seq is None:
        seq = _seq_index(offsets, T)
    cum = torch.cumsum(tool_out, 0, dtype=torch.int32)
    start = offsets[:-1].to(torch.int64)
    before = torch.where(start > 0, cum[(start - 1).clamp(min=0)], 0).to(torch.int32)
    seen = cum > before[seq]  # a tool-output token earlier in this sequence (or this one)
    return torch.where(cm, torch.where(tool_out, 2, seen.to(torch.int32)), 3).to(torch.int32)


# w − 1 − ℓ = ℓ²·(1/2 + ℓ/6 + ℓ²/24 + ℓ³/120) for |ℓ| < 1e-3 (truncation < 3e-15 relative); above it
# expm1(ℓ) − ℓ loses at most 2ε/|ℓ| < 5e-13 relative to cancellation.
_K3_COEF = (0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0)
_K3_SERIES_MAX = 1e-3


def _k3_terms(v: torch.Tensor, small: torch.Tensor, sq: torch.Tensor | None = None) -> torch.Tensor:
    """w − 1 − ℓ without harmful cancellation (float64), series where `small` (|ℓ| < 1e-3); inf where exp
    overflows, as in the engine."""
    acc = v * _K3_COEF[3]
    acc.add_(_K3_COEF[2]).mul_(v).add_(_K3_COEF[1]).mul_(v).add_(_K3_COEF[0]).mul_(v * v if sq is None else sq)
    return torch.where(small, acc, torch.expm1(v).sub_(v))


def _f32_above(t: float) -> float:
    """The largest float32 ≤ t: for float32 x, x > t ⇔ x > _f32_above(t)."""
    f = np.float32(t)
    return float(np.nextafter(f, np.float32(-np.inf)) if float(f) > t else f)


def _f32_below(t: float) -> float:
    """The smallest float32 ≥ t: for float32 x, x < t ⇔ x < _f32_below(t)."""
    f = np.float32(t)
    return float(np.nextafter(f, np.float32(np.inf)) if float(f) < t else f)


def _bits(f: float) -> int:
    return int(np.array(f, np.float32).view(np.int32))


# 1 + ((bits − _BITS_MIN) >> s) == (bits − _BIN_BIAS) >> s: one subtraction fewer per token.
_BIN_BIAS = _BITS_MIN - (1 << _SHIFT)
# |ℓ| > log C ⇔ bits(|ℓ|) > bits(largest float32 ≤ log C): compared as int32, exactly as in float64.
_EXCEED_BITS = tuple(_bits(_f32_above(t)) for t in EXCEED_LOG)
# |ℓ| < 1e-3 ⇔ bits(|ℓ|) < bits(smallest float32 ≥ 1e-3).
_K3_SERIES_BITS = _bits(_f32_below(_K3_SERIES_MAX))


def _pair_base(x: torch.Tensor, code: torch.Tensor, seq: torch.Tensor, n_seqs: int, clip_lo: float,
               clip_hi: float, code_counts: torch.Tensor, lane: torch.Tensor):
    """hist (3, BINS), sums (3, F), L and |y| (3, n_seqs) for the disjoint base slices of one pair.

    One key per token, `c` = slice or the discard slot K (not finite, or padding); every per-slice reduction is
    a single bincount over `c·width + index`, so |ℓ|'s bits, bins and terms are computed once per pair.
    """
    K = len(_BASE)
    bits = x.to(torch.float32).view(torch.int32) & 0x7FFFFFFF  # bits of |ℓ|; ≥ 0x7F800000 ⇔ NaN/±Inf
    nonfinite = bits >= 0x7F800000
    c = code.masked_fill(nonfinite, K)
    bits.masked_fill_(nonfinite, 0)
    v32 = x.to(torch.float32).masked_fill(nonfinite, 0.0)
    b = (bits - _BIN_BIAS).bitwise_right_shift_(_SHIFT).clamp_(0, HIST_BINS - 1)
    hist = torch.bincount(b.add_(c, alpha=HIST_BINS), minlength=(K + 1) * HIST_BINS)[: K * HIST_BINS]
    hist = hist.view(K, HIST_BINS).to(torch.float64)
    # Counts: key = c·8 + level·2 + clipped, where level = #{log C < |ℓ|}.
    lvl = (bits > _EXCEED_BITS[0]).to(torch.int32)
    lvl.add_(bits > _EXCEED_BITS[1]).add_(bits > _EXCEED_BITS[2])
    lvl.mul_(2).add_((v32 < _f32_below(clip_lo)) | (v32 > _f32_above(clip_hi)))
    cnt = torch.bincount(lvl.add_(c, alpha=8), minlength=8 * (K + 1))[: 8 * K].view(K, 4, 2).to(torch.float64)
    F = FIELD_INDEX
    sums = torch.zeros((K, N_FIELDS), dtype=torch.float64, device=x.device)
    n = cnt.sum((1, 2))
    sums[:, F["n"]] = n
    sums[:, F["nonfinite"]] = code_counts[:K].to(torch.float64) - n
    sums[:, F["exceed_1_5"]] = cnt[:, 1:].sum((1, 2))
    sums[:, F["exceed_2"]] = cnt[:, 2:].sum((1, 2))
    sums[:, F["exceed_3"]] = cnt[:, 3].sum(1)
    sums[:, F["clip"]] = cnt[:, :, 1].sum(1)
    # Sums of float32-derived terms, in float64 (exact to float64 rounding).
    v = v32.to(torch.float64)
    a = bits.view(torch.float32).to(torch.float64)
    sq = v * v
    # Weighted bincounts keyed by slice alone add into one accumulator per slice, a serial chain of float
    # adds; 4 lanes (token index mod 4) break it (3.5 → 1.3 ns/token measured).
    ck = torch.add(lane, c, alpha=4)
    bc = lambda w: torch.bincount(ck, weights=w, minlength=4 * (K + 1))[: 4 * K].view(K, 4).sum(1)  # noqa: E731
    sums[:, F["sum"]] = bc(v)
    sums[:, F["sum_abs"]] = bc(a)
    sums[:, F["sum_sq"]] = bc(sq)
    sums[:, F["sum_k3"]] = bc(_k3_terms(v, bits < _K3_SERIES_BITS, sq))
    # Per-sequence sums L_i and lengths |y_i| per base slice (finite tokens).
    skey = torch.add(seq, c, alpha=n_seqs).mul_(4).add_(lane)  # a sequence's tokens are contiguous: lanes again
    nk = 4 * (K + 1) * n_seqs
    L = torch.bincount(skey, weights=v, minlength=nk)[: 4 * K * n_seqs].view(K, n_seqs, 4).sum(2)
    ln = torch.bincount(skey, minlength=nk)[: 4 * K * n_seqs].view(K, n_seqs, 4).sum(2)
    c64 = c.to(torch.int64)  # scatter_reduce wants int64 indices
    amax = torch.zeros(K + 1, dtype=torch.float64, device=x.device)
    sums[:, F["abs_max"]] = amax.scatter_reduce(0, c64, a, reduce="amax", include_self=True)[:K]
    m = torch.full((K + 1,), -math.inf, dtype=torch.float64, device=x.device)
    m = m.scatter_reduce(0, c64, v, reduce="amax", include_self=True)
    e = torch.exp(v.sub_(m.index_select(0, c)))  # v is not needed after this
    sums[:, F["lse_max"]], sums[:, F["lse_sum"]], sums[:, F["lse2_sum"]] = m[:K], bc(e), bc(e.mul_(e))
    return hist, sums, L, ln


def _lse_parts(vals: torch.Tensor, key: torch.Tensor, k: int):
    """Per-key max and scaled exp-sums Σexp(v−m), Σexp(2(v−m)) (float64)."""
    m = torch.full((k,), -math.inf, dtype=torch.float64, device=vals.device)
    m = m.scatter_reduce(0, key, vals, reduce="amax", include_self=True)
    d = vals - m[key]
    e = torch.exp(d)
    s1 = torch.bincount(key, weights=e, minlength=k)
    s2 = torch.bincount(key, weights=e.mul_(e), minlength=k)
    return m, s1, s2


def _seq_fields(sums_row: torch.Tensor, L: torch.Tensor, ln: torch.Tensor) -> None:
    F = FIELD_INDEX
    has = ln > 0
    Ls = L[has]
    sums_row[F["seq_n"]] = float(has.sum())
    if Ls.numel() == 0:
        sums_row[F["seq_max"]] = sums_row[F["seqn_max"]] = -math.inf
        return
    key = torch.zeros(Ls.numel(), dtype=torch.int64, device=L.device)
    for pre, vals in (("seq", Ls), ("seqn", Ls / ln[has].to(torch.float64))):
        m, s1, s2 = _lse_parts(vals, key, 1)
        sums_row[F[f"{pre}_max"]], sums_row[F[f"{pre}_sum"]], sums_row[F[f"{pre}2_sum"]] = m[0], s1[0], s2[0]


def _merge_rows(rows: torch.Tensor) -> torch.Tensor:
    """Merge sums rows (R, ..., F) of disjoint data into (..., F): the same rule as the rank merge."""
    out = rows.sum(0)
    for i in _MAX_IDX:
        out[..., i] = rows[..., i].amax(0)
    for i, mi, scale in _LSE:
        out[..., i] = _rescale(rows[..., i], rows[..., mi], out[..., mi].unsqueeze(0), scale).sum(0)
    return out


def _rescale(s: torch.Tensor, m_local: torch.Tensor, m_global: torch.Tensor, scale: float) -> torch.Tensor:
    """s·exp(scale·(m_local − m_global)), with empty parts (m_local = −inf) giving 0."""
    d = torch.where(torch.isfinite(m_local), scale * (m_local - m_global), torch.full_like(m_local, -math.inf))
    return torch.where(s > 0, s * torch.exp(d), torch.zeros_like(s))


def compute_sketch(
    pairs: Mapping[str, torch.Tensor],
    completion_mask: torch.Tensor,
    tool_mask: torch.Tensor,
    offsets: torch.Tensor,
    knobs: Mapping[str, float | None] | None = None,
    chunk_tokens: int | None = None,
) -> Sketch:
    """This rank's sketch of one step, computed with torch ops on the tensors' device.

    Args:
        pairs (`dict[str, torch.Tensor]`): flat float32 log-ratios, length T, per pair name.
        completion_mask (`torch.Tensor`): 1 = completion token, length T.
        tool_mask (`torch.Tensor`): 1 = model token, 0 = tool output (TRL convention), length T.
        offsets (`torch.Tensor`): sequence starts, length n_seqs+1, `offsets[-1] == T`.
        knobs (`dict`, *optional*): live trainer knobs; `epsilon_low`/`epsilon_high` set the clip band.
        chunk_tokens (`int`, *optional*): tokens per pass (cut at sequence boundaries); chunks merge exactly.
            Defaults to `2**17` on CPU, where a pass whose temporaries stay in cache is about 2× faster than one
            over 2**22 tokens (measured), and `2**22` on an accelerator, where launches are the fixed cost.
    """
    knobs = knobs or {}
    eps_lo = knobs.get("epsilon_low")
    eps_hi = knobs.get("epsilon_high")
    eps_lo = 0.2 if eps_lo is None else float(eps_lo)
    eps_hi = eps_lo if eps_hi is None else float(eps_hi)
    clip = (math.log(1.0 - eps_lo) if eps_lo < 1.0 else -math.inf, math.log1p(eps_hi))
    names = [p for p in PAIRS if p in pairs] + [p for p in pairs if p not in PAIRS]
    dev = completion_mask.device
    if chunk_tokens is None:
        chunk_tokens = 1 << 17 if dev.type == "cpu" else 1 << 22
    off = offsets.to("cpu", torch.int64)
    n_seqs = off.numel() - 1
    # Sequence-aligned cuts: the first sequence boundary at or after each multiple of chunk_tokens.
    cuts = [0]
    while cuts[-1] < n_seqs:
        nxt = int(torch.searchsorted(off, off[cuts[-1]] + chunk_tokens, right=False))
        cuts.append(min(max(nxt, cuts[-1] + 1), n_seqs))
    out = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        t0, t1 = int(off[a]), int(off[b])
        part = _compute_chunk({k: pairs[k].reshape(-1)[t0:t1] for k in names}, completion_mask[t0:t1],
                              tool_mask[t0:t1], (off[a:b + 1] - t0).to(dev), names, clip)
        out = part if out is None else merge_sketches([out, part])  # running merge: memory stays one sketch
    if out is None:
        out = _compute_chunk({k: pairs[k].reshape(-1)[:0] for k in names}, completion_mask[:0],
                             tool_mask[:0], torch.zeros(1, dtype=torch.int64, device=dev), names, clip)
    return out


def merge_sketches(parts: Sequence[Sketch]) -> Sketch:
    """Merge sketches of disjoint data (chunks of one rank, or ranks in one process)."""
    first = parts[0]
    hist = torch.stack([p.hist for p in parts]).sum(0)
    sums = torch.stack([p.sums for p in parts])  # (R, P, S, F)
    R, P, S, F = sums.shape
    merged = _merge_rows(sums.permute(1, 2, 0, 3).reshape(P * S, R, F).transpose(0, 1)).view(P, S, F)
    counts = {k: sum(p.slice_counts[k] for p in parts) for k in first.slice_counts}
    return Sketch(first.pairs, first.slices, hist, merged, sum(p.tokens for p in parts),
                  sum(p.n_seqs for p in parts), counts)


def _compute_chunk(pairs, completion_mask, tool_mask, offsets, names, clip) -> Sketch:
    dev = completion_mask.device
    n_seqs = offsets.numel() - 1
    seq = _seq_index(offsets, completion_mask.numel())
    code = slice_codes(completion_mask, tool_mask, offsets, seq)
    code_counts = torch.bincount(code, minlength=4)
    lane = torch.arange(code.numel(), dtype=torch.int32, device=dev) & 3
    S = len(BUILTIN_SLICES)
    hist = torch.zeros((len(names), S, HIST_BINS), dtype=torch.float64, device=dev)
    sums = torch.zeros((len(names), S, N_FIELDS), dtype=torch.float64, device=dev)
    for p, name in enumerate(names):
        h, sm, L, ln = _pair_base(pairs[name], code, seq, n_seqs, clip[0], clip[1], code_counts, lane)
        for b, sl in enumerate(_BASE):
            s = BUILTIN_SLICES.index(sl)
            hist[p, s], sums[p, s] = h[b], sm[b]
            _seq_fields(sums[p, s], L[b], ln[b])
        hist[p, 0] = h[0] + h[1]
        sums[p, 0] = _merge_rows(sm[:2])
        _seq_fields(sums[p, 0], L[0] + L[1], ln[0] + ln[1])
    counts = code_counts.tolist()
    slice_counts = {"all": counts[0] + counts[1], "pre_tool": counts[0], "post_tool": counts[1],
                    "tool_output": counts[2]}
    return Sketch(names, list(BUILTIN_SLICES), hist, sums, int(code.numel()), n_seqs, slice_counts)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def reduce_sketch(sk: Sketch, group=None, per_rank: bool = False) -> Sketch:
    """Merge every rank's sketch with two collectives (MAX of maxima, then SUM of the rest).

    Every rank must call it (it is a collective). Afterwards every rank holds the merged sketch;
    only rank 0 sends it. With `per_rank=True` a small fixed-size summary per rank is all-gathered
    too (n, abs_q99, abs_mean, ess per pair × slice), so a tail can still be traced to one rank.
    """
    dist = _dist()
    failed = sk.failed
    local = summarize(sk) if per_rank else None
    if dist is None or dist.get_world_size(group) == 1:
        if local is not None:
            sk.per_rank = local.unsqueeze(0)
        return sk
    # Only these small fixed-size vectors move, to where the backend reduces (gloo: CPU, NCCL: the GPU).
    dev = collective_device()
    sk = Sketch(sk.pairs, sk.slices, sk.hist.to(dev), sk.sums.to(dev), sk.tokens, sk.n_seqs, sk.slice_counts)
    local = None if local is None else local.to(dev)
    sums = sk.sums.clone()
    maxes = sums[..., _MAX_IDX].contiguous()
    dist.all_reduce(maxes, op=dist.ReduceOp.MAX, group=group)
    gmax = torch.empty_like(sums)
    gmax[..., _MAX_IDX] = maxes
    for i, mi, scale in _LSE:
        sums[..., i] = _rescale(sums[..., i], sums[..., mi], gmax[..., mi], scale)
    sums[..., _MAX_IDX] = 0.0
    counts = [sk.tokens, sk.n_seqs] + [sk.slice_counts[s] for s in BUILTIN_SLICES] + [failed]
    extra = torch.tensor(counts, dtype=torch.float64, device=sums.device)
    flat = torch.cat([sk.hist.reshape(-1), sums.reshape(-1), extra])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    nh = sk.hist.numel()
    hist = flat[:nh].view_as(sk.hist)
    sums = flat[nh:nh + sums.numel()].view_as(sums).clone()
    sums[..., _MAX_IDX] = maxes
    extra = flat[nh + sums.numel():].tolist()
    out = Sketch(sk.pairs, sk.slices, hist, sums, int(extra[0]), int(extra[1]),
                 {s: int(c) for s, c in zip(BUILTIN_SLICES, extra[2:])}, failed=int(extra[-1]))
    if local is not None:
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        out.per_rank = torch.stack(gathered)
    return out


def hist_quantile(hist: torch.Tensor, q: float) -> float:
    """Quantile of |ℓ| from bin counts: linear inside the bin [lo, hi) (for summaries only;
    the engine's own quantile rule is authoritative on the wire)."""
    total = float(hist.sum())
    if total <= 0:
        return math.nan
    target = q * total
    cum = torch.cumsum(hist, 0)
    b = int(torch.searchsorted(cum, torch.tensor(target, dtype=cum.dtype, device=cum.device)).clamp(max=HIST_BINS - 1))
    lo, hi = bin_edges(b)
    before = float(cum[b - 1]) if b > 0 else 0.0
    frac = (target - before) / max(float(hist[b]), 1.0)
    return lo + (hi - lo) * min(max(frac, 0.0), 1.0) if math.isfinite(hi) else lo


def bin_edges(b: int) -> tuple[float, float]:
    """[lo, hi) of bin b in |ℓ|."""
    if b == 0:
        return 0.0, 2.0 ** HIST_EXP_MIN
    if b == HIST_BINS - 1:
        return 2.0 ** HIST_EXP_MAX, math.inf
    k = b - 1
    e, m = divmod(k, 1 << HIST_MANT_BITS)
    base = 2.0 ** (HIST_EXP_MIN + e)
    step = base / (1 << HIST_MANT_BITS)
    return base + m * step, base + (m + 1) * step


def _log_ess(s1: float, s2: float, n: float) -> float:
    # ESS/N = (Σw)²/(N Σw²); the shared max cancels: exp(2 log s1 − log s2 − log N).
    return math.exp(2.0 * math.log(s1) - math.log(s2) - math.log(n)) if n > 0 and s1 > 0 else math.nan


def _expm1(v: float) -> float:
    return math.expm1(v) if v < 709.0 else math.inf


def metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """Moments, ESS, χ², KL and fractions from one sums row (same formulas as the engine)."""
    g = {name: float(sums[i]) for i, (name, _) in enumerate(SUMS_FIELDS)}
    n = g["n"]
    if n <= 0:
        return {"n": 0.0, "nonfinite": g["nonfinite"]}
    mean = g["sum"] / n
    var = max(g["sum_sq"] / n - mean * mean, 0.0)
    return {
        "n": n,
        "nonfinite": g["nonfinite"],
        "mean": mean,
        "abs_mean": g["sum_abs"] / n,
        "std": math.sqrt(var),
        "abs_max": g["abs_max"],
        "exceed_1_5": g["exceed_1_5"] / n,
        "exceed_2": g["exceed_2"] / n,
        "exceed_3": g["exceed_3"] / n,
        "ess": _log_ess(g["lse_sum"], g["lse2_sum"], n),
        "ess_seq": _log_ess(g["seq_sum"], g["seq2_sum"], g["seq_n"]),
        "ess_seq_norm": _log_ess(g["seqn_sum"], g["seqn2_sum"], g["seq_n"]),
        "chi2": _expm1(2.0 * g["lse_max"] + math.log(g["lse2_sum"]) - math.log(n)),
        "kl_k1": -mean,
        "kl_k2": g["sum_sq"] / (2.0 * n),
        "kl_k3": g["sum_k3"] / n,
        "clip_frac": g["clip"] / n,
    }


def summarize(sk: Sketch) -> torch.Tensor:
    """(P, S, 4) float64: n, abs_q99, abs_mean, ess per pair × slice, for per-rank attribution."""
    P, S = len(sk.pairs), len(sk.slices)
    out = torch.full((P, S, 4), math.nan, dtype=torch.float64, device=sk.sums.device)
    for p in range(P):
        for s in range(S):
            m = metrics_from_sums(sk.sums[p, s])
            out[p, s, 0] = m["n"]
            if m["n"] > 0:
                out[p, s, 1] = hist_quantile(sk.hist[p, s], 0.99)
                out[p, s, 2] = m["abs_mean"]
                out[p, s, 3] = m["ess"]
    return out


def step_header_fields(sk: Sketch) -> dict:
    """The sketch-specific fields of a `step` header (the client adds run_id, rank, step, ...)."""
    fields = {
        "sketch": True,
        "hist": dict(HIST_LAYOUT),
        "sums_fields": [name for name, _ in SUMS_FIELDS],
        "tokens": sk.tokens,
        "n_seqs": sk.n_seqs,
        "slice_counts": dict(sk.slice_counts),
    }
    if sk.per_rank is not None:
        fields["per_rank"] = {"ranks": int(sk.per_rank.shape[0]), "fields": ["n", "abs_q99", "abs_mean", "ess"]}
    return fields


def sketch_step_header(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> dict:
    """The full `step` header of a sketch step from rank 0, with the client's run identity."""
    from .client import step_header

    return {**step_header(client, step, knobs, logs, implicit, checkpoint), "chunk": {"index": 0, "count": 1},
            **step_header_fields(sk)}


def encode_sketch_step(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> list:
    """Frames of one sketch step message (one message: its size is fixed by pairs × slices)."""
    from .wire import encode_message

    return encode_message(sketch_step_header(client, step, sk, knobs, logs, implicit, checkpoint), sk.buffers())


def send_sketch_step(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> bool:
    """Queue a merged sketch on rank 0's `EngineClient` through its one step path (`send_step`): False when
    dropped, and then counted like any dropped step (never raises, never blocks beyond the send budget)."""
    return client.send_step(int(step), sk.buffers(), knobs=knobs, logs=logs, implicit=implicit,
                            checkpoint=checkpoint, sketch=step_header_fields(sk))


def _with_pairs(sk: Sketch, names: Sequence[str]) -> Sketch:
    """The same sketch over a fixed pair list (absent pairs empty), so every rank reduces equal shapes."""
    if list(sk.pairs) == list(names):
        return sk
    P, S = len(names), len(sk.slices)
    hist = torch.zeros((P, S, HIST_BINS), dtype=torch.float64, device=sk.hist.device)
    sums = torch.zeros((P, S, N_FIELDS), dtype=torch.float64, device=sk.sums.device)
    sums[..., [FIELD_INDEX[k] for k in ("lse_max", "seq_max", "seqn_max")]] = -math.inf
    for p, name in enumerate(names):
        if name in sk.pairs:
            hist[p], sums[p] = sk.hist[sk.pairs.index(name)], sk.sums[sk.pairs.index(name)]
    return Sketch(list(names), sk.slices, hist, sums, sk.tokens, sk.n_seqs, dict(sk.slice_counts))


def _present(sk: Sketch) -> Sketch:
    """Drop pairs with no token anywhere (not captured on any rank)."""
    seen = (sk.sums[..., FIELD_INDEX["n"]] + sk.sums[..., FIELD_INDEX["nonfinite"]]).sum(-1) > 0
    keep = [i for i in range(len(sk.pairs)) if bool(seen[i])]
    return Sketch([sk.pairs[i] for i in keep], sk.slices, sk.hist[keep], sk.sums[keep], sk.tokens, sk.n_seqs,
                  sk.slice_counts, sk.per_rank)


def collective_device():
    """Where the reduce runs: the current CUDA device under NCCL, else the CPU (gloo)."""
    dist = _dist()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sketch_payload(arrays: Mapping[str, object], names: Sequence[str], knobs=None, device=None) -> Sketch:
    """Sketch one rank's flattened step where its tensors live (the capture's device tensors in sketch mode;
    numpy arrays go to `collective_device()`)."""
    cm = arrays["completion_mask"]
    dev = device or (cm.device if isinstance(cm, torch.Tensor) else collective_device())
    t = lambda a: torch.as_tensor(a).to(dev)  # noqa: E731
    pairs = {p: t(arrays[p]) for p in names if arrays.get(p) is not None}
    sk = compute_sketch(pairs, t(arrays["completion_mask"]), t(arrays["tool_mask"]), t(arrays["offsets"]), knobs)
    return _with_pairs(sk, names)


def _empty_sketch(names: Sequence[str]) -> Sketch:
    """No tokens, every pair empty: built directly (no kernel), so it cannot fail where a computed part did."""
    S = len(BUILTIN_SLICES)
    none = Sketch([], list(BUILTIN_SLICES), torch.zeros((0, S, HIST_BINS), dtype=torch.float64),
                  torch.zeros((0, S, N_FIELDS), dtype=torch.float64), 0, 0, dict.fromkeys(BUILTIN_SLICES, 0))
    return _with_pairs(none, names)


def send_capture_step(cb, state, control, per_rank: bool = False) -> bool:
    """The callback's step flush in sketch mode. Every rank calls it (the reduce is a collective);
    rank 0 alone holds a client and sends. Hook: `TailguardCallback._send_step`. Returns False when this
    rank's client dropped the step; fail_closed then stops every rank at the step-end exchange.

    A rank whose part fails before the reduce still joins it with an empty part flagged `failed` (else the
    other ranks would wait in the reduce until the DDP timeout); rank 0 then sends nothing for the step,
    and the failing rank re-raises after the reduce."""
    names = [p for p in PAIRS if p in cb.options.pairs]
    payload, knobs, implicit, error = None, None, [], None
    try:
        payload = cb.capture.take_step(state.global_step)
        knobs = cb.capture.knobs()
        if payload is None:  # nothing staged here: join the collective with an empty sketch
            sk = _empty_sketch(names)
        else:
            sk = sketch_payload(payload.arrays, [p for p in names if p not in payload.implicit], knobs)
            sk = _with_pairs(sk, names)
            sk.tokens = payload.tokens  # completion tokens, as raw mode counts them (the device layout keeps padding)
            implicit = list(payload.implicit)
    except Exception as e:  # noqa: BLE001 - every rank must reach the reduce, or the others wait in it
        error, payload = e, None
        sk = _empty_sketch(names)
        sk.failed = 1
    reduced = reduce_sketch(sk, per_rank=per_rank)
    if error is not None:
        raise error  # after the collective: the callback counts it (fail_closed: every rank stops at the exchange)
    if reduced.failed:
        if cb.client is not None:  # a partial step would misstate the tail: send nothing for it
            log.warning("tailguard: sketch step %d not sent: %d rank(s) could not compute their part",
                        state.global_step, reduced.failed)
        return True  # the failing rank raised above: the exchange carries its reason
    sk = _present(reduced)
    if cb.client is None:
        return True
    logs = cb.capture.step_logs()
    if payload is not None and payload.loss is not None and math.isfinite(payload.loss):
        logs["loss"] = payload.loss
    directives = getattr(cb, "directives", None)
    extras = directives.step_extras(cb.client) if directives is not None else {}
    return send_sketch_step(cb.client, state.global_step, sk, knobs=knobs, logs=logs, implicit=implicit,
                            checkpoint=extras.get("checkpoint"))
