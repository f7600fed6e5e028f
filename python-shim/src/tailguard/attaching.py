"""Installing tailguard on a trainer: `attach(trainer)` (the public function) and the callback's `attach`/`detach`,
which install the capture, start or join the engine (engine.py), wrap `trainer.log` and make the directive applier
and the engine client. A mixin of `TailguardCallback` (callback.py, the TRL glue: what runs at each callback event).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import guard
from .capture import CaptureError, capture_for, check_trl_version
from .options import DEFAULTS, ENV_ALLOW_UNTESTED_TRL, ENV_ENDPOINT, Options, resolve_endpoint

if TYPE_CHECKING:
    from .callback import TailguardCallback
    from .client import EngineClient

logger = logging.getLogger("tailguard")


class Attaching:
    # Set by TailguardCallback.__init__.
    options: Options
    endpoint: str | None
    trainer: Any
    capture: Any
    client: EngineClient | None
    disabled: bool
    directives: Any
    run_id: str | None
    _resume: bool | None
    _embedded: bool
    _log_wrapped: bool
    _events: Any

    if TYPE_CHECKING:  # defined by loginject.LogInjection and TailguardCallback; a stub here would shadow them
        def _inject_metrics(self, logs: dict) -> None: ...

        def _warn_once(self, key: str, message: str) -> None: ...

    # ---- attach -------------------------------------------------------------------------------
    def attach(self, trainer: Any) -> TailguardCallback:
        """Install the capture on `trainer` and add this callback to it. Returns `self`."""
        if self.trainer is not None:
            raise CaptureError("E_ATTACHED", "this TailguardCallback is already attached to a trainer")
        guard.check_not_attached(self, trainer)
        if self.disabled:
            logger.warning("tailguard: TAILGUARD_DISABLE is set; not attaching")
            return self
        import os

        import trl

        # Everything that can refuse runs before the embedded engine starts: a refused trainer
        # must not leave an engine process behind.
        check_trl_version(trl.__version__, os.environ.get(ENV_ALLOW_UNTESTED_TRL) == "1")
        capture = capture_for(trainer, self.options)
        capture.check()
        guard.check_curve(self.options)
        if self.endpoint is not None or os.environ.get(ENV_ENDPOINT):
            resolve_endpoint(self.endpoint)  # fail at attach, not after the first step
        else:  # embedded engine (engine.py)
            from .engine import attach_embedded

            attach_embedded(self, trainer)  # sets self.endpoint; detach() puts None back
            self._embedded = True
        try:
            capture.install()
        except BaseException:
            capture.uninstall()
            if self._embedded:  # check() passed, so only install_hooks can fail here: leave nothing running
                self._drop_embedded(trainer)
            raise
        self.trainer, self.capture = trainer, capture
        self.directives = _make_directives(trainer, self.options)  # control-shim hook
        if self.directives is not None:
            self._events.tap(self.directives)  # events.py: findings/directives into the trainer's logs
        self._wrap_log(trainer)
        if not any(c is self for c in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        return self

    def detach(self) -> None:
        """Undo `attach`: restore the trainer's methods and remove the callback."""
        if self.trainer is None:
            return
        if self.capture is not None:
            self.capture.uninstall()
        if self._log_wrapped:
            vars(self.trainer).pop("log", None)
            self._log_wrapped = False
        self.trainer.remove_callback(self)
        self._close_client()
        if self._embedded:
            self._drop_embedded(self.trainer)
        self.trainer = self.capture = None

    def _drop_embedded(self, trainer: Any) -> None:
        """Stop the embedded engine and undo its `train` wrapper (engine.py); a later attach starts a new one."""
        engine, self.embedded_engine = getattr(self, "embedded_engine", None), None
        vars(trainer).pop("train", None)
        if engine is not None:
            engine.stop()
        self.endpoint, self._embedded = None, False

    def _wrap_log(self, trainer: Any) -> None:
        # Trainer.log copies `logs` into state.log_history *before* callbacks' on_log run, so the metrics
        # are injected here, ahead of log_history and of every reporting callback (W&B, TensorBoard, trackio).
        original = trainer.log

        def log(logs, *args, **kwargs):
            self._inject_metrics(logs)
            return original(logs, *args, **kwargs)

        trainer.log = log
        self._log_wrapped = True

    # ---- client -------------------------------------------------------------------------------
    def _make_client(self, args: Any) -> Any:
        from .client import EngineClient

        acc = self.trainer.accelerator
        cfg = {**self.capture.config(), **self.capture.knobs()}
        if self.options.send_token_ids:  # the engine decodes findings' top tokens with it (forensics.py)
            from .forensics import tokenizer_json

            path = tokenizer_json(getattr(self.trainer, "processing_class", None))
            if path is not None:
                cfg["tokenizer"] = path
        return EngineClient(
            resolve_endpoint(self.endpoint),
            self.run_id,
            resume=self._resume,
            rank=int(acc.process_index),
            world_size=int(acc.num_processes),
            trainer=self.capture.kind,
            config=cfg,
            send_budget_s=self.options.send_budget_s,
            queue_max_steps=self.options.queue_max_steps,
            connect_timeout_s=self.options.connect_timeout_s,
            mode=self.options.mode,
            record_to=guard.record_path(self.options.record_to, int(acc.process_index), int(acc.num_processes)),
            curve_server_key=self.options.curve_server_key,
            curve_public_key=self.options.curve_public_key,
            curve_secret_key=self.options.curve_secret_key,
        )

    def _close_client(self) -> None:
        client, self.client = self.client, None
        staging, self._staging = getattr(self, "_staging", None), None
        if self.capture is not None:
            self.capture.defer_host = False
        if client is not None:
            try:
                # One budget for both: the staging thread's steps, then their replies.
                deadline = time.monotonic() + max(1.0, self.options.log_wait_s)
                if staging is not None:
                    staging.close(deadline - time.monotonic())
                client.flush(timeout=max(0.0, deadline - time.monotonic()))
                client.close()
            except Exception as e:  # closing must never fail training
                self._warn_once("close", f"tailguard: closing the engine client failed: {e}")


