"""Checkpoints the engine can certify, kept safe from rotation, and in-process rollback.

Every checkpoint the trainer saves is hard-linked (copied where links fail) into
``<output_dir>/tailguard-checkpoints/checkpoint-N``. That folder does not match the
``checkpoint-*`` glob TRL's ``save_total_limit`` rotation walks, so a checkpoint the engine
certifies later is still there when a rollback names it. The keeper prunes its own copies: it
keeps the last ``keep_certified`` certified ones and every newer one still awaiting the engine's
verdict, dropping a copy only once the engine rejected it (``params.rejected_checkpoints``) or certified
a newer one (the engine decides checkpoints in step order, so an older undecided one is never certified
later). ``keep_uncertified`` caps the waiting copies; past it the newest go unprotected, as a slow
engine certifies the oldest first and TRL's own rotation still keeps its newest checkpoints.

Each checkpoint also carries ``tailguard_state.json`` (the live knobs and the α ceiling), so
tightened knobs survive ``resume_from_checkpoint``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

logger = logging.getLogger("tailguard.checkpoints")

STATE_FILE = "tailguard_state.json"
PROTECTED_DIR = "tailguard-checkpoints"
_CKPT_RE = re.compile(r"checkpoint-(\d+)$")


class RollbackRefused(Exception):
    """A rollback that cannot be done in this process. ``code`` is stable (``E_ROLLBACK_*``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _link_tree(src: str, dst: str) -> None:
    """Hard-link every file of ``src`` into ``dst``; TRL writes new files on save, never in place."""
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, copy_function=os.link)
    except OSError:  # another filesystem, or links not allowed
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def write_state(folder: str, state: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(folder, STATE_FILE))


def read_state(folder: str | None) -> dict | None:
    if not folder:
        return None
    try:
        with open(os.path.join(folder, STATE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class CheckpointKeeper:
    """Protected copies of saved checkpoints and the engine's certification of them.

    Args:
        output_dir (`str`): the trainer's `args.output_dir`.
        keep_certified (`int`, *optional*, defaults to `2`): certified copies kept (K).
        keep_uncertified (`int`, *optional*, defaults to `8`): the most copies kept while they await the
            engine's verdict (a disk bound for a lagging engine); the oldest waiting ones are kept.
        is_main (`bool`, *optional*, defaults to `True`): only the process that writes checkpoints
            touches the protected folder.
    """

    def __init__(self, output_dir: str, keep_certified: int = 2, keep_uncertified: int = 8, is_main: bool = True):
        self.output_dir = output_dir
        self.root = os.path.join(output_dir, PROTECTED_DIR)
        self.keep_certified = max(1, int(keep_certified))
        self.keep_uncertified = max(1, int(keep_uncertified))
        self.is_main = is_main
        self.certified: set[int] = set()
        self.rejected: set[int] = set()  # rejected or invalidated by the engine: never a rollback target
        self._notices: list[dict] = []

    # --- saving -------------------------------------------------------------------------------

    def on_save(self, step: int, state: dict) -> dict | None:
        """Call after TRL saved ``checkpoint-<step>``: store tailguard state, protect, queue a notice."""
        src = os.path.join(self.output_dir, f"checkpoint-{step}")
        if not self.is_main:
            return None
        if not os.path.isdir(src):
            logger.warning("tailguard: checkpoint folder %s not found after save", src)
            return None
        write_state(src, dict(state, step=step))
        write_state(self.output_dir, dict(state, step=step))  # latest knobs of the run
        dst = self.protected_path(step)
        self.certified.discard(int(step))  # new contents: the engine's verdict on the old ones is moot
        self.rejected.discard(int(step))
        waiting = self._waiting(self.protected_steps())
        if len(waiting) >= self.keep_uncertified and int(step) > waiting[-1]:
            logger.warning(
                "tailguard: %d checkpoints await the engine's verdict (keep_uncertified=%d): checkpoint-%d "
                "is not protected from rotation (the engine lags)", len(waiting), self.keep_uncertified, step,
            )
            shutil.rmtree(dst, ignore_errors=True)  # an older copy at this step has other contents
            dst = src
        else:
            os.makedirs(self.root, exist_ok=True)
            _link_tree(src, dst)
            self.prune()
        notice = {"step": int(step), "path": os.path.abspath(dst)}
        self._notices.append(notice)
        return notice

    def take_notices(self) -> list[dict]:
        """Checkpoint notices not yet sent to the engine (the step header's ``checkpoint`` field)."""
        out, self._notices = self._notices, []
        return out

    def protected_path(self, step: int) -> str:
        return os.path.join(self.root, f"checkpoint-{int(step)}")

    def protected_steps(self) -> list[int]:
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _CKPT_RE.match(n)))

    # --- certification ------------------------------------------------------------------------

    def mark_certified(self, items) -> None:
        """Record the engine's certified checkpoints: an iterable of steps or ``{step, path}`` dicts."""
        for it in items or ():
            step = it.get("step") if isinstance(it, dict) else it
            if isinstance(step, (int, float)) and step >= 0:
                self.certified.add(int(step))
        self.prune()

    def mark_rejected(self, items, at_step=None) -> None:
        """Record checkpoints the engine rejected or invalidated (``{step, path}`` dicts or steps).

        ``at_step``: the step the engine's reply answers. A verdict from before a checkpoint was saved
        is about an older copy at that step (a resumed run saving it again) and is ignored.
        """
        for it in items or ():
            step = it.get("step") if isinstance(it, dict) else it
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:  # steps are ints on the wire
                continue
            if isinstance(at_step, (int, float)) and at_step <= step:
                continue
            self.rejected.add(int(step))
        self.prune()

    def _newest_kept_certified(self, steps: list[int]) -> list[int]:
        return sorted(s for s in steps if s in self.certified)[-self.keep_certified :]

    def _waiting(self, steps: list[int]) -> list[int]:
        """Copies the engine may still certify: newer than any certified one, not rejected (oldest first)."""
        cert = self._newest_kept_certified(steps)
        newest_cert = cert[-1] if cert else -1
        return [s for s in steps if s > newest_cert and s not in self.certified and s not in self.rejected]

    def prune(self) -> None:
        if not self.is_main:
            return
        steps = self.protected_steps()
        keep = set(self._newest_kept_certified(steps)) | set(self._waiting(steps)[: self.keep_uncertified])
        for s in steps:
            if s not in keep:
                shutil.rmtree(self.protected_path(s), ignore_errors=True)

    # --- rollback target ----------------------------------------------------------------------

    def resolve(self, step=None, path=None) -> str | None:
        """The folder to roll back to: the named path if it is still a checkpoint, else our copy."""
        if path and os.path.isdir(path) and _has_weights(path):
            return path
        if step is None and path:
            m = _CKPT_RE.search(os.path.normpath(path))
            step = int(m.group(1)) if m else None
        if step is not None:
            for cand in (self.protected_path(step), os.path.join(self.output_dir, f"checkpoint-{int(step)}")):
                if os.path.isdir(cand) and _has_weights(cand):
                    return cand
        return None


