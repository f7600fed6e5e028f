"""Computing a sketch from one rank's tensors on their own device: slice codes, per-pair histograms and
exact sums, and merging sketches (the same rules the engine and the cross-rank reduction use)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .layout import *  # noqa: F403
from .layout import _BASE, _BITS_MAX, _BITS_MIN, _LSE, _MAX_IDX, _SHIFT

CPU_BACKEND = "numpy"  # what CPU tensors go through by default; "torch" runs the accelerator kernel there too


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
               clip_hi: float, code_counts: torch.Tensor, lane: torch.Tensor, K: int = len(_BASE)):
    """hist (K, BINS), sums (K, F), L and |y| (K, n_seqs) for K disjoint slices of one pair (the base slices,
    or the user slices).

    One key per token, `c` = slice or the discard slot K (not finite, or padding); every per-slice reduction is
    a single bincount over `c·width + index`, so |ℓ|'s bits, bins and terms are computed once per pair.
    """
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
    backend: str | None = None,
    slice_ids: torch.Tensor | None = None,
    slice_names: Sequence[str] | None = None,
) -> Sketch:
    """This rank's sketch of one step, computed with torch ops on the tensors' device.

    Args:
        pairs (`dict[str, torch.Tensor]`): flat float32 log-ratios, length T, per pair name.
        completion_mask (`torch.Tensor`): 1 = completion token, length T.
        tool_mask (`torch.Tensor`): 1 = model token, 0 = tool output (TRL convention), length T.
        offsets (`torch.Tensor`): sequence starts, length n_seqs+1, `offsets[-1] == T`.
        knobs (`dict`, *optional*): live trainer knobs; `epsilon_low`/`epsilon_high` set the clip band.
        chunk_tokens (`int`, *optional*): tokens per pass (cut at sequence boundaries); chunks merge exactly.
            Defaults to `2**18` on CPU, where a pass's temporaries stay in cache, and `2**22` on an accelerator,
            where launches are the fixed cost.
        backend (`str`, *optional*): `"torch"` or `"numpy"` for CPU tensors (default `CPU_BACKEND`: numpy over
            runs of tokens, cpu.py); tensors on an accelerator always go through the torch kernel.
        slice_ids (`torch.Tensor`, *optional*): user slice id per token, length T; with `slice_names` (index =
            id, at most SKETCH_MAX_USER_SLICES distinct names) each id is sketched as slice `user:<name>`
            over its model tokens, as raw mode slices them (ids beyond the names are ignored). Such a step
            goes through the torch kernel, on CPU too (cpu.py has no user slices).
    """
    user = check_user_slices(slice_names) if slice_ids is not None else []
    knobs = knobs or {}
    eps_lo = knobs.get("epsilon_low")
    eps_hi = knobs.get("epsilon_high")
    eps_lo = 0.2 if eps_lo is None else float(eps_lo)
    eps_hi = eps_lo if eps_hi is None else float(eps_hi)
    clip = (math.log(1.0 - eps_lo) if eps_lo < 1.0 else -math.inf, math.log1p(eps_hi))
    names = [p for p in PAIRS if p in pairs] + [p for p in pairs if p not in PAIRS]
    dev = completion_mask.device
    off = offsets.to("cpu", torch.int64)
    n_seqs = off.numel() - 1
    if dev.type == "cpu" and (backend or CPU_BACKEND) == "numpy" and not user:  # several times faster (cpu.py)
        from .cpu import compute_on_cpu

        host = lambda t: t.detach().reshape(-1).numpy()  # noqa: E731
        xs = {k: host(pairs[k].to(torch.float32)) for k in names}
        hist, sums, counts = compute_on_cpu(xs, host(completion_mask), host(tool_mask), off.numpy(), names,
                                            (_f32_below(clip[0]), _f32_above(clip[1])), _EXCEED_BITS,
                                            chunk_tokens or 1 << 18)
        c = counts.tolist()
        return Sketch(names, list(BUILTIN_SLICES), torch.from_numpy(hist), torch.from_numpy(sums),
                      int(completion_mask.numel()), n_seqs, {"all": c[0] + c[1], "pre_tool": c[0],
                                                              "post_tool": c[1], "tool_output": c[2]})
    if chunk_tokens is None:
        chunk_tokens = 1 << 17 if dev.type == "cpu" else 1 << 22
    # Sequence-aligned cuts: the first sequence boundary at or after each multiple of chunk_tokens.
    cuts = [0]
    while cuts[-1] < n_seqs:
        nxt = int(torch.searchsorted(off, off[cuts[-1]] + chunk_tokens, right=False))
        cuts.append(min(max(nxt, cuts[-1] + 1), n_seqs))
    out = None
    for a, b in zip(cuts[:-1], cuts[1:]):
        t0, t1 = int(off[a]), int(off[b])
        part = _compute_chunk({k: pairs[k].reshape(-1)[t0:t1] for k in names}, completion_mask[t0:t1],
                              tool_mask[t0:t1], (off[a:b + 1] - t0).to(dev), names, clip,
                              None if slice_ids is None else slice_ids.reshape(-1)[t0:t1], user)
        out = part if out is None else merge_sketches([out, part])  # running merge: memory stays one sketch
    if out is None:
        out = _compute_chunk({k: pairs[k].reshape(-1)[:0] for k in names}, completion_mask[:0],
                             tool_mask[:0], torch.zeros(1, dtype=torch.int64, device=dev), names, clip,
                             None if slice_ids is None else slice_ids.reshape(-1)[:0], user)
    return out


def merge_sketches(parts: Sequence[Sketch], per_rank: bool = False) -> Sketch:
    """Merge sketches of disjoint data (chunks of one rank, or ranks in one process). `per_rank=True` treats
    each part as one rank and keeps its summary, as `reduce_sketch(per_rank=True)` does across processes."""
    first = parts[0]
    hist = torch.stack([p.hist for p in parts]).sum(0)
    sums = torch.stack([p.sums for p in parts])  # (R, P, S, F)
    R, P, S, F = sums.shape
    merged = _merge_rows(sums.permute(1, 2, 0, 3).reshape(P * S, R, F).transpose(0, 1)).view(P, S, F)
    counts = {k: sum(p.slice_counts[k] for p in parts) for k in first.slice_counts}
    out = Sketch(first.pairs, first.slices, hist, merged, sum(p.tokens for p in parts),
                 sum(p.n_seqs for p in parts), counts)
    if per_rank:
        from .metrics import summarize

        out.per_rank, out.rank_tokens = torch.stack([summarize(p) for p in parts]), [p.tokens for p in parts]
    return out


def _compute_chunk(pairs, completion_mask, tool_mask, offsets, names, clip, ids=None, user=()) -> Sketch:
    dev = completion_mask.device
    n_seqs = offsets.numel() - 1
    seq = _seq_index(offsets, completion_mask.numel())
    code = slice_codes(completion_mask, tool_mask, offsets, seq)
    code_counts = torch.bincount(code, minlength=4)
    lane = torch.arange(code.numel(), dtype=torch.int32, device=dev) & 3
    K = len(user)
    if K:  # user slice k: model tokens (pre_tool ∪ post_tool) with id k; K = in none
        ids = ids.to(device=dev, dtype=torch.int32)
        ucode = torch.where((code <= 1) & (ids >= 0) & (ids < K), ids, K).to(torch.int32)
        ucounts = torch.bincount(ucode, minlength=K + 1)
    S = len(BUILTIN_SLICES) + K
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
        if K:
            h, sm, L, ln = _pair_base(pairs[name], ucode, seq, n_seqs, clip[0], clip[1], ucounts, lane, K)
            hist[p, 4:], sums[p, 4:] = h, sm
            for k in range(K):
                _seq_fields(sums[p, 4 + k], L[k], ln[k])
    counts = code_counts.tolist()
    slice_counts = {"all": counts[0] + counts[1], "pre_tool": counts[0], "post_tool": counts[1],
                    "tool_output": counts[2]}
    return Sketch(names, list(BUILTIN_SLICES) + [f"user:{u}" for u in user], hist, sums, int(code.numel()), n_seqs,
                  slice_counts)