def _make_directives(trainer: Any, options: Options):
    from .control import DirectiveApplier

    acc = trainer.accelerator
    return DirectiveApplier(
        trainer, None, rank=int(acc.process_index), world_size=int(acc.num_processes),
        fail_mode=options.fail_mode, checkpoint_every=options.checkpoint_every,
        keep_certified=options.keep_certified, lost_after_s=options.engine_lost_after_s,
        reply_wait_s=options.log_wait_s,  # the reply that carries a directive due at this boundary
    )  # fmt: skip


def attach(
    trainer: Any,
    endpoint: str | None = None,
    *,
    run_id: str | None = None,
    pairs: Sequence[str] = DEFAULTS.pairs,
    send_budget_s: float = DEFAULTS.send_budget_s,
    queue_max_steps: int = DEFAULTS.queue_max_steps,
    connect_timeout_s: float = DEFAULTS.connect_timeout_s,
    fail_mode: Literal["fail_open", "fail_closed"] = "fail_open",
    log_metrics: bool | Literal["full"] = True,
    log_wait_s: float = DEFAULTS.log_wait_s,
    metric_names: Sequence[str] | None = DEFAULTS.metric_names,
    send_token_ids: bool = DEFAULTS.send_token_ids,
    pin_memory: bool = DEFAULTS.pin_memory,
    retain_captured: bool = DEFAULTS.retain_captured,
    checkpoint_every: int = DEFAULTS.checkpoint_every,
    keep_certified: int = DEFAULTS.keep_certified,
    engine_lost_after_s: float = DEFAULTS.engine_lost_after_s,
    mode: Literal["raw", "sketch"] = "raw",
    sketch_per_rank: bool | None = DEFAULTS.sketch_per_rank,
    record_to: str | os.PathLike[str] | None = DEFAULTS.record_to,
    curve_server_key: str | os.PathLike[str] | None = DEFAULTS.curve_server_key,
    curve_public_key: str | os.PathLike[str] | None = DEFAULTS.curve_public_key,
    curve_secret_key: str | os.PathLike[str] | None = DEFAULTS.curve_secret_key,
) -> TailguardCallback:
    r"""
    Attach tailguard to a constructed TRL trainer: install the capture, add the callback, return it.

    Args:
        trainer (`GRPOTrainer`, `RLOOTrainer` or `DPOTrainer`):
            The trainer, after construction and before `train()`.
        endpoint (`str`, *optional*, defaults to `None`):
            Engine endpoint; `None` reads `TAILGUARD_ENDPOINT`, and with neither a private engine is started.
        run_id, pairs, send_budget_s, ... (keyword-only):
            The [`TailguardCallback`] options, with the same names, types and defaults (docs/trl.md).

    Returns:
        [`TailguardCallback`]: the attached callback (`cb.client.stats`, `cb.detach()`).

    Example:

    ```python
    >>> import tailguard
    >>> try:
    ...     tailguard.attach(object(), endpoint="tcp://127.0.0.1:5599")
    ... except tailguard.callback.CaptureError as e:
    ...     print(e.code)
    E_UNSUPPORTED

    ```
    """
    options = {k: v for k, v in locals().items() if k not in ("trainer", "endpoint")}  # before any other local
    from .callback import TailguardCallback  # callback.py imports this module

    return TailguardCallback(endpoint, **options).attach(trainer)
