"""DPOTrainer capture (TRL 1.10–1.16).

DPO scores the batch `[chosen; rejected]` with the policy, then with the reference (the ref model, or
the same PEFT model with adapters off), each as `model(..., labels=..., fused_lm_head=True).log_probs`,
all inside `_compute_loss`. We wrap `_compute_loss` and, for its duration, put forward hooks on the
policy (and ref) modules: the first `log_probs` seen is the policy's, the second the reference's.
policy_vs_ref is sent per token, with user slices `chosen` (slice id 0) and `rejected` (slice id 1).
There is no old or rollout policy in DPO. `precompute_ref_log_probs=True` keeps only per-sequence ref
sums, so it is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Capture, CaptureError
from .grpo import last_metrics

LOG_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


class DPOCapture(Capture):
    kind = "dpo"
    required = ("_compute_loss", "beta", "ref_model", "accelerator", "_metrics")
    slice_names = ["chosen", "rejected"]

    def __init__(self, trainer: Any, options: Any):
        super().__init__(trainer, options)
        self._seen: list[torch.Tensor] | None = None
        self._seq_base = 0

    def check(self) -> None:
        super().check()
        if getattr(self.trainer, "precompute_ref_logps", False):
            raise CaptureError(
                "E_UNSUPPORTED",
                "DPO with precompute_ref_log_probs=True keeps only per-sequence reference sums; tailguard needs "
                "per-token reference logps. Set precompute_ref_log_probs=False.",
            )
        if getattr(self.trainer, "ld_alpha", None) is not None:
            pass  # per-token logps are the same; only the sequence weighting differs

    def install_hooks(self) -> None:
        self.wrap("_compute_loss", self._wrap_compute_loss)

    def _hook(self, module, args, output):
        lp = getattr(output, "log_probs", None)
        if self._seen is not None and lp is not None:
            self._seen.append(lp.detach())

    def _wrap_compute_loss(self, original):
        def _compute_loss(model, inputs, return_outputs):
            if not self.trainer.model.training:
                return original(model, inputs, return_outputs)
            modules = [self.trainer.accelerator.unwrap_model(model)]
            if self.trainer.ref_model is not None:
                modules.append(self.trainer.accelerator.unwrap_model(self.trainer.ref_model))
            handles = [m.register_forward_hook(self._hook) for m in modules]
            self._seen = []
            try:
                result = original(model, inputs, return_outputs)
            finally:
                seen, self._seen = self._seen, None
                for h in handles:
                    h.remove()
            if len(seen) >= 2:
                self._stage(inputs, seen[0], seen[1], result[0] if isinstance(result, tuple) else result)
            return result

        return _compute_loss

    def _stage(self, inputs: dict, policy: torch.Tensor, ref: torch.Tensor, loss: Any) -> None:
        shift_mask = inputs["completion_mask"][..., 1:]
        seq_len = shift_mask.size(1)
        ratio = policy[:, -seq_len:].float() - ref[:, -seq_len:].float()
        rows = ratio.shape[0]
        half = rows // 2
        slice_ids = torch.zeros_like(shift_mask, dtype=torch.int32)
        slice_ids[half:] = 1
        acc = self.trainer.accelerator
        # Pair i's chosen and rejected share a group id; seq ids are global and unique across ranks.
        base = self._seq_base + acc.process_index * half
        pair = torch.arange(base, base + half, device=ratio.device)
        self._seq_base += half * acc.num_processes
        token = {"policy_vs_ref": ratio, "slice_ids": slice_ids}
        if self.options.send_token_ids:
            token["token_ids"] = inputs["input_ids"][:, 1:][:, -seq_len:]
        seq = {"seq_ids": torch.cat([2 * pair, 2 * pair + 1]), "group_ids": torch.cat([pair, pair])}
        self.stage_micro_batch(shift_mask, token, seq, loss=loss)

    def knobs(self) -> dict[str, float | None]:
        return {"beta": float(self.trainer.beta)}

    def config(self) -> dict[str, Any]:
        args = self.trainer.args
        return {
            "loss_type": list(getattr(self.trainer, "loss_types", []) or []),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
        }

    def step_logs(self) -> dict[str, float]:
        return last_metrics(self.trainer, LOG_KEYS)
