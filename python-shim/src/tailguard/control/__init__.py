"""Control: the engine's directives on the trainer (`directives.py`: what is due at `on_step_end`, broadcast
to every rank; `actions.py`: applying one, ack, log), the knobs a directive may change (`knobs.py`), and certified checkpoints and
rollback (`checkpoints.py`)."""

from .checkpoints import PROTECTED_DIR, CheckpointKeeper, RollbackRefused
from .directives import ALPHA_CEILING_ENV, ALPHA_CEILING_FILE, DirectiveApplier
from .knobs import KNOBS, Refusal, read_knobs, set_knob, tighten_targets

__all__ = [
    "ALPHA_CEILING_ENV", "ALPHA_CEILING_FILE", "KNOBS", "PROTECTED_DIR", "CheckpointKeeper", "DirectiveApplier",
    "Refusal", "RollbackRefused", "read_knobs", "set_knob", "tighten_targets",
]  # fmt: skip
