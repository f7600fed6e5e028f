"""`compute_sketch` on CPU tensors, with numpy over slice-contiguous tokens.

Torch's CPU weighted `bincount` costs several ns per token per sum, and each small torch op ~10 µs; that, not
arithmetic, made the torch kernel 55-150 ns/token here. This kernel puts each chunk's tokens in slice order
once (`Chunk`: a stable reorder of runs, shared by every pair, none when already in order), so a slice is one
contiguous segment: its histogram is one `bincount`, its sums plain sums or dot products over views, and its
per-sequence sums L_i one `reduceat` over (slice, sequence) segments.

Per pair and token what remains (`PairPart`): the gather into slice order, the |ℓ| bits and bin, four compares
for the exceedance and clip counts, and three float64 rows: ℓ, e^ℓ and k3. One `exp` serves both the
log-sum-exp parts (reference 0, as the engine's own kernel uses, while every |ℓ| ≤ 300; each slice's max
otherwise) and k3 = e^ℓ − 1 − ℓ, a series below |ℓ| < 2^-5 (no cancellation). Token-sized temporaries live
in a per-thread `Scratch` kept from step to step. Counts equal the torch kernel's and the sums agree to
float64 rounding (python-shim/tests/test_sketch_cpu.py).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from .layout import _BITS_MIN, _LSE, _MAX_IDX, _SHIFT, FIELD_INDEX, HIST_BINS, N_FIELDS

BIN_BIAS = _BITS_MIN - (1 << _SHIFT)  # (bits − BIN_BIAS) >> SHIFT == 1 + ((bits − _BITS_MIN) >> SHIFT)
NONFINITE = 0x7F800000  # |ℓ| bits at or above this are NaN or ±Inf
SAFE_EXP = int(np.float32(300.0).view(np.int32))  # |ℓ| ≤ 300: e^ℓ and e^2ℓ fit float64 unshifted
SERIES_BITS = int(np.float32(0.03125).view(np.int32))  # |ℓ| < 2^-5: k3 from its series
# k3 = ℓ²·Σ ℓ^j/(j+2)!, j ≤ 5: truncation < 5e-14 relative at |ℓ| = 2^-5; above it e^ℓ − 1 − ℓ loses at
# most ~1 ulp of e^ℓ, < 5e-13 of k3.
K3_COEF = tuple(1.0 / math.factorial(j + 2) for j in range(6))


def k3_terms(v: np.ndarray, w: np.ndarray, small: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """e^ℓ − 1 − ℓ per token (float64) from ℓ and e^ℓ; the series where `small` (|ℓ| < 2^-5)."""
    k3 = np.subtract(w, v, out=out)
    k3 -= 1.0
    idx = np.flatnonzero(small)
    if idx.size:
        vs = v[idx]
        acc = vs * K3_COEF[-1]
        for c in K3_COEF[-2::-1]:  # Horner: acc ends as ℓ·P(ℓ)
            acc += c
            acc *= vs
        k3[idx] = acc * vs
    return k3


class Chunk:
    """What every pair of one chunk shares. Tokens are reordered by slice (pre_tool, post_tool, tool_output,
    then padding), keeping their order within a slice, so each slice is one contiguous segment and each
    (slice, sequence) a contiguous sub-segment: every per-slice sum is then a plain sum over a view, and the
    per-sequence sums one `reduceat` over long segments. The reorder is one gather per pair, and none when
    the tokens are already in that order."""

    def __init__(self, cm: np.ndarray, tm: np.ndarray, off: np.ndarray, scratch: "Scratch | None" = None):
        T = cm.shape[0]
        sc = scratch or Scratch(T)
        model, tool, chg = sc.flags[0, :T], sc.flags[1, :T], sc.flags[2, :T]  # borrowed: pairs come after
        np.not_equal(cm, 0, out=model)
        np.equal(tm, 0, out=tool)
        tool &= model
        cls = np.add(tool.view(np.uint8), np.uint8(1), out=sc.u8[:T])  # 1 model token, 2 tool output
        if not model.all():
            cls[~model] = 3
        starts = off[:-1]
        starts = np.unique(starts[starts < T])  # starts of the non-empty sequences
        if T:
            chg[0] = True
            np.not_equal(cls[1:], cls[:-1], out=chg[1:])
            chg[starts] = True  # a sequence start is a run start
        run = np.flatnonzero(chg)
        lens = np.diff(np.append(run, T))
        kind = cls[run]
        # Each run's sequence, and its sequence's first run, in O(runs) (no per-run binary search).
        first_run = np.searchsorted(run, starts)
        per_seq = np.diff(np.append(first_run, run.shape[0]))
        seq = np.repeat(np.searchsorted(off, starts, side="right") - 1, per_seq)
        first = np.repeat(first_run, per_seq)
        # A model run is post_tool when a tool run came before it in its sequence.
        tools = np.cumsum(kind == 2)
        before = tools - tools[first] + (kind[first] == 2)
        code = np.where(kind == 3, 3, np.where(kind == 2, 2, before > 0)).astype(np.int8)
        self.counts = np.bincount(code, weights=lens, minlength=4).astype(np.int64)
        order = np.argsort(code, kind="stable")  # int8: a radix sort
        code, seq, lens, run = code[order], seq[order], lens[order], run[order]
        new = np.cumsum(lens) - lens  # each run's start after the reorder
        self.perm = None
        if not np.array_equal(new, run):  # perm[new[r] + j] = run[r] + j, as one cumsum of steps
            perm = sc.perm[:T]
            perm.fill(1)
            perm[new[1:]] = run[1:] - (run[:-1] + lens[:-1] - 1)
            perm[0] = run[0]
            self.perm = np.cumsum(perm, out=perm)
        self.bounds = np.append(0, np.cumsum(self.counts))  # slice s is [bounds[s], bounds[s+1])
        # Sub-segments of one (slice, sequence): their starts, slices, and lengths.
        cut = np.ones(code.shape[0], bool)
        cut[1:] = (code[1:] != code[:-1]) | (seq[1:] != seq[:-1])
        self.seg_starts = new[cut]
        self.seg_slice = code[cut]
        self.seg_seq = seq[cut]
        self.seg_lens = np.add.reduceat(lens, np.flatnonzero(cut)) if cut.size else lens
        self.n_seqs = off.shape[0] - 1


class Scratch:
    """Token-sized temporaries, allocated once per step and reused by every chunk and pair: a fresh array of a
    few MB per operation costs the kernel's page faults as much as the arithmetic (measured)."""

    def __init__(self, n: int):
        self.f64 = np.empty((3, n))
        self.f32 = np.empty(n, np.float32)
        self.i32 = np.empty((2, n), np.int32)
        self.flags = np.empty((5, n), bool)
        self.u8 = np.empty(n, np.uint8)
        self.perm = np.empty(n, np.int64)

    def take(self, E: int):
        return self.f64[:, :E], self.f32[:E], self.i32[:, :E], self.flags[:, :E]


