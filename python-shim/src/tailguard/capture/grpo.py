"""GRPOTrainer capture (TRL 1.10–1.16).

Where the tensors are (verified on TRL 1.16):
- `_generate_and_score_completions` returns `completion_mask`, `tool_mask` (1 = model token, 0 = tool
  output; a rollout_func's `env_mask` becomes it), `advantages`, and when they exist
  `old_per_token_logps`, `ref_per_token_logps` (beta != 0) and `sampling_per_token_logps` (rollout logprobs).
  The wrapping (sequence ids, the current logps inside `_compute_loss`) is shared with RLOO: online.py.
- Without `old_per_token_logps`, TRL uses `per_token_logps.detach()`: policy_vs_old is identically 0 and
  is sent as implicit (no buffer).

The raw per-token ℓ is captured whatever `importance_sampling_level` is: with "sequence" TRL averages
the same per-token ℓ over the sequence, which the engine's `ess_seq_norm` mirrors.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import CaptureError
from .online import ONLINE_REQUIRED, SEQ_KEY, OnlineCapture, last_metrics

__all__ = ["GRPOCapture", "SEQ_KEY", "last_metrics", "uses_liger_loss"]  # SEQ_KEY, last_metrics: re-exported for older imports

LOG_KEYS = ("reward", "reward_std", "kl", "entropy", "clip_ratio/region_mean", "frac_reward_zero_std")


class GRPOCapture(OnlineCapture):
    kind = "grpo"
    required = ONLINE_REQUIRED + ("num_iterations", "importance_sampling_level")

    def check(self) -> None:
        super().check()
        if uses_liger_loss(self.trainer):
            raise CaptureError("E_UNSUPPORTED", "GRPO with the Liger loss fuses the policy logps away; tailguard cannot see per-token ratios")

    def _stage(self, inputs: dict, current: torch.Tensor, loss: Any) -> None:
        old = inputs.get("old_per_token_logps")
        ref = inputs.get("ref_per_token_logps")
        sampling = inputs.get("sampling_per_token_logps")
        tool_mask = inputs.get("tool_mask")

        def pairs() -> dict:  # O(tokens): on the staging thread in raw mode with host tensors (base.py)
            cur = current.detach().float()
            out = {"policy_vs_old": None if old is None else cur - old.float(),
                   "policy_vs_ref": None if ref is None else cur - ref.float(), "old_vs_rollout": None}
            if sampling is not None:
                diff = (cur if old is None else old.float()) - sampling.float()
                if tool_mask is not None:  # rollout engines put 0.0 placeholders at tool-output positions
                    diff = diff * tool_mask
                out["old_vs_rollout"] = diff
            return out

        names = [n for n, t in (("policy_vs_old", old), ("policy_vs_ref", ref), ("old_vs_rollout", sampling)) if t is not None]
        token = {**self.pair_diffs(current, names, pairs), "tool_mask": tool_mask}
        if self.options.send_token_ids:
            token["token_ids"] = inputs.get("completion_ids")
        adv = inputs.get("advantages")
        if adv is not None and adv.dim() > 1:  # subclasses may give (B, T) advantages; send the first token's
            adv = adv[:, 0]
        implicit = ("policy_vs_old",) if old is None else ()
        self.stage_micro_batch(inputs["completion_mask"], token, self._seq_arrays(inputs, adv), implicit=implicit, loss=loss)

    def knobs(self) -> dict[str, float | None]:
        t, args = self.trainer, self.trainer.args
        knobs: dict[str, float | None] = {
            "beta": float(t.beta),
            "epsilon_low": float(t.epsilon_low),
            "epsilon_high": float(t.epsilon_high),
            "off_policy_mask_threshold": _num(getattr(t, "off_policy_mask_threshold", None)),
        }
        delta = getattr(args, "delta", None)
        if delta is not None:
            knobs["is_clip_max"] = float(delta)
        elif getattr(t, "use_vllm", False) and getattr(t, "vllm_importance_sampling_correction", False):
            knobs["is_clip_max"] = _num(getattr(t, "vllm_importance_sampling_clip_max", None))
        return knobs

    def config(self) -> dict[str, Any]:
        t, args = self.trainer, self.trainer.args
        return {
            "num_generations": int(t.num_generations),
            "num_iterations": int(t.num_iterations),
            "steps_per_generation": int(args.steps_per_generation),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
            "importance_sampling_level": str(t.importance_sampling_level),
            "loss_type": str(getattr(t, "loss_type", "")),
            "use_vllm": bool(getattr(t, "use_vllm", False)),
            "tools": bool(getattr(t, "tools", None)),
            "rollout_func": getattr(t, "rollout_func", None) is not None,
        }

    def step_logs(self) -> dict[str, float]:
        return last_metrics(self.trainer, LOG_KEYS)


def uses_liger_loss(trainer: Any) -> bool:
    """Whether GRPO's loss is Liger's fused `LigerFusedLinearGRPOLoss`, which never materialises per-token logps.

    TRL < 1.16 builds it as `trainer.liger_grpo_loss` when `args.use_liger_kernel` is set (older TRL:
    `use_liger_loss`). TRL 1.16 has no such loss: `use_liger_kernel=True` only applies Liger's layer kernels
    (it forces `fused_linear_cross_entropy` off) and `_compute_loss` still calls
    `_get_per_token_logps_and_entropies`, so that configuration is captured as usual.
    """
    return getattr(trainer, "liger_grpo_loss", None) is not None or bool(getattr(trainer, "use_liger_loss", False))


def _num(v: Any) -> float | None:
    return None if v is None else float(v)
