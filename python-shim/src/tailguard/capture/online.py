"""What the GRPO and RLOO captures share: trainers that generate completions, then score them in `_compute_loss`.

- `_generate_and_score_completions` is wrapped to tag each generated sequence with a global id under
  SEQ_KEY, so ids survive TRL's shuffle and split (and give group ids: num_generations per prompt).
- `_compute_loss` gets the current logps from `_get_per_token_logps_and_entropies` as a local, so that
  method is wrapped and its first result inside `_compute_loss` is the policy's; `_stage` then sees it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import Capture

SEQ_KEY = "_tailguard_seq"
# What the wrappers and knobs of both read; each capture adds its own.
ONLINE_REQUIRED = (
    "_generate_and_score_completions",
    "_compute_loss",
    "_get_per_token_logps_and_entropies",
    "_metrics",
    "beta",
    "epsilon_low",
    "epsilon_high",
    "accelerator",
)


class OnlineCapture(Capture):
    """Subclasses implement `_stage(inputs, current, loss)` and may override `_on_logps` and `_after_generate`."""

    def __init__(self, trainer: Any, options: Any):
        super().__init__(trainer, options)
        self._generated = 0  # global sequences generated so far (training mode only)
        self._current: torch.Tensor | None = None
        self._want_current = False

    def install_hooks(self) -> None:
        self.wrap("_generate_and_score_completions", self._wrap_generate)
        self.wrap("_get_per_token_logps_and_entropies", self._wrap_logps)
        self.wrap("_compute_loss", self._wrap_compute_loss)

    def _wrap_generate(self, original):
        def _generate_and_score_completions(inputs):
            output = original(inputs)
            if self.trainer.model.training and isinstance(output, dict) and "completion_mask" in output:
                b = output["completion_mask"].shape[0]
                acc = self.trainer.accelerator
                base = self._generated + acc.process_index * b
                output[SEQ_KEY] = torch.arange(base, base + b, device=output["completion_mask"].device)
                self._generated += b * acc.num_processes
                self._after_generate(output)
            return output

        return _generate_and_score_completions

    def _after_generate(self, output: dict) -> None:
        pass

    def _wrap_logps(self, original):
        def _get_per_token_logps_and_entropies(*args, **kwargs):
            out = original(*args, **kwargs)
            self._on_logps(out[0])
            return out

        return _get_per_token_logps_and_entropies

    def _on_logps(self, logps: torch.Tensor) -> None:
        if self._want_current and self._current is None:
            self._current = logps

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
                self._stage(inputs, self._current, loss)
            self._current = None
            return loss

        return _compute_loss

    def _stage(self, inputs: dict, current: torch.Tensor, loss: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _seq_arrays(self, inputs: dict, advantages: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
        """Per-sequence arrays: advantages, global seq ids and their prompt groups."""
        seq_index = inputs.get(SEQ_KEY)
        seq = {"advantages": advantages, "seq_ids": seq_index, "group_ids": None}
        if seq_index is not None:
            seq["group_ids"] = torch.div(seq_index, self.trainer.num_generations, rounding_mode="floor")
        return seq


def last_metrics(trainer: Any, keys: tuple[str, ...]) -> dict[str, float]:
    """The latest value of each of TRL's own per-step metrics (TRL clears them every `logging_steps`)."""
    out = {}
    train = getattr(trainer, "_metrics", {}).get("train", {})
    for k in keys:
        vals = train.get(k)
        if vals:
            v = vals[-1]
            v = float(v.item() if hasattr(v, "item") else v)
            if math.isfinite(v):
                out[k] = v
    return out