_LOCAL = threading.local()


def _scratch(n: int) -> Scratch:
    """This thread's scratch, kept from step to step (re-faulting ~20 MB a step would cost ~2 ns a token)."""
    sc = getattr(_LOCAL, "scratch", None)
    if sc is None or sc.u8.shape[0] < n:
        sc = _LOCAL.scratch = Scratch(n)
    return sc


class PairPart:
    """One pair's results for one chunk, per base slice: hist (3, BINS) int64; field values (3, N_FIELDS) with
    the sequence fields left out; per slice (4, `all` last) the L_i and |y_i| of its sequences."""

    def __init__(self, x: np.ndarray, ch: Chunk, clip_lo: float, clip_hi: float, exceed_bits: tuple[int, ...],
                 scratch: Scratch | None = None):
        F, E = FIELD_INDEX, int(ch.bounds[3])  # tokens of a slice; padding (after E) is never read
        Q, xs, (ab, key), fl = (scratch or Scratch(E)).take(E)
        v, k3, w = Q  # Σ|ℓ|, Σℓ² and Σe^2ℓ are read off ℓ, |ℓ| (float32) and e^ℓ: no rows written for them
        if ch.perm is None:
            xs = x[:E]
        else:
            np.take(x, ch.perm[:E], out=xs)
        np.bitwise_and(xs.view(np.int32), 0x7FFFFFFF, out=ab)
        top = int(ab.max()) if E else 0
        bad = np.flatnonzero(ab >= NONFINITE) if top >= NONFINITE else None
        if bad is not None:
            top = int(np.max(ab, where=ab < NONFINITE, initial=0))
        np.subtract(ab, BIN_BIAS, out=key)
        key >>= _SHIFT
        np.clip(key, 0, HIST_BINS - 1, out=key)
        np.copyto(v, xs)
        for f, bits in zip(fl, exceed_bits):
            np.greater(ab, bits, out=f)
        np.less(xs, np.float32(clip_lo), out=fl[3])
        np.greater(xs, np.float32(clip_hi), out=fl[4])
        fl[3] |= fl[4]
        flags, spare = fl[:4], fl[4]
        if bad is not None:
            v[bad] = 0.0
            ab[bad] = 0  # |ℓ| as float32 is then 0 there (key and flags were taken from ab already)
            flags[:, bad] = False
        a = ab.view(np.float32)  # |ℓ|, 0 where not finite
        with np.errstate(over="ignore"):
            np.exp(v, out=w)
            k3_terms(v, w, np.less(ab, SERIES_BITS, out=spare), out=k3)
        if bad is not None:
            w[bad] = 0.0
        bounds = ch.bounds
        n_bad = np.zeros(3) if bad is None else np.histogram(bad, bins=bounds[:4])[0]
        self.hist = np.zeros((3, HIST_BINS), np.int64)
        out = np.zeros((3, N_FIELDS))
        ref = np.zeros(3)
        shift = top > SAFE_EXP  # e^ℓ may overflow: each slice is shifted by its max (exact either way)
        if shift and bad is not None:
            v[bad] = -math.inf  # out of the max, and e^(ℓ−m) = 0 there
        for s in range(3):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            n = hi - lo - n_bad[s]
            if hi > lo:
                self.hist[s] = torch.bincount(torch.from_numpy(key[lo:hi]), minlength=HIST_BINS).numpy()
            out[s, F["abs_max"]] = a[lo:hi].max() if n else 0.0  # float32 |ℓ|: exact
            ref[s] = -math.inf if not n else np.max(v[lo:hi], initial=-math.inf) if shift else 0.0
            if shift and n:
                with np.errstate(over="ignore"):
                    np.exp(v[lo:hi] - ref[s], out=w[lo:hi])
        if shift and bad is not None:
            v[bad] = 0.0
        if bad is not None:
            self.hist -= np.histogram2d(np.searchsorted(bounds, bad, side="right") - 1, key[bad],
                                        bins=(range(4), range(HIST_BINS + 1)))[0].astype(np.int64)
        out[:, F["n"]] = np.diff(bounds[:4]) - n_bad
        out[:, F["nonfinite"]] = n_bad
        live = np.flatnonzero(np.diff(bounds[:4]))  # reduceat over the non-empty slices' segments at once
        if live.size:
            starts = bounds[live]
            sums = np.add.reduceat(Q, starts, axis=1)
            for i, name in enumerate(("sum", "sum_k3", "lse_sum")):
                out[live, F[name]] = sums[i]
            with np.errstate(over="ignore", invalid="ignore"):
                for s in live:  # float64 accumulation straight from float32, and dot products: one read each
                    lo, hi = int(bounds[s]), int(bounds[s + 1])
                    out[s, F["sum_abs"]] = np.sum(a[lo:hi], dtype=np.float64)
                    out[s, F["sum_sq"]] = np.einsum("i,i->", v[lo:hi], v[lo:hi])
                    out[s, F["lse2_sum"]] = np.einsum("i,i->", w[lo:hi], w[lo:hi])
            cnts = np.add.reduceat(flags.view(np.uint8), starts, axis=1, dtype=np.int32)  # int32: 5x int64's speed
            for i, name in enumerate(("exceed_1_5", "exceed_2", "exceed_3", "clip")):
                out[live, F[name]] = cnts[i]
        out[:, F["lse_max"]] = ref
        self.fields = out
        # Per (slice, sequence) sub-segment: L_i and finite |y_i|; `all` adds pre_tool and post_tool by sequence.
        keep = ch.seg_slice < 3
        L = np.add.reduceat(v, ch.seg_starts[keep]) if keep.any() else np.zeros(0)
        ln = ch.seg_lens[keep].astype(np.float64)
        if bad is not None:
            ln -= np.bincount(np.searchsorted(ch.seg_starts[keep], bad, side="right") - 1, minlength=ln.shape[0])
        sl, sq_ = ch.seg_slice[keep], ch.seg_seq[keep]
        self.seq = [(L[sl == s], ln[sl == s]) for s in range(3)]
        model = sl < 2
        nseq = ch.n_seqs
        La = np.bincount(sq_[model], weights=L[model], minlength=nseq)
        lna = np.bincount(sq_[model], weights=ln[model], minlength=nseq)
        self.seq.append((La, lna))


