"""Inputs of bench/overhead.py: a GRPO rollout_func with long tool-using completions, and synthetic
GRPO-shaped micro-batches of a given token count (what `_compute_loss` hands the capture)."""

from __future__ import annotations

import random

import torch


class LongToolRollout:
    """A GRPO `rollout_func` with long completions: length uniform in [L/2, L], and in 60 % of them a
    tool-output span (env_mask 0) of L/8 tokens in the middle, so pre-tool and post-tool slices exist."""

    def __init__(self, tokenizer, completion: int, seed: int = 0):
        self.tok, self.L, self.rng = tokenizer, completion, random.Random(seed)

    def make(self) -> tuple[list[int], list[int]]:
        r, L = self.rng, self.L
        n = r.randint(L // 2, L - 1)
        tool = L // 8 if r.random() < 0.6 else 0
        pre = (n - tool) // 2
        mask = [1] * pre + [0] * tool + [1] * (n - tool - pre) + [1]
        return [r.randint(65, 122) for _ in range(n)] + [self.tok.eos_token_id], mask

    def __call__(self, prompts, trainer):
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": []}
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            ids, mask = self.make()
            out["prompt_ids"].append(self.tok(text)["input_ids"])
            out["completion_ids"].append(ids)
            out["env_mask"].append(mask)
        return out


def synthetic_micro_batches(tokens: int, n_mb: int, L: int, seed: int):
    """GRPO-shaped inputs for one step of ~`tokens` completion tokens over `n_mb` micro-batches."""
    g = torch.Generator().manual_seed(seed)
    n_seqs = max(n_mb, round(tokens / (0.75 * L)))  # lengths uniform in [L/2, L]: mean fill 0.75
    lens = torch.randint(L // 2, L + 1, (n_seqs,), generator=g)
    lens = (lens * tokens / lens.sum()).clamp(1, L).long()  # hit the target count closely
    out, seq0 = [], 0
    for lens_mb in torch.tensor_split(lens, n_mb):
        B = lens_mb.numel()
        pos = torch.arange(L).expand(B, L)
        cm = (pos < lens_mb[:, None]).long()  # TRL's completion_mask: int64, right-padded
        tool = torch.ones(B, L, dtype=torch.long)
        start = lens_mb // 2
        span = (pos >= start[:, None]) & (pos < (start + L // 8)[:, None]) & (torch.rand(B, 1, generator=g) < 0.6)
        tool[span] = 0
        cur = -torch.rand(B, L, generator=g) * 5
        inputs = {
            "completion_mask": cm,
            "tool_mask": tool * cm,
            "old_per_token_logps": cur + 0.01 * torch.randn(B, L, generator=g),
            "ref_per_token_logps": cur + 0.1 * torch.randn(B, L, generator=g),
            "advantages": torch.randn(B, generator=g),
            "_tailguard_seq": torch.arange(seq0, seq0 + B),
        }
        seq0 += B
        out.append((inputs, cur))
    return out, int(lens.sum())
