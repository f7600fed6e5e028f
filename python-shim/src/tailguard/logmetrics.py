"""Which of the engine's metrics go into the trainer's log line, under `tailguard/...`.

The engine's reply carries its headline metrics for every pair x slice (ts-core stats HEADLINE_METRICS, about
160 keys with three pairs). A person reads a curated set by default, at most about 24 keys per log call:
per measured pair, post_tool and pre_tool q99 of |log-ratio|, and for the whole pair q99, ESS and the k3 KL;
alpha once; the step's findings. `log_metrics="full"` logs everything measured; `metric_names` picks metrics.

Never logged: a slice that was not measured (n = 0), and a `tool_output` slice whose values are all exactly
zero, which is what placeholders (e.g. vLLM's 0.0 logprobs at tool positions) look like.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# slice -> metrics logged by default, per pair
DEFAULT_LOGGED: dict[str, tuple[str, ...]] = {
    "post_tool": ("abs_q99",),
    "pre_tool": ("abs_q99",),
    "all": ("abs_q99", "ess", "kl_k3"),
}
FINDINGS = ("findings/n", "findings/severity")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _unmeasured(metrics: Mapping[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for key, v in metrics.items():
        parts = key.split("/")
        if len(parts) != 3:
            continue
        pair, slice_, metric = parts
        if metric == "n" and _number(v) and v == 0:
            out.add((pair, slice_))
        if slice_ == "tool_output" and metric == "abs_max" and _number(v) and v == 0:
            out.add((pair, slice_))  # every value exactly 0: placeholders, not a measurement
    return out


def curate(metrics: Mapping[str, Any], *, full: bool = False, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The log entries (without the `tailguard/` prefix) for one engine reply's metrics.

    Args:
        metrics (`Mapping[str, Any]`): the reply's metrics, `"<pair>/<slice>/<metric>" -> value`.
        full (`bool`, *optional*, defaults to `False`): every measured metric instead of the curated set.
        names (`tuple[str, ...]`, *optional*): only these metric names, for every measured pair and slice.

    Example:

    ```python
    >>> curate({"policy_vs_ref/all/n": 8, "policy_vs_ref/all/abs_q99": 0.5, "policy_vs_ref/all/abs_mean": 0.1,
    ...         "policy_vs_ref/all/alpha": 0.25, "policy_vs_ref/post_tool/n": 0, "findings/n": 0})
    {'policy_vs_ref/all/abs_q99': 0.5, 'alpha': 0.25, 'findings/n': 0.0}

    ```
    """
    skip = _unmeasured(metrics)
    out: dict[str, float] = {}
    alpha = None
    for key, value in metrics.items():
        if not _number(value):
            continue
        parts = key.split("/")
        if len(parts) != 3:
            if key in FINDINGS and (names is None or "findings" in names):
                out[key] = float(value)
            continue
        pair, slice_, metric = parts
        if metric == "alpha":  # the same step fraction in every record: log it once
            if alpha is None or slice_ == "all":
                alpha = float(value)
            continue
        if (pair, slice_) in skip:
            continue
        if names is not None:
            keep = metric in names
        else:
            keep = full or metric in DEFAULT_LOGGED.get(slice_, ())
        if keep:
            out[key] = float(value)
    if alpha is not None and (names is None or "alpha" in names):
        out["alpha"] = alpha
    findings = {k: out.pop(k) for k in FINDINGS if k in out}  # findings last, after the pairs
    out.update(findings)
    return out
