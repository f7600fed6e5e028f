"""The client's step ledger: the send queue, the steps awaiting a reply, and counters that never lie.

Every step offered to the client ends in exactly one fate: **recorded** (the engine answered and kept it)
or **dropped** (it will never be recorded: no room, no engine, rejected, or answered as not recorded).
Until then it is **queued** (held: waiting to be sent or answered) or **unconfirmed** (answered, but the
engine's `recorded_through` watermark, proto v1.1, has not reached it yet). So at any time
`recorded + dropped + queued + unconfirmed` = steps offered, and:

- `sent`: steps that went on the wire and were not dropped afterwards (a step is never both sent and dropped);
- `acked`: steps the engine answered, once per step (a resend answered again is not counted twice);
- `recorded`: steps the engine holds durably (answered by a v1.0 engine, or at or below `recorded_through`);
- `resent`: extra transmissions after a reconnect or a retryable error; `retries`: retryable refusals seen.

Every method expects the caller to hold the client's lock.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("tailguard.client")

COUNTERS = ("sent", "acked", "recorded", "dropped", "errors", "reconnects", "resent", "retries")


@dataclass
class Step:
    step: int
    messages: list  # one frame list per chunk
    enqueued_at: float
    sent_at: float = 0.0
    attempts: int = 0
    not_before: float = 0.0  # a retryable refusal: do not send again before this (monotonic)
    refusals: int = 0
    settled: bool = field(default=False, repr=False)


class Ledger:
    def __init__(self, queue_max_steps: int):
        self.queue_max_steps = queue_max_steps
        self.outbox: collections.deque[Step] = collections.deque()
        self.inflight: collections.OrderedDict[int, Step] = collections.OrderedDict()
        self.unconfirmed: collections.OrderedDict[int, Step] = collections.OrderedDict()
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.drop_log: list[tuple[int, str]] = []  # (step, why), newest last, bounded
        self._warned_at = 0
        self._last_warn = 0.0

    @property
    def held(self) -> int:
        return len(self.outbox) + len(self.inflight)

    def snapshot(self) -> dict:
        return {**self.stats, "queued": self.held, "unconfirmed": len(self.unconfirmed)}

    # ---- fates -------------------------------------------------------------------------------------
    def drop(self, item: Step | None, why: str, step: int | None = None) -> bool:
        """Count one step as dropped (once) and warn; returns False for `send_step` to return."""
        if item is not None:
            if item.settled:
                return False
            item.settled = True
            if item.attempts > 0:
                self.stats["sent"] -= 1
            step = item.step
        self.stats["dropped"] += 1
        self.drop_log.append((step if step is not None else -1, why))
        del self.drop_log[:-64]
        self._warn(why)
        return False

    def answer(self, step: int, watermark: bool) -> Step | None:
        """The engine answered `step`. With a `recorded_through` watermark in the reply (`watermark`) the step
        waits for it (`confirm_through`); a v1.0 engine's answer is its record."""
        item = self.inflight.pop(step, None)
        if item is None or item.settled:
            return None  # a late answer to a step already settled: nothing to count again
        self.stats["acked"] += 1
        if watermark:
            self.unconfirmed[step] = item
            self.unconfirmed.move_to_end(step)
        else:
            self._record(item)
        return item

    def _record(self, item: Step) -> None:
        item.settled = True
        item.messages = []  # the engine has it: the frames (zero-copy views of the caller's arrays) go
        self.stats["recorded"] += 1

    def confirm_through(self, through: int | None) -> None:
        """`recorded_through`: every answered step at or below it is on the engine's disk."""
        if through is None:
            return
        for step in [s for s in self.unconfirmed if s <= through]:
            self._record(self.unconfirmed.pop(step))

    def lose_unconfirmed(self, why: str) -> None:
        """The engine's store failed (`E_STORE`): answered steps above the watermark are not on disk."""
        for item in list(self.unconfirmed.values()):
            self.drop(item, f"step {item.step} {why}")
        self.unconfirmed.clear()

    def resume_from(self, last_step: int | None) -> None:
        """A new session's `welcome.resume.last_step`: answered steps above it are not in the store (an engine
        killed before it wrote them) and are sent again; those at or below it are recorded."""
        self.confirm_through(last_step)
        back = list(self.unconfirmed.values())
        self.unconfirmed.clear()
        for item in reversed(back):
            if not item.messages:  # its frames were let go (bound_unconfirmed): it cannot be sent again
                self.drop(item, f"step {item.step} dropped: the engine lost it and its frames were released")
                continue
            self.stats["acked"] -= 1  # answered again after the resend; counted once
            self.outbox.appendleft(item)

    def reject(self, step: int, why: str) -> None:
        item = self.inflight.pop(step, None)
        if item is not None:
            self.drop(item, why)

    # ---- queue -------------------------------------------------------------------------------------
    def requeue_inflight(self) -> None:
        """Unanswered steps go back to the front of the queue (a new session resends them)."""
        back = list(self.inflight.values())
        self.inflight.clear()
        for item in reversed(back):
            self.outbox.appendleft(item)

    def trim(self, why: str) -> None:
        """Keep at most `queue_max_steps` held; the oldest go first."""
        while self.held > self.queue_max_steps and self.outbox:
            old = self.outbox.popleft()
            self.drop(old, f"step {old.step} dropped: {why}")

    def next_due(self, now: float) -> Step | None:
        """The oldest queued step that may be sent now (retry backoff respected), moved to in-flight."""
        for i, item in enumerate(self.outbox):
            if item.not_before <= now:
                del self.outbox[i]
                self.inflight[item.step] = item
                return item
        return None

    def mark_sent(self, item: Step) -> None:
        item.attempts += 1
        item.sent_at = time.monotonic()
        self.stats["sent" if item.attempts == 1 else "resent"] += 1

    def retry_later(self, step: int, delay_s: float, max_refusals: int, code: str) -> None:
        """A retryable refusal of a step: back to the queue after `delay_s`, or dropped after `max_refusals`."""
        item = self.inflight.pop(step, None)
        if item is None:
            return
        self.stats["retries"] += 1
        item.refusals += 1
        if item.refusals > max_refusals:
            self.drop(item, f"step {step} dropped: refused {item.refusals} times ({code})")
            return
        item.not_before = time.monotonic() + delay_s
        self.outbox.appendleft(item)

    def drop_all(self, why: str) -> None:
        """Closing: whatever is still held will never be recorded."""
        for item in list(self.inflight.values()) + list(self.outbox):
            self.drop(item, f"step {item.step} {why}")
        self.inflight.clear()
        self.outbox.clear()

    def bound_unconfirmed(self, keep: int) -> None:
        """Answered steps waiting for the watermark keep their frames for a resend; only the newest `keep` do."""
        for item in list(self.unconfirmed.values())[:-keep or None]:
            item.messages = []

    def _warn(self, why: str) -> None:
        # The first drop, then each doubling, then at most every 10 s: visible without flooding the log.
        n, now = self.stats["dropped"], time.monotonic()
        if n == 1 or n >= 2 * self._warned_at or now - self._last_warn > 10.0:
            self._warned_at, self._last_warn = n, now
            s = self.stats
            log.warning("tailguard: %s (client: dropped %d, recorded %d, sent %d, queued %d)",
                        why, n, s["recorded"], s["sent"], self.held)
