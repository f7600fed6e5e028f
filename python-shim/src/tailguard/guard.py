"""What keeps a tailguard run honest around the callback: misuse refused up front, a run id that never
appends to another run, lazy attach for `callbacks=[TailguardCallback()]`, and fail_closed's verdict at
each step boundary with the outcome a scheduler sees (`TailguardStopped` raised from `train()`)."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import secrets
import time
from typing import Any

from .options import Options, OptionsError, default_run_id

logger = logging.getLogger("tailguard")

RUN_FILE = "tailguard-run.json"  # <output_dir>/: the run id a resumed trainer continues


class TailguardStopped(RuntimeError):
    """fail_closed ended training: a step went unrecorded or the engine was lost.

    Raised from `trainer.train()` on every rank, after the trainer's own end-of-training work and the
    client's shutdown, so the process exits non-zero unless the caller catches it. `code` is
    `E_STEP_DROPPED`, `E_ENGINE_LOST`, `E_SEND_FAILED`, `E_REFUSED` or `E_UNREACHABLE`; `step` is the
    boundary where every rank stopped (None when training never started)."""

    def __init__(self, reason: str, step: int | None = None):
        super().__init__(f"tailguard (fail_closed): {reason}")
        self.reason = reason
        code = re.search(r"\bE_[A-Z_]+", reason)
        self.code = code.group(0) if code else "E_STOPPED"
        self.step = step


# ---- misuse ------------------------------------------------------------------------------------------


def check_not_attached(cb: Any, trainer: Any) -> None:
    """A trainer gets one TailguardCallback: a second would start a second engine session for the same
    run and record nothing (`E_RUN_LOCKED` in the engine's log only)."""
    from .callback import TailguardCallback  # noqa: PLC0415 - callback.py imports this module
    from .capture import CaptureError

    handler = getattr(trainer, "callback_handler", None)
    for other in getattr(handler, "callbacks", ()):
        if other is not cb and isinstance(other, TailguardCallback):
            how = "attach()" if getattr(other, "trainer", None) is trainer else "callbacks=[...]"
            raise CaptureError("E_ATTACHED", f"this trainer already has a TailguardCallback (added by {how}); "
                                             "use that one, or `cb.detach()` / `trainer.remove_callback(cb)` first")


def find_trainer(cb: Any) -> Any | None:
    """The trainer whose callback handler called `cb` (callbacks do not receive it: DESIGN §6). The frame
    that runs the training loop has it as `self`; found by identity, never by guessing."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            obj = frame.f_locals.get("self")
            handler = getattr(obj, "callback_handler", None)
            if handler is not None and hasattr(obj, "accelerator") and any(c is cb for c in handler.callbacks):
                return obj
            frame = frame.f_back
    finally:
        del frame
    return None


def check_curve(options: Options) -> None:
    """Bad or incomplete CURVE keys fail at attach (E_OPTION), not in `on_train_begin`."""
    from .transport import curve_keys

    keys = {k: getattr(options, k) for k in ("curve_server_key", "curve_secret_key", "curve_public_key")}
    try:
        curve_keys(keys["curve_server_key"], keys["curve_public_key"], keys["curve_secret_key"])
    except Exception as e:  # ValueError (incomplete / not 40 chars), or a key file zmq cannot read
        name = next((k for k, v in keys.items() if v is None), "curve_secret_key")
        raise OptionsError(name, f"a complete CURVE key set ({e})", "<hidden>") from e


def record_path(path: str | None, rank: int, world_size: int) -> str | None:
    """Each rank records its own steps; with several ranks the file name gets a `.rank<R>` suffix."""
    if path is None or world_size == 1:
        return path
    return f"{path}.rank{rank}"


# ---- run identity ------------------------------------------------------------------------------------


def _broadcast(obj: Any) -> Any:
    try:
        import torch.distributed as dist
    except ImportError:
        return obj
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_identity(args: Any, explicit: str | None, resuming: bool, rank: int) -> tuple[str, bool]:
    """`(run_id, resume)` for this training run, the same on every rank (a collective when distributed).

    An explicit id is used as given: a fresh run says `resume=False`, so an engine whose store already
    holds that id refuses it (`E_RUN_EXISTS`) instead of appending. Without one, a fresh run gets a new id
    `<run_name or output_dir name>-<UTC time>-<4 hex>` (printed, and kept in `<output_dir>/tailguard-run.json`),
    and a run resumed from a checkpoint continues the id kept there."""
    if explicit:
        return explicit, resuming
    run_id = None
    if rank == 0:
        path = os.path.join(getattr(args, "output_dir", "") or ".", RUN_FILE)
        if resuming:
            try:
                with open(path) as f:
                    run_id = json.load(f)["run_id"]
            except (OSError, ValueError, KeyError, TypeError):
                run_id = None
        if not run_id:
            base = default_run_id(args)[:100]  # the run name or output dir's name, as every rank derives it
            run_id = f"{base}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
            resuming = False
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    json.dump({"run_id": run_id}, f)
            except OSError as e:
                logger.warning("tailguard: cannot write %s (%s); a resumed run will get a new run id", path, e)
        logger.warning("tailguard: run id %s (%s; set run_id= or TAILGUARD_RUN_ID to choose one)", run_id,
                       "continued from a checkpoint" if resuming else "new")
    return _broadcast((run_id, resuming))


# ---- fail_closed ---------------------------------------------------------------------------------------


class Verdict:
    """fail_closed, per rank: has a step gone unrecorded (or the engine session been lost) since the last
    boundary? The answer joins the step-end exchange (directives.py), so every rank stops together."""

    def __init__(self):
        self.dropped = 0
        self.reconnects = 0

    def __call__(self, client: Any, sent: bool, step: int) -> str | None:
        if client is None:
            return None if sent else f"E_STEP_DROPPED: step {step} could not be sent"
        st = client.stats
        why = None
        if client.refused is not None:
            e = client.refused
            why = f"E_REFUSED: the engine refused this client ({e.get('code')}: {e.get('message')})"
        elif st["dropped"] > self.dropped:
            drops = client.drops_since(self.dropped)
            first = drops[0][1] if drops else "see the client's warnings"
            why = f"E_STEP_DROPPED: {st['dropped'] - self.dropped} step(s) will not be recorded ({first})"
        elif st["reconnects"] > self.reconnects:
            why = "E_ENGINE_LOST: the engine session was lost; the steps it had not answered are unmonitored"
        elif not sent:
            why = f"E_STEP_DROPPED: step {step} was dropped"
        self.dropped, self.reconnects = st["dropped"], st["reconnects"]
        return why


def barrier() -> None:
    """Every rank leaves tailguard's shutdown together (a rank that exits while another still closes its
    client broke gloo's shutdown)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> list:
    """`obj` from every rank of the trainer's process group (just `[obj]` outside one)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return [obj]
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    box = [None] * dist.get_world_size()
    dist.all_gather_object(box, obj)
    return box
