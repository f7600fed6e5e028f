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

from .online import ONLINE_REQUIRED, OnlineCapture, last_metrics

OLD_KEY, REF_KEY = "_tailguard_old", "_tailguard_ref"
LOG_KEYS = ("reward", "reward_std", "kl", "entropy", "clip_ratio/region_mean")


class RLOOCapture(OnlineCapture):
    kind = "rloo"
    required = ONLINE_REQUIRED + ("num_generations",)

    def __init__(self, trainer: Any, options: Any):
        super().__init__(trainer, options)
        self._collect: list[torch.Tensor] | None = None  # logps seen during a training generation
        self._calls: list[torch.Tensor] | None = None  # ... and kept until the output is tagged

    def _wrap_generate(self, original):
        def collecting(inputs):
            self._collect = [] if self.trainer.model.training else None
            try:
                return original(inputs)
            finally:
                self._calls, self._collect = self._collect, None

        return super()._wrap_generate(collecting)

    def _after_generate(self, output: dict) -> None:
        calls, self._calls = self._calls, None
        if calls:
            output[OLD_KEY] = calls[0]
        if calls and len(calls) > 1 and self.trainer.beta != 0.0:
            output[REF_KEY] = calls[1]

    def _on_logps(self, logps: torch.Tensor) -> None:
        if self._collect is not None:
            self._collect.append(logps.detach())
        else:
            super()._on_logps(logps)

    def _stage(self, inputs: dict, current: torch.Tensor, loss: Any) -> None:
        cur = current.detach().float()
        old, ref = inputs.get(OLD_KEY), inputs.get(REF_KEY)
        token = {
            "policy_vs_old": None if old is None else cur - old.float(),
            "policy_vs_ref": None if ref is None else cur - ref.float(),
        }
        if self.options.send_token_ids:
            token["token_ids"] = inputs.get("completion_ids")
        self.stage_micro_batch(inputs["completion_mask"], token, self._seq_arrays(inputs, inputs.get("advantages")), loss=loss)

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