def _has_weights(folder: str) -> bool:
    return any(
        os.path.isfile(os.path.join(folder, n))
        for n in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "adapter_model.safetensors")
    )


def rollback_refusal(trainer, folder: str | None) -> RollbackRefused | None:
    """Why this process cannot roll back in place to ``folder``, or None when it can."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        return RollbackRefused(
            "E_ROLLBACK_DEEPSPEED",
            "in-process rollback is not supported under DeepSpeed (its loads are engine collectives); "
            "stop and restart with resume_from_checkpoint",
        )
    if getattr(trainer, "is_fsdp_enabled", False):
        return RollbackRefused(
            "E_ROLLBACK_FSDP",
            "in-process rollback is not supported under FSDP; stop and restart with resume_from_checkpoint",
        )
    if folder is None:
        return RollbackRefused("E_ROLLBACK_NOT_FOUND", "the named checkpoint is not on disk (rotated away?)")
    if not (
        os.path.isfile(os.path.join(folder, "optimizer.pt")) and os.path.isfile(os.path.join(folder, "scheduler.pt"))
    ):
        return RollbackRefused(
            "E_ROLLBACK_NO_OPTIMIZER",
            f"{folder} has no optimizer/scheduler state (save_only_model=True?); restoring weights alone "
            "would pair them with a foreign optimizer state",
        )
    return None


def rollback_in_process(trainer, folder: str) -> None:
    """Restore weights, optimizer, scheduler and RNG from ``folder``; zero grads; drop buffered rollouts.

    Uses the Trainer's own loaders so DDP and device placement behave as on resume. Every rank
    must call this at the same step boundary (each loads the same files; RNG is per process).
    ``state.global_step`` keeps counting forward so the engine's step stream stays monotonic.
    """
    refused = rollback_refusal(trainer, folder)
    if refused is not None:
        raise refused
    trainer._load_from_checkpoint(folder)
    trainer._load_optimizer_and_scheduler(folder)
    if hasattr(trainer, "_load_scaler"):
        trainer._load_scaler(folder)
    trainer._load_rng_state(folder)
    trainer.model.zero_grad(set_to_none=True)
    if getattr(trainer, "optimizer", None) is not None:
        trainer.optimizer.zero_grad(set_to_none=True)
    if hasattr(trainer, "_buffered_inputs"):
        trainer._buffered_inputs = None  # next step regenerates with the restored policy
    if hasattr(trainer, "_last_loaded_step"):
        trainer._last_loaded_step = -1  # vLLM: push the restored weights before the next generation
