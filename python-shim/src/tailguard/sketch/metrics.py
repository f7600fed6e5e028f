"""Reading a sketch: quantiles from a histogram, bin edges, and the metrics the sums give (ESS, KL, ...)."""

from __future__ import annotations

import math

import torch

from .layout import *  # noqa: F403
from .layout import _BITS_MIN, _SHIFT
from ..wire import SKETCH_PER_RANK_FIELDS

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


# Per-rank summary fields (proto/README.md "Sketch payloads", `per_rank.fields`): what rank_outlier reads.
PER_RANK_FIELDS = ("n", "abs_q99", "abs_mean", "ess")
assert PER_RANK_FIELDS == SKETCH_PER_RANK_FIELDS


_EDGES: dict[str, torch.Tensor] = {}


def _edges(device) -> torch.Tensor:
    """Lower edge of each bin, then +inf (the engine's HIST_EDGES), built once per device."""
    key = str(device)
    if key not in _EDGES:
        lo = [bin_edges(b)[0] for b in range(HIST_BINS)] + [math.inf]
        _EDGES[key] = torch.tensor(lo, dtype=torch.float64, device=device)
    return _EDGES[key]


def engine_quantile(hist: torch.Tensor, abs_max: torch.Tensor, p: float) -> torch.Tensor:
    """Histogram quantile of |ℓ| by the engine's rule (stats/hist.ts histQuantiles), batched over leading dims:
    numpy-linear ranks h = p(n−1) between two order statistics, each estimated at lo + (r − cum + ½)/c·(hi − lo),
    hi capped at the max, rank n−1 the max itself. So a rank's abs_q99 here equals raw mode's per-rank one."""
    cum = torch.cumsum(hist, -1)
    n = cum[..., -1]
    edges = _edges(hist.device)

    def order(r: torch.Tensor) -> torch.Tensor:
        b = torch.searchsorted(cum, r.unsqueeze(-1), right=True).clamp_(max=HIST_BINS - 1)
        c = hist.gather(-1, b).squeeze(-1)
        before = cum.gather(-1, b).squeeze(-1) - c
        lo, hi = edges[b.squeeze(-1)], torch.minimum(edges[b.squeeze(-1) + 1], abs_max)
        q = lo + ((r - before + 0.5) / c.clamp(min=1.0)) * (hi - lo)
        return torch.where(r >= n - 1, abs_max, torch.minimum(torch.maximum(q, lo), hi))

    h = p * (n - 1)
    r0 = torch.floor(h)
    a = order(r0)
    q = torch.where(h > r0, a + (h - r0) * (order(r0 + 1) - a), a)
    return torch.where(n > 0, q, torch.full_like(q, math.nan))


def summarize(sk: Sketch) -> torch.Tensor:
    """(P, S, 4) float64: PER_RANK_FIELDS per pair × slice of this rank's sketch, computed with torch ops where
    the sketch lives (no per-slice sync); NaN where the slice has no finite value."""
    F = FIELD_INDEX
    s = sk.sums
    n = s[..., F["n"]]
    ok = n > 0
    nan = torch.full_like(n, math.nan)
    safe = torch.where(ok, n, torch.ones_like(n))
    ess = torch.exp(2.0 * torch.log(s[..., F["lse_sum"]]) - torch.log(s[..., F["lse2_sum"]]) - torch.log(safe))
    q99 = engine_quantile(sk.hist, s[..., F["abs_max"]], 0.99)
    return torch.stack([n, torch.where(ok, q99, nan), torch.where(ok, s[..., F["sum_abs"]] / safe, nan),
                        torch.where(ok, ess, nan)], -1)
