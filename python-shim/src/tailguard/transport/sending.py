"""The sending side of `EngineClient`: `send_step` (the one send path of raw and sketch steps), `send_encoded`,
the bounded wait for room in the queue (`send_budget_s`, then drop), `flush`, and the counted drop. A mixin: it uses
the client's lock (`_cv`), ledger, recorder and wake socket, set by `EngineClient.__init__`."""

from __future__ import annotations

import collections
import logging
import socket as pysocket
import threading
import time
from typing import Any, Iterable, Mapping

from ..wire import ProtocolError
from .headers import step_messages
from .ledger import Ledger, Step

log = logging.getLogger("tailguard.client")


class Sending:
    # Set by EngineClient.__init__.
    send_budget_s: float
    queue_max_steps: int
    welcome: dict | None
    errors: collections.deque
    _cv: threading.Condition
    _ledger: Ledger
    _recorder: Any
    _hello_error: dict | None
    _closing: bool
    _closed: bool
    _last_step: int | None
    _wake_w: pysocket.socket

    def start(self) -> None:  # EngineClient's
        raise NotImplementedError

    @property
    def limits(self) -> dict:  # EngineClient's
        raise NotImplementedError

    def send_step(
        self,
        step: int,
        arrays: Mapping[str, Any],
        knobs: Mapping[str, Any] | None = None,
        logs: Mapping[str, Any] | None = None,
        implicit: Iterable[str] = (),
        slice_names: list[str] | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        sketch: Mapping[str, Any] | None = None,
    ) -> bool:
        """Queue one rank's step. Returns False when it was dropped (counted, never raised).

        The one send path of raw and sketch steps: with `sketch` (the sketch header fields, sketch.py) the
        `arrays` are the merged sketch buffers and go as one message.

        `arrays` maps step buffer names to numpy arrays or CPU torch tensors; they are sent without
        copying, so do not modify them until the step is answered (see `flush`).
        """
        self.start()
        try:
            messages = step_messages(self, step, arrays, self.limits, knobs, logs, implicit, slice_names, checkpoint,
                                     sketch)
        except ProtocolError as e:
            self._record_error({"code": e.code, "message": e.message, "ref": {"type": "step", "step": step}, "local": True})
            return self._drop(f"step {step} dropped: it could not be encoded ({e})", step)
        self._last_step = int(step)
        # The one place a step's frames are final: the capture recorder (record_to=) sees them here.
        if self._recorder is not None and sketch is None:
            try:
                self._recorder.write_step(messages)
            except OSError as e:  # a full disk must not take training down
                log.warning("tailguard: capture recording failed: %s", e)
        return self._enqueue(Step(int(step), messages, time.monotonic()))

    def send_encoded(self, step: int, messages: list[list]) -> bool:
        """Queue a step that is already encoded (one frame list per chunk), e.g. a sketch step or a
        replayed capture. Same budget, drop and resend rules as `send_step`."""
        self.start()
        with self._cv:
            self._last_step = int(step)
        return self._enqueue(Step(int(step), list(messages), time.monotonic()))

    def _enqueue(self, item: Step) -> bool:
        deadline = time.monotonic() + self.send_budget_s
        with self._cv:
            while True:
                led = self._ledger
                if self._closing or self._closed:
                    return led.drop(item, f"step {item.step} dropped: sent after the client stopped")
                if self._hello_error is not None:
                    e = self._hello_error
                    return led.drop(item, f"step {item.step} dropped: the engine refused this client "
                                          f"({e.get('code')}: {e.get('message')})")
                if led.held < self.queue_max_steps:
                    break
                if self.welcome is None and led.outbox:
                    # No engine to wait for: the newest data is worth more than the oldest.
                    old = led.outbox.popleft()
                    led.drop(old, f"step {old.step} dropped while the engine is unreachable")
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return led.drop(item, f"step {item.step} dropped: send queue full for {self.send_budget_s}s")
                self._cv.wait(left)
            self._ledger.outbox.append(item)
            self._cv.notify_all()
        self._wake()
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued step got its reply (or was dropped). True if all were answered."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._ledger.held:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cv.wait(left)
            return True

    def drop_step(self, step: int, why: str) -> None:
        """Count a step dropped before it reached `send_step` (the staging thread's drops, capture/background.py)."""
        self._drop(why, step)

    def held_steps(self) -> int:
        """Steps held (queued or awaiting a reply): `queue_max_steps` bounds them with the staging thread's."""
        with self._cv:
            return self._ledger.held

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed

    def _drop(self, why: str, step: int) -> bool:
        with self._cv:
            self._ledger.drop(None, why, step)
            self._cv.notify_all()
            return False

    def _record_error(self, err: dict) -> None:
        with self._cv:
            self._ledger.stats["errors"] += 1
            self.errors.append(err)
        log.warning("tailguard engine error %s: %s (ref %s)", err.get("code"), err.get("message"), err.get("ref"))
