"""Synthetic per-step data shaped like a tool-using GRPO batch: sequences with tool-output spans, padding,
and heavier-tailed log-ratios after the first tool span. Used by the demo, the round-trip benchmark and the
cross-language tests."""

from __future__ import annotations

import numpy as np


def synthetic_step(rng: np.random.Generator, n_seqs: int = 8, mean_len: int = 48, tool_prob: float = 0.5,
                   pairs=("policy_vs_ref",), pad_frac: float = 0.05, pre_scale: float = 0.05,
                   post_scale: float = 0.3) -> dict[str, np.ndarray]:
    """One rank's step: flat token arrays, `offsets`, per-sequence rewards/advantages.

    Log-ratios are Student-t(3) times `pre_scale` before a sequence's first tool span and `post_scale`
    after it; small equal scales give a healthy step that no detector should flag.
    """
    lengths = rng.integers(max(1, mean_len // 2), mean_len * 3 // 2 + 1, size=n_seqs)
    if n_seqs:
        lengths[rng.integers(n_seqs)] = 0 if n_seqs > 2 else lengths[0]  # an empty sequence is legal
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    T = int(offsets[-1])
    tool_mask = np.ones(T, np.uint8)
    for i in range(n_seqs):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b - a >= 6 and rng.random() < tool_prob:  # one tool-output span somewhere inside
            s = int(rng.integers(a + 1, b - 3))
            tool_mask[s : s + int(rng.integers(1, min(8, b - s)))] = 0
    completion_mask = (rng.random(T) >= pad_frac).astype(np.uint8)
    out: dict[str, np.ndarray] = {}
    # Heavier tail after a tool span: the signal tailguard looks for.
    seen_tool = np.zeros(T, bool)
    for i in range(n_seqs):
        a, b = int(offsets[i]), int(offsets[i + 1])
        seen_tool[a:b] = np.cumsum(tool_mask[a:b] == 0) > 0
    for p in pairs:
        scale = np.where(seen_tool, post_scale, pre_scale).astype(np.float32)
        out[p] = (rng.standard_t(3, size=T).astype(np.float32) * scale).astype(np.float32)
    out["completion_mask"] = completion_mask
    out["tool_mask"] = tool_mask
    out["offsets"] = offsets
    out["rewards"] = rng.standard_normal(n_seqs).astype(np.float32)
    out["advantages"] = (out["rewards"] - out["rewards"].mean()).astype(np.float32) if n_seqs else out["rewards"]
    return out


def big_step(rng: np.random.Generator, tokens: int = 1_000_000, mean_len: int = 1000,
             pairs=("policy_vs_ref",)) -> dict[str, np.ndarray]:
    """A large step (e.g. 1M tokens) built with vectorised numpy only."""
    n_seqs = max(1, tokens // mean_len)
    cuts = np.sort(rng.choice(np.arange(1, tokens), size=n_seqs - 1, replace=False)) if n_seqs > 1 else np.array([], int)
    offsets = np.concatenate([[0], cuts, [tokens]]).astype(np.int32)
    out = {p: rng.standard_normal(tokens, dtype=np.float32) * np.float32(0.1) for p in pairs}
    out["completion_mask"] = (rng.random(tokens) >= 0.02).astype(np.uint8)
    out["tool_mask"] = (rng.random(tokens) >= 0.1).astype(np.uint8)
    out["offsets"] = offsets
    return out
