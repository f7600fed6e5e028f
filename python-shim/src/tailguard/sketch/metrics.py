"""Reading a sketch: quantiles from a histogram, bin edges, and the metrics the sums give (ESS, KL, ...)."""

from __future__ import annotations

import math

import torch

from .layout import *  # noqa: F403
from .layout import _BITS_MIN, _SHIFT

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


