"""Raw mode's staging thread: the O(tokens) work of a step (selection into the wire buffers, encode, enqueue)
runs here, so the training thread's cost at a step boundary is O(micro-batches) (issue 17 item 6).

The training thread hands over a job per step: references to the step's host tensors (no copy) and what must
be read on the training thread (knobs, logs, directive extras). Jobs run in step order, one at a time.
Bounded: at most `max_steps` steps are held here and in the client together (`held()`); past that the oldest
waiting job is dropped and counted by the client, as the client drops its oldest while the engine is away.
A failing job is warned about once and its step counted as dropped: never lost silently, never both.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

logger = logging.getLogger("tailguard")


class StagingThread:
    """One worker thread; `submit` never blocks the caller."""

    def __init__(self, max_steps: int, drop: Callable[[int, str], None], held: Callable[[], int] = lambda: 0):
        self.max_steps = max(1, int(max_steps))
        self._drop, self._held = drop, held
        self._cv = threading.Condition()
        self._jobs: collections.deque[tuple[int, Callable[[], object]]] = collections.deque()
        self._busy = False
        self._stopping = False
        self._warned = False
        self.done = 0  # jobs run to the end
        self.failed = 0  # jobs that raised (their step counted as dropped)
        self.cpu_s = 0.0  # this thread's CPU time in jobs (the work moved off the training thread)
        self._thread = threading.Thread(target=self._run, name="tailguard-staging", daemon=True)
        self._thread.start()

    def submit(self, step: int, job: Callable[[], object]) -> None:
        dropped = []
        with self._cv:
            if self._stopping:
                dropped.append((step, f"step {step} dropped: staged after the client stopped"))
            else:
                # Room for this step: steps held here (waiting or being staged) plus the client's.
                while self._jobs and len(self._jobs) + self._busy + self._held() >= self.max_steps:
                    old, _ = self._jobs.popleft()
                    dropped.append((old, f"step {old} dropped: {self.max_steps} steps already held"))
                self._jobs.append((step, job))
                self._cv.notify_all()
        for s, why in dropped:  # outside our lock: the client takes its own
            self._drop(s, why)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every submitted job has run (or was dropped). True if idle in time."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._jobs or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def close(self, timeout: float) -> bool:
        """Run what is queued within `timeout`, drop (counted) what is left, and end the thread."""
        idle = self.wait_idle(timeout)
        with self._cv:
            self._stopping = True
            left = list(self._jobs)
            self._jobs.clear()
            self._cv.notify_all()
        for s, _ in left:
            self._drop(s, f"step {s} dropped: not staged before the client stopped")
        self._thread.join(max(0.0, timeout) + 1.0)
        return idle and not left

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stopping:
                    self._cv.wait()
                if not self._jobs:
                    return
                step, job = self._jobs.popleft()
                self._busy = True
            c0 = time.thread_time()
            try:
                job()
                ok = True
            except Exception as e:  # noqa: BLE001 - the monitor must never take training down
                ok = False
                if not self._warned:
                    self._warned = True
                    logger.warning("tailguard: staging step %d failed (%r); the step is counted as dropped "
                                   "(further failures are counted, not warned)", step, e)
                self._drop(step, f"step {step} dropped: staging failed ({e!r})")
            finally:
                with self._cv:
                    self.cpu_s += time.thread_time() - c0
                    self.done += ok
                    self.failed += not ok
                    self._busy = False
                    self._cv.notify_all()
