"""The reply side of `EngineClient`: directives, metrics and full replies as they arrive, acks going out, and the
wait the directive contract asks for. A mixin: it uses the client's lock (`_cv`), ledger and control queue."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Iterable, Mapping

from ..wire import encode_message
from .headers import ack_header


class Replies:
    # Set by EngineClient.__init__.
    run_id: str
    rank: int
    welcome: dict | None
    _cv: threading.Condition
    _ledger: Any
    _control: collections.deque
    _directives: list
    _replies: collections.OrderedDict
    _metrics: tuple
    queue_max_steps: int

    def start(self) -> None:  # EngineClient's
        raise NotImplementedError

    def _wake(self) -> None:  # EngineClient's
        raise NotImplementedError
    def send_ack(
        self,
        directive_id: str,
        step: int,
        applied: bool,
        changes: Iterable[Mapping[str, Any]] = (),
        refused: str | None = None,
    ) -> None:
        """Tell the engine a directive was applied (or refused, with a reason). Never blocks."""
        h = ack_header(self, directive_id, step, applied, changes, refused)
        self.start()
        with self._cv:
            self._control.append(encode_message(h))
        self._wake()

    def wait_answered(self, through: int, timeout: float) -> bool:
        """Wait (at most `timeout` s, and never without a session) until every held step ≤ `through` is
        answered or dropped: the directive contract's client rule (proto/README.md, "Timing (client)")."""
        deadline = time.monotonic() + timeout
        with self._cv:
            led = self._ledger
            while self.welcome is not None and any(i.step <= through for i in [*led.outbox, *led.inflight.values()]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def poll_directives(self) -> list[dict]:
        """Directives received since the last call (no-ops included), oldest first. Never blocks."""
        with self._cv:
            out, self._directives = self._directives, []
            return out

    def latest_metrics(self) -> tuple[int | None, dict]:
        """`(metrics_step, metrics)` from the newest directive reply: `"<pair>/<slice>/<metric>" -> value`."""
        with self._cv:
            return self._metrics

    def reply_for(self, step: int) -> dict | None:
        """The full `directive` reply header for a step (the last 4096 steps are kept)."""
        with self._cv:
            return self._replies.get(step)

    def _on_directive(self, h: dict) -> None:
        """A `directive` reply (I/O thread): settle its step, keep the directive and the metrics."""
        step = h.get("step")
        with self._cv:
            watermark = "recorded_through" in h  # proto v1.1: the step is recorded once the watermark passes it
            self._ledger.answer(step, watermark)
            self._ledger.confirm_through(h.get("recorded_through"))
            self._ledger.bound_unconfirmed(self.queue_max_steps)
            self._replies[step] = h
            self._replies.move_to_end(step)
            while len(self._replies) > 4096:
                self._replies.popitem(last=False)
            if isinstance(h.get("directive"), dict):
                self._directives.append(h["directive"])
            if isinstance(h.get("metrics"), dict) and h.get("metrics"):
                self._metrics = (h.get("metrics_step"), h["metrics"])
            self._cv.notify_all()
