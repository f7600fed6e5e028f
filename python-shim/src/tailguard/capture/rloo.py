"""RLOOTrainer capture (TRL 1.10–1.16).

RLOO's loss uses sequence-level ratios (`old_logps` is a per-sequence sum), but the per-token old and
reference logps exist during generation: they are the first and second `_get_per_token_logps_and_entropies`
results inside `_generate_and_score_completions`. We keep them in the generation batch under private
keys, so they follow TRL's shuffle and split, and subtract them from the current per-token logps
seen inside `_compute_loss`. RLOO always recomputes the old logps, so policy_vs_old is sent as is
(it is ~0, not identically 0, when num_iterations == 1).
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Capture
from .grpo import SEQ_KEY, last_metrics

OLD_KEY, REF_KEY = "_tailguard_old", "_tailguard_ref"
LOG_KEYS = ("reward", "reward_std", "kl", "entropy", "clip_ratio/region_mean")


class RLOOCapture(Capture):
    kind = "rloo"
    required = (
        "_generate_and_score_completions",
        "_compute_loss",
        "_get_per_token_logps_and_entropies",
        "_metrics",
        "beta",
        "epsilon_low",
        "epsilon_high",
        "num_generations",
        "accelerator",
    )

    def __init__(self, trainer: Any, options: Any):
        super().__init__(trainer, options)
        self._generated = 0
        self._collect: list[torch.Tensor] | None = None
        self._current: torch.Tensor | None = None
        self._want_current = False

    def install_hooks(self) -> None:
        self.wrap("_generate_and_score_completions", self._wrap_generate)
        self.wrap("_get_per_token_logps_and_entropies", self._wrap_logps)
        self.wrap("_compute_loss", self._wrap_compute_loss)

    def _wrap_generate(self, original):
        def _generate_and_score_completions(inputs):
            training = self.trainer.model.training
            self._collect = [] if training else None
            try:
                output = original(inputs)
            finally:
                calls, self._collect = self._collect, None
            if training and isinstance(output, dict) and "completion_mask" in output:
                b = output["completion_mask"].shape[0]
                acc = self.trainer.accelerator
                base = self._generated + acc.process_index * b
                output[SEQ_KEY] = torch.arange(base, base + b, device=output["completion_mask"].device)
                self._generated += b * acc.num_processes
                if calls:
                    output[OLD_KEY] = calls[0]
                if calls and len(calls) > 1 and self.trainer.beta != 0.0:
                    output[REF_KEY] = calls[1]
            return output

        return _generate_and_score_completions

    def _wrap_logps(self, original):
        def _get_per_token_logps_and_entropies(*args, **kwargs):
            out = original(*args, **kwargs)
            if self._collect is not None:
                self._collect.append(out[0].detach())
            elif self._want_current and self._current is None:
                self._current = out[0]
            return out

        return _get_per_token_logps_and_entropies

    def _wrap_compute_loss(self, original):
        def _compute_loss(model, inputs):
            if not self.trainer.model.training:
                return original(model, inputs)
            self._want_current, self._current = True, None
            try:
                loss = original(model, inputs)
            finally:
                self._want_current = False
            if self._current is not None:
                cur = self._current.detach().float()
                old, ref = inputs.get(OLD_KEY), inputs.get(REF_KEY)
                seq_index = inputs.get(SEQ_KEY)
                token = {
                    "policy_vs_old": None if old is None else cur - old.float(),
                    "policy_vs_ref": None if ref is None else cur - ref.float(),
                }
                if self.options.send_token_ids:
                    token["token_ids"] = inputs.get("completion_ids")
                seq = {"advantages": inputs.get("advantages"), "seq_ids": seq_index, "group_ids": None}
                if seq_index is not None:
                    seq["group_ids"] = torch.div(seq_index, self.trainer.num_generations, rounding_mode="floor")
                self.stage_micro_batch(inputs["completion_mask"], token, seq, loss=loss)
            self._current = None
            return loss

        return _compute_loss

    def knobs(self) -> dict[str, float | None]:
        t = self.trainer
        return {"beta": float(t.beta), "epsilon_low": float(t.epsilon_low), "epsilon_high": float(t.epsilon_high)}

    def config(self) -> dict[str, Any]:
        t, args = self.trainer, self.trainer.args
        return {
            "num_generations": int(t.num_generations),
            "num_iterations": int(getattr(t, "num_iterations", 1)),
            "steps_per_generation": int(args.steps_per_generation),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
            "importance_sampling_level": "sequence",
        }

    def step_logs(self) -> dict[str, float]:
        return last_metrics(self.trainer, LOG_KEYS)
