"""Trainer knobs a directive may change, by their wire names, and the checks that refuse what a trainer cannot do.

Knobs (TRL 1.16 GRPO; read on every micro-batch, so changed only here, at step end):

- ``beta`` → ``trainer.beta``. 0 → >0 is refused without a reference model (none is built when
  beta starts at 0), unless the model is a PEFT model (its reference is the disabled adapter).
- ``epsilon_low`` / ``epsilon_high`` → ``trainer.epsilon_low`` / ``trainer.epsilon_high``.
- ``is_clip_max`` → ``trainer.vllm_importance_sampling_clip_max`` when vLLM IS correction is on,
  else ``args.delta`` (the two-sided clip of the ratio; ``None`` means off).
- ``off_policy_mask_threshold`` → ``trainer.off_policy_mask_threshold`` (``None`` means off).
"""

from __future__ import annotations

import math

KNOBS = ("beta", "epsilon_low", "epsilon_high", "is_clip_max", "off_policy_mask_threshold")
_NULLABLE = ("is_clip_max", "off_policy_mask_threshold")


class Refusal(Exception):
    """A directive (or part of one) the trainer cannot honour. ``code`` is stable (``E_*``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def _is_clip_target(trainer):
    if getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_importance_sampling_correction", False):
        return trainer, "vllm_importance_sampling_clip_max"
    return trainer.args, "delta"


def read_knobs(trainer) -> dict:
    """The live knobs this trainer has, by their wire names (absent knobs are left out)."""
    out = {}
    for knob in ("beta", "epsilon_low", "epsilon_high", "off_policy_mask_threshold"):
        if hasattr(trainer, knob):
            out[knob] = getattr(trainer, knob)
    if hasattr(trainer, "epsilon_low"):  # the clip knobs exist on GRPO/RLOO-style trainers only
        obj, attr = _is_clip_target(trainer)
        if hasattr(obj, attr):
            out["is_clip_max"] = getattr(obj, attr)
    return out


def _has_reference(trainer) -> bool:
    if getattr(trainer, "ref_model", None) is not None:
        return True
    try:
        from trl.models.utils import is_peft_model  # noqa: PLC0415
    except ImportError:  # older/newer layout
        return hasattr(getattr(trainer, "model", None), "peft_config")
    return bool(is_peft_model(trainer.model))


def set_knob(trainer, knob: str, value) -> tuple:
    """Set one knob; returns ``(old, new)``. Raises `Refusal` when the trainer cannot honour it."""
    if knob not in KNOBS:
        raise Refusal("E_UNKNOWN_KNOB", f"unknown knob {knob!r} (known: {', '.join(KNOBS)})")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise Refusal("E_KNOB_VALUE", f"{knob}={value!r} is not a finite number >= 0")
        value = float(value)
    elif knob not in _NULLABLE:
        raise Refusal("E_KNOB_VALUE", f"{knob} cannot be null")
    live = read_knobs(trainer)
    if knob not in live:
        raise Refusal("E_KNOB_ABSENT", f"{type(trainer).__name__} has no {knob}")
    old = live[knob]
    if knob == "beta" and (old or 0.0) == 0.0 and value and not _has_reference(trainer):
        raise Refusal(
            "E_NO_REF_MODEL",
            "cannot raise beta from 0: the trainer built no reference model (beta was 0 at init); "
            "stop and resume_from_checkpoint with beta > 0 in the config",
        )
    if knob == "epsilon_low" and value is not None and value >= 1.0:
        raise Refusal("E_KNOB_VALUE", "epsilon_low must be < 1 (the clip range is [1-eps_low, 1+eps_high])")
    if knob == "is_clip_max":
        obj, attr = _is_clip_target(trainer)
        setattr(obj, attr, value)
    else:
        setattr(trainer, knob, value)
    return old, value


def tighten_targets(params: dict) -> dict:
    """Knob targets of a tighten directive: ``params.knobs`` or knob names at the top level."""
    if isinstance(params.get("knobs"), dict):
        return dict(params["knobs"])  # unknown names there are refused, not ignored
    return {k: v for k, v in params.items() if k in KNOBS}
