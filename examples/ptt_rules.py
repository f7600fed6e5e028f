"""PTT-style rules: Microsoft Post-Training Toolkit's live GRPO alarms, re-implemented from their published
definitions (github.com/microsoft/post-training-toolkit, `heuristics/builtin/*.yaml` and `models/heuristics.py`,
read at commit 7ab9855; no code copied), evaluated on a run's trainer logs as its `DiagnosticsCallback` would:
every `EVERY` steps once at least 10 steps are logged, on the whole history so far.

Rules (`high` = what its `stop_on_critical` stops on; `medium` only warns):
- `kl_hard_cap` (high): any logged `kl` > 0.3. TRL logs `kl` only when beta != 0.
- `importance_ratio_low` (high): mean of the last 20 `importance_sampling_ratio` < 0.5, from 30 steps. TRL logs
  an importance ratio only with vLLM (`sampling/importance_sampling_ratio/mean`).
- `entropy_floor` (high): mean of the last 30 `entropy` < 0.1, from 30 steps.
- `entropy_drop` (medium): mean of the last 30 `entropy` below half the mean of the first 30, from 30 steps.
- `entropy_drop_yaml` (high): the same 50 % drop, from 60 steps (window 30 twice; min_steps 50).
- `loss_divergence` (high): from 60 steps, mean of the last 30 `loss` > mean of the first 30 by more than 50 %
  of |first|, and the last 30 still rising (least-squares slope > 0.001).
- `reward_std_spike` (high): from 50 steps, the max of the last 5 `reward_std` >= 2.5 x the 20-step rolling
  mean (at least 10 values) of the series before them.
"""

from __future__ import annotations

import math
import statistics

EVERY = 10  # PTT's live_warning_interval
IS_KEYS = ("importance_sampling_ratio", "sampling/importance_sampling_ratio/mean")


def _series(rows: list[dict], *keys: str) -> list[float]:
    for k in keys:
        v = [float(r[k]) for r in rows if k in r and r[k] is not None and math.isfinite(float(r[k]))]
        if v:
            return v
    return []


def _mean(v: list[float]) -> float:
    return sum(v) / len(v)


def _slope(v: list[float]) -> float:
    n = len(v)
    xm, ym = (n - 1) / 2, _mean(v)
    den = sum((i - xm) ** 2 for i in range(n))
    return sum((i - xm) * (y - ym) for i, y in enumerate(v)) / den if den else 0.0


def evaluate(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(rule, severity, detail) of every rule that fires on this history."""
    out = []
    kl = _series(rows, "kl")
    if kl and max(kl) > 0.3:
        out.append(("kl_hard_cap", "high", f"max kl {max(kl):.3f} > 0.3"))
    isr = _series(rows, *IS_KEYS)
    if len(rows) >= 30 and isr and _mean(isr[-20:]) < 0.5:
        out.append(("importance_ratio_low", "high", f"mean IS ratio {_mean(isr[-20:]):.3f} < 0.5"))
    ent = _series(rows, "entropy")
    if len(ent) >= 30:
        first, last = _mean(ent[:30]), _mean(ent[-30:])
        if last < 0.1:
            out.append(("entropy_floor", "high", f"entropy {last:.3f} < 0.1"))
        elif first > 0 and (first - last) / first > 0.5:
            out.append(("entropy_drop", "medium", f"entropy {first:.3f} -> {last:.3f}"))
        if len(ent) >= 60 and len(rows) >= 50 and first != 0 and (first - last) / abs(first) >= 0.5:
            out.append(("entropy_drop_yaml", "high", f"entropy {first:.3f} -> {last:.3f} (>= 50 % drop)"))
    loss = _series(rows, "loss")
    if len(loss) >= 60:
        first, last = _mean(loss[:30]), _mean(loss[-30:])
        if last > first and _slope(loss[-30:]) > 0.001 and (last - first) / (abs(first) + 1e-8) > 0.5:
            out.append(("loss_divergence", "high", f"loss {first:.4f} -> {last:.4f}, still rising"))
    rstd = _series(rows, "reward_std")
    if len(rows) >= 50 and len(rstd) >= 20:
        before = rstd[:-5]
        base = statistics.fmean(before[-20:]) if len(before) >= 10 else float("nan")
        if base > 0 and max(rstd[-5:]) >= 2.5 * base:
            out.append(("reward_std_spike", "high", f"reward_std {max(rstd[-5:]):.3f} >= 2.5 x {base:.3f}"))
    return out


def first_alarms(rows: list[dict]) -> dict[str, tuple[int, str, str] | None]:
    """At PTT's cadence: the first step each severity ('medium', 'high') fires, with its rule and detail."""
    rows = sorted(rows, key=lambda r: r["step"])
    first: dict[str, tuple[int, str, str] | None] = {"medium": None, "high": None}
    for i, r in enumerate(rows):
        if i + 1 < 10 or r["step"] % EVERY:
            continue
        for rule, sev, detail in evaluate(rows[: i + 1]):
            if first.get(sev) is None:
                first[sev] = (int(r["step"]), rule, detail)
    return first


def applicable(rows: list[dict]) -> dict[str, bool]:
    """Which rules have their metric in these logs (a rule without its metric can never fire)."""
    keys = set().union(*(r.keys() for r in rows)) if rows else set()
    return {"kl_hard_cap": "kl" in keys, "importance_ratio_low": any(k in keys for k in IS_KEYS),
            "entropy": "entropy" in keys, "loss_divergence": "loss" in keys, "reward_std_spike": "reward_std" in keys}
