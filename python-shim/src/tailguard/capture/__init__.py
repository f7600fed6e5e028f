"""Per-trainer captures. `capture_for(trainer, options)` picks one by the trainer's class, or refuses."""

from __future__ import annotations

from typing import Any

from .base import Capture, CaptureError, StepPayload

SUPPORTED_TRL = ("1.10", "1.17")  # [min, max): the internals wrapped here were checked on 1.10–1.16

# Trainers we recognise but cannot capture, and why. Matched by class name along the MRO.
REFUSED = {
    "PPOTrainer": "experimental PPO runs its own loop, keeps logprobs in locals and ignores should_training_stop",
    "SFTTrainer": "SFT has no importance ratios: there is no old, reference or rollout policy to compare",
    "RewardTrainer": "reward modelling has no policy log-ratios",
    "KTOTrainer": "KTO is not supported yet (DPO-style; open an issue)",
}


def capture_for(trainer: Any, options: Any) -> Capture:
    names = [c.__name__ for c in type(trainer).__mro__]
    if "GRPOTrainer" in names:
        from .grpo import GRPOCapture

        return GRPOCapture(trainer, options)
    if "RLOOTrainer" in names:
        from .rloo import RLOOCapture

        return RLOOCapture(trainer, options)
    if "DPOTrainer" in names:
        from .dpo import DPOCapture

        return DPOCapture(trainer, options)
    for name in names:
        if name in REFUSED:
            raise CaptureError("E_UNSUPPORTED", f"tailguard does not support {name}: {REFUSED[name]}")
    raise CaptureError(
        "E_UNSUPPORTED",
        f"tailguard supports TRL's GRPOTrainer, RLOOTrainer and DPOTrainer; got {type(trainer).__name__}",
    )


def check_trl_version(version: str, allow_untested: bool = False) -> None:
    from packaging.version import Version

    lo, hi = SUPPORTED_TRL
    v = Version(version)
    if not (Version(lo) <= v < Version(hi)) and not allow_untested:
        raise CaptureError(
            "E_TRL_VERSION",
            f"tailguard's capture is checked against TRL >={lo},<{hi}; installed TRL is {version}. Its private "
            "methods may differ. Set TAILGUARD_ALLOW_UNTESTED_TRL=1 to try anyway (the attach-time hasattr checks still run).",
        )


__all__ = ["Capture", "CaptureError", "StepPayload", "capture_for", "check_trl_version", "SUPPORTED_TRL", "REFUSED"]
