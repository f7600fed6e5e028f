"""`TailguardCallback`: the TRL glue. What runs at each callback event: connect at train begin, send each step and
apply the engine's directives at step end, close at train end. Streams per-token log-ratios to the engine and logs
its metrics back.

A `TrainerCallback` never receives the trainer, and GRPO sets `beta`/`ref_model` after `on_init_end`,
so capture is installed by `attach(trainer)` on a constructed trainer (attaching.py, see capture/); the metrics
reach the trainer's logs through loginject.py.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from .client import EngineClient

from . import guard
from .attaching import Attaching, attach  # noqa: F401 - `tailguard.callback.attach` stays importable
from .capture.background import StagingThread
from .capture import CaptureError  # noqa: F401 - re-exported (`tailguard.callback.CaptureError`)
from .events import EventLog
from .guard import TailguardStopped
from .loginject import LogInjection
from .options import Options, disabled_by_env, parse_options

logger = logging.getLogger("tailguard")


class TailguardCallback(Attaching, LogInjection, TrainerCallback):
    r"""
    Streams every optimizer step's per-token log-ratios and masks to a tailguard engine, and writes the
    engine's headline metrics back into the trainer's logs as `tailguard/<pair>/<slice>/<metric>`.

    Create it and call [`attach`] (or `cb.attach(trainer)`) once the trainer is constructed: the
    capture wraps instance methods of that trainer. Passed the transformers way (`callbacks=[cb]`), it
    attaches itself in `on_train_begin` (and warns loudly if it cannot find its trainer there).

    fail_closed ends training with [`TailguardStopped`] (a `RuntimeError`) raised from `trainer.train()` on
    every rank, so the job exits non-zero; fail_open never raises.

    Args:
        endpoint (`str`, *optional*, defaults to `None`):
            ZeroMQ endpoint of a running engine (`npx tailguard serve`), e.g. `"tcp://127.0.0.1:5599"`.
            `None` reads `TAILGUARD_ENDPOINT`; with neither, `attach` starts a private engine on rank 0
            (engine.py) and stops it when training ends.
        run_id (`str`, *optional*, defaults to `None`):
            Run id shared by all ranks. `None` reads `TAILGUARD_RUN_ID`, else a new id per training run,
            `<run_name or output_dir name>-<UTC time>-<4 hex>`, printed at train begin and continued when the
            trainer resumes from a checkpoint in the same output_dir. An explicit id that the engine already
            holds steps for is refused (`E_RUN_EXISTS`) unless the trainer resumes: never appended to silently.
        pairs (`list[str]`, *optional*, defaults to all three):
            Which log-ratio pairs to send: `policy_vs_old`, `policy_vs_ref`, `old_vs_rollout`.
        send_budget_s (`float`, *optional*, defaults to `0.05`):
            The longest a step boundary waits for room in the send queue; past it the step is dropped
            and counted (`tailguard/client/dropped`).
        queue_max_steps (`int`, *optional*, defaults to `8`):
            Steps held in memory while the engine is slow or away (raw mode: those waiting for the staging
            thread included; past it the oldest is dropped and counted).
        connect_timeout_s (`float`, *optional*, defaults to `5.0`):
            How long `on_train_begin` waits for the engine's welcome before going on without it.
        fail_mode (`str`, *optional*, defaults to `"fail_open"`):
            `"fail_open"`: an unreachable engine warns and training goes on (dropped steps are counted in
            `tailguard/client/dropped`). `"fail_closed"`: every rank stops at the first step boundary after a
            step goes unrecorded (dropped, refused, lost by the engine's store) or the engine session is lost,
            and `train()` raises [`TailguardStopped`] on every rank (a connect failure raises it in `on_train_begin`).
        log_metrics (`bool` or `"full"`, *optional*, defaults to `True`):
            Add the engine's metrics to the trainer's logs (rank 0 only). `True` logs a curated headline set
            (at most about 24 keys: per pair post_tool/pre_tool/all q99, ESS and k3 KL, alpha once, findings);
            `"full"` every measured metric of every pair and slice; `False` none.
        log_wait_s (`float`, *optional*, defaults to `1.0`):
            How long a log call may wait for the engine's reply to the step just sent, so step N's metrics
            land in step N's log line. 0 logs what has arrived (usually the previous step's). No wait while
            the engine is unreachable.
        metric_names (`list[str]`, *optional*, defaults to `None`):
            Only these metric names (e.g. `["abs_q99", "ess"]`) are logged, for every measured pair and slice.
        send_token_ids (`bool`, *optional*, defaults to `False`):
            Also send completion token ids, so each finding's top tokens by |ℓ| (`evidence.top_tokens`) name
            their token id, and their decoded text when the trainer's tokenizer is a fast one (its
            `tokenizer.json` goes to the engine as hello's `config.tokenizer`; docs/detection.md "Evidence").
        pin_memory (`bool`, *optional*, defaults to `True`):
            Stage device tensors in reused pinned host buffers (CUDA only).
        retain_captured (`bool`, *optional*, defaults to `False`):
            Keep every sent step's arrays in `cb.capture.captured` (tests and debugging; costs memory).
        mode (`str`, *optional*, defaults to `"raw"`):
            `"raw"` streams every token. `"sketch"` sends per-step histograms and exact sums reduced across
            ranks with `torch.distributed`; only rank 0 talks to the engine (see docs/sketch.md).
        sketch_per_rank (`bool`, *optional*, defaults to `None`):
            Sketch mode: also all-gather each rank's own summary (n, q99, mean |ℓ|, ESS per pair × slice), so
            the engine's `rank_outlier` can name a rank. It costs ranks × pairs × slices × 32 bytes a step.
            `None` turns it on up to 64 ranks (≤ 8 KB a pair a step with the built-in slices), off above.
        record_to (`str`, *optional*, defaults to `None`):
            Append every raw step message, exactly as sent, to this recording (one file per rank,
            suffixed `.rank<R>` when there are several), for `tailguard replay RECORDING --policy FILE`.
        checkpoint_every (`int`, *optional*, defaults to `0`):
            Also save a checkpoint every N steps; 0 keeps the trainer's own cadence (docs/control-shim.md).
        keep_certified (`int`, *optional*, defaults to `2`):
            Certified checkpoints protected from `save_total_limit` rotation (at least 1).
        engine_lost_after_s (`float`, *optional*, defaults to `3.0`):
            How long without an engine session counts as losing the monitor (`fail_mode` decides what follows).
        curve_server_key (`str`, *optional*, defaults to `None`):
            The engine's CURVE public key (40-char Z85) or key file (`tailguard keygen`'s `.pub`), for an
            engine started with `--curve-secret` / `--curve-allow` (docs/reliability.md).
        curve_secret_key (`str`, *optional*, defaults to `None`):
            This client's CURVE secret key (Z85) or key file; a `.key` file from `tailguard keygen` holds both
            halves, so with `curve_server_key` it is enough. Its public key must be on the engine's allow-list.
        curve_public_key (`str`, *optional*, defaults to `None`):
            This client's public key (Z85 or key file), needed only when `curve_secret_key` is a bare Z85 string.

    Environment variables: `TAILGUARD_ENDPOINT` (engine endpoint), `TAILGUARD_RUN_ID` (run id),
    `TAILGUARD_DISABLE=1` (attach does nothing), `TAILGUARD_ALLOW_UNTESTED_TRL=1` (skip the TRL version gate).
    The embedded engine (no endpoint) reads `TAILGUARD_RUN_DIR` (run-store root, default `runs`),
    `TAILGUARD_ENGINE_ARGS` (extra `serve` arguments), `TAILGUARD_ENGINE_CMD` (the command that runs the CLI)
    and `TAILGUARD_ENGINE_READY_TIMEOUT` (seconds to wait for it, default 30).

    Example:

    ```python
    >>> from tailguard import TailguardCallback
    >>> cb = TailguardCallback(endpoint="tcp://127.0.0.1:5599", run_id="demo", metric_names=["abs_q99"])
    >>> cb.options.metric_names
    ('abs_q99',)
    >>> # later: cb.attach(trainer); trainer.train()
    ```
    """

    def __init__(self, endpoint: str | None = None, **options: Any):
        self.options: Options = parse_options(**options)
        self.endpoint = endpoint
        self.trainer = None
        self.capture = None
        self.client: EngineClient | None = None
        self.last_client: EngineClient | None = None  # kept after training ends, for inspection (stats, reply_for)
        self.disabled = disabled_by_env()
        self._last_metrics_step: int | None = None
        self._last_client_stats: dict | None = None
        self._log_wrapped = False
        self._warned: set[str] = set()
        self.directives = None  # DirectiveApplier (directives.py), made by attach()
        self._events = EventLog()
        self._embedded = False  # attach() started (rank 0) or joined an embedded engine
        self._local_stop: str | None = None  # this rank's stop reason at the current step boundary
        self._verdict = guard.Verdict()  # fail_closed: anything unrecorded since the last boundary?
        self.run_id: str | None = None  # decided in on_train_begin (guard.run_identity)
        self._resume: bool | None = None
        self._staging: StagingThread | None = None  # raw mode, fail_open: the step's staging thread

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(_one_prefix(message))

    # ---- callback events ----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if self.capture is None and not self._attach_lazily():
            return
        if self.directives is not None:
            self.directives.on_train_begin(state)  # control-shim: re-apply persisted knobs on resume
        if self.client is not None:
            return
        rank = int(self.trainer.accelerator.process_index)
        self._verdict = guard.Verdict()
        if self.directives is not None:
            self.directives.stopped = None
        self.run_id, self._resume = guard.run_identity(args, self.options.run_id, int(state.global_step) > 0, rank)
        failure = None
        if self.options.mode != "sketch" or rank == 0:  # sketch mode: only rank 0 talks to the engine
            self.client = self.last_client = self._make_client(args)
            try:
                self.client.connect()
            except Exception as e:
                refused = getattr(e, "code", None)  # ProtocolError: the engine answered no (E_RUN_EXISTS, E_RANK, ...)
                if refused and self.options.fail_mode != "fail_closed":
                    logger.error("tailguard: the engine refused run %s: %s; this run is NOT monitored (every step "
                                 "is counted in tailguard/client/dropped)", self.run_id, e)
                elif self.options.fail_mode != "fail_closed":
                    self._warn_once("connect", f"tailguard: engine not reachable yet ({e}); training goes on and the client keeps retrying")
                elif refused:
                    failure = f"rank {rank}: E_REFUSED: the engine refused run {self.run_id}: {e}"
                else:
                    failure = f"rank {rank}: E_UNREACHABLE: engine unreachable at {self.client.endpoint}: {e}"
        if self.client is not None and self.options.mode == "raw" and self.options.fail_mode != "fail_closed":
            # fail_closed keeps staging on the training thread: its verdict at step N must see step N's drop.
            self._staging = StagingThread(self.options.queue_max_steps, self.client.drop_step,
                                          self.client.held_steps)
            self.capture.defer_host = True
        if self.options.fail_mode == "fail_closed":
            # Every rank learns every rank's outcome, so all raise together (one rank raising alone
            # would leave the others in DDP's first all-reduce until its timeout).
            failures = [f for f in guard.all_gather(failure) if f]
            if failures:
                self._close_client()
                raise TailguardStopped("; ".join(failures))

    def _attach_lazily(self) -> bool:
        """`callbacks=[TailguardCallback()]`: attach now to the trainer running this callback (found by
        identity, guard.find_trainer); without one, say loudly that nothing is monitored."""
        if self.disabled or self.trainer is not None:
            return False
        trainer = guard.find_trainer(self)
        if trainer is None:
            logger.error("tailguard: TailguardCallback was added without attach() and its trainer could not be "
                         "found: this run is NOT monitored. Call `tailguard.attach(trainer)` before `train()`.")
            return False
        logger.warning("tailguard: TailguardCallback passed in callbacks=: attaching to %s at train begin "
                       "(`tailguard.attach(trainer)` does this at construction)", type(trainer).__name__)
        self.attach(trainer)
        return True

    def on_step_end(self, args, state, control, **kwargs):
        if self.capture is None:
            return
        self._local_stop = None
        try:
            sent = self._send_step(state, control)
            if self.options.fail_mode == "fail_closed":
                self._local_stop = self._verdict(self.client, sent is not False, state.global_step)
                if self._local_stop:
                    logger.error("tailguard (fail_closed): %s; stopping training", self._local_stop)
                    control.should_training_stop = True
        except Exception as e:  # never raise: every rank must reach the step-end exchange below
            if self.options.fail_mode == "fail_closed":
                self._local_stop = f"E_SEND_FAILED: could not send step {state.global_step}: {e!r}"
                logger.error("tailguard (fail_closed): %s; stopping training", self._local_stop)
                control.should_training_stop = True
            else:
                self._warn_once("send", f"tailguard: could not send step {state.global_step}: {e!r}")
            try:
                self.capture.discard()
            except Exception:  # noqa: BLE001 - already failing; the exchange matters more
                pass
        self._apply_directives(args, state, control)

    def _send_step(self, state, control) -> bool:
        """Send this rank's step (raw or sketch, one path: `EngineClient.send_step`); False when it was dropped."""
        if self.options.mode == "sketch":  # every rank joins the reduce; rank 0 sends (sketch.py)
            from .sketch import send_capture_step

            return send_capture_step(self, state, control)
        if self._staging is not None:
            return self._send_deferred(state.global_step)
        payload = self.capture.take_step(state.global_step)
        if payload is None or self.client is None:
            return True
        return _send_payload(self.client, state.global_step, payload, *self._step_context(self.client))

    def _step_context(self, client) -> tuple[dict, dict, dict]:
        """What only the training thread may read for a step's message: TRL's metrics, the knobs, directive extras."""
        logs, knobs = self.capture.step_logs(), self.capture.knobs()
        return logs, knobs, self.directives.step_extras(client) if self.directives is not None else {}

    def _send_deferred(self, step: int) -> bool:
        """Hand the step to the staging thread (capture/background.py) with its context, read now on the training
        thread. Its drops are counted by the client."""
        build = self.capture.take_pending(step)
        if build is None or self.client is None:
            return True
        client, context = self.client, self._step_context(self.client)

        def job() -> None:
            _send_payload(client, step, build(), *context)

        self._staging.submit(step, job)
        return True

    def _apply_directives(self, args, state, control) -> None:
        """Hook for directives.py (control-shim): apply engine directives at this step boundary, on every rank."""
        if self.directives is not None:
            self.directives.client = self.client
            self.directives.on_step_end(state, control, local_stop=self._local_stop)

    def on_save(self, args, state, control, **kwargs):
        if self.directives is not None:  # control-shim: tailguard_state.json, protected copy, notice
            self.directives.on_save(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self._log_wrapped and logs is not None:  # attach() normally injects earlier, in trainer.log
            self._inject_metrics(logs)

    def on_train_end(self, args, state, control, **kwargs):
        self._close_client()
        if getattr(self, "embedded_engine", None) is not None:  # engine.py: the private engine stops with training
            self.embedded_engine.stop()
        if self.capture is None:
            return
        guard.barrier()  # every rank has closed its client before any rank goes on to exit
        stopped = self.directives.stopped if self.directives is not None else None
        if stopped is not None and self.options.fail_mode == "fail_closed":
            raise TailguardStopped(stopped[1], step=stopped[0])


def _one_prefix(message: str) -> str:
    """One `tailguard:` prefix, also when a message embeds another tailguard message (an exception's text)."""
    while "tailguard: tailguard: " in message:
        message = message.replace("tailguard: tailguard: ", "tailguard: ")
    return message


def _send_payload(client, step: int, payload, logs: dict, knobs: dict, extras: dict) -> bool:
    """One step's message from its staged payload (the training thread's, or the staging thread's)."""
    if payload.loss is not None and math.isfinite(payload.loss):
        logs["loss"] = payload.loss
    return client.send_step(step, payload.arrays, knobs=knobs, logs=logs, implicit=payload.implicit,
                            slice_names=payload.slice_names, **extras)