def merge_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two field rows (..., N_FIELDS) of disjoint data: the rank merge's rules, in numpy."""
    out = a + b
    for i in _MAX_IDX:
        out[..., i] = np.maximum(a[..., i], b[..., i])
    with np.errstate(invalid="ignore", over="ignore"):
        for i, mi, scale in _LSE:
            m = out[..., mi]
            parts = [np.where((r[..., i] > 0) & np.isfinite(r[..., mi]), r[..., i] * np.exp(scale * (r[..., mi] - m)), 0.0)
                     for r in (a, b)]
            out[..., i] = parts[0] + parts[1]
    return out


def seq_fields(row: np.ndarray, L: np.ndarray, ln: np.ndarray) -> None:
    """The sequence-level fields of one slice from its per-sequence sums L_i and finite lengths |y_i|."""
    F = FIELD_INDEX
    has = ln > 0
    row[F["seq_n"]] = float(has.sum())
    row[F["seq_max"]] = row[F["seqn_max"]] = -math.inf
    row[F["seq_sum"]] = row[F["seq2_sum"]] = row[F["seqn_sum"]] = row[F["seqn2_sum"]] = 0.0
    if not has.any():
        return
    Ls = L[has]
    for pre, vals in (("seq", Ls), ("seqn", Ls / ln[has])):
        m = vals.max()
        e = np.exp(vals - m)
        row[F[f"{pre}_max"]], row[F[f"{pre}_sum"]], row[F[f"{pre}2_sum"]] = m, e.sum(), (e * e).sum()


def compute_on_cpu(pairs: dict[str, np.ndarray], cm: np.ndarray, tm: np.ndarray, off: np.ndarray, names: list[str],
                   clip: tuple[float, float], exceed_bits: tuple[int, ...], chunk_tokens: int):
    """hist (P, 4, BINS) and sums (P, 4, N_FIELDS) as float64 numpy, slice counts (4,), in BUILTIN_SLICES
    order (all, pre_tool, post_tool, tool_output). Passes of ~`chunk_tokens` cut at sequence boundaries."""
    P, n_seqs = len(names), off.shape[0] - 1
    hist = np.zeros((P, 3, HIST_BINS), np.int64)
    acc = None
    seqs: list[list[list[tuple[np.ndarray, np.ndarray]]]] = [[[] for _ in range(4)] for _ in names]
    counts = np.zeros(4, np.int64)
    cuts = [0]
    while cuts[-1] < n_seqs:
        nxt = int(np.searchsorted(off, off[cuts[-1]] + chunk_tokens, side="left"))
        cuts.append(min(max(nxt, cuts[-1] + 1), n_seqs))
    if len(cuts) == 1:
        cuts.append(0)
    scratch = _scratch(max((int(off[b] - off[a]) for a, b in zip(cuts[:-1], cuts[1:])), default=0))
    for a, b in zip(cuts[:-1], cuts[1:]):
        t0, t1 = int(off[a]), int(off[b])
        ch = Chunk(cm[t0:t1], tm[t0:t1], off[a : b + 1] - t0, scratch)
        counts += ch.counts
        fields = np.zeros((P, 3, N_FIELDS))
        for p, name in enumerate(names):
            part = PairPart(pairs[name][t0:t1], ch, clip[0], clip[1], exceed_bits, scratch)
            hist[p] += part.hist
            fields[p] = part.fields
            for s in range(4):
                seqs[p][s].append(part.seq[s])
        acc = fields if acc is None else merge_rows(acc, fields)
    sums = np.zeros((P, 4, N_FIELDS))
    sums[:, 1:] = acc
    sums[:, 0] = merge_rows(acc[:, 0], acc[:, 1])
    for p in range(P):
        for s, row in zip((1, 2, 3, 0), range(4)):  # part.seq is (pre, post, tool, all)
            L = np.concatenate([q[0] for q in seqs[p][row]])
            ln = np.concatenate([q[1] for q in seqs[p][row]])
            seq_fields(sums[p, s], L, ln)
    full = np.empty((P, 4, HIST_BINS))
    full[:, 1:] = hist
    full[:, 0] = hist[:, 0] + hist[:, 1]
    return full, sums, counts
