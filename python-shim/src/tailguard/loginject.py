"""The engine's metrics in the trainer's logs: `trainer.log` is wrapped (attaching.py) so that
`tailguard/<pair>/<slice>/<metric>`, the client counters `tailguard/client/*` and the run's events land in each
log line, ahead of `state.log_history` and every reporting callback. A mixin of `TailguardCallback`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .events import EventLog
from .logmetrics import curate
from .options import Options


class LogInjection:
    # Set by TailguardCallback.__init__.
    options: Options
    trainer: Any
    client: Any
    _events: EventLog
    _last_metrics_step: int | None
    _last_client_stats: dict | None

    if TYPE_CHECKING:  # TailguardCallback's
        def _warn_once(self, key: str, message: str) -> None: ...

    def _inject_metrics(self, logs: dict) -> None:
        if not self.options.log_metrics or self.client is None or self.trainer is None:
            return
        if not self.trainer.state.is_world_process_zero:
            return
        try:
            step, metrics = self._wait_metrics(self.trainer.state.global_step)
            added = {}
            if step is not None and step != self._last_metrics_step:
                self._last_metrics_step = step
                curated = curate(metrics, full=self.options.log_metrics == "full", names=self.options.metric_names)
                added = {f"tailguard/{k}": v for k, v in curated.items()}
                added["tailguard/metrics_step"] = step
            stats = self.client.stats
            counters = {k: stats.get(k, 0) for k in ("sent", "acked", "recorded", "dropped", "queued", "errors", "reconnects")}
            if added or counters != self._last_client_stats:
                self._last_client_stats = counters
                added.update({f"tailguard/client/{k}": v for k, v in counters.items()})
            added.update(self._events.drain())
            logs.update(added)
        except Exception as e:  # logging must never fail training
            self._warn_once("log", f"tailguard: could not add metrics to the logs: {e!r}")

    def _wait_metrics(self, want_step: int) -> tuple[int | None, dict]:
        """The newest metrics, waiting up to `log_wait_s` for this step's: step N's metrics land in step N's log
        whenever the engine answers within the budget. No wait while the engine is away."""
        deadline = time.monotonic() + self.options.log_wait_s
        staging = getattr(self, "_staging", None)
        if staging is not None:
            # The step just handed to the staging thread (capture/background.py) is sent (or counted dropped)
            # before the line is written, so its counters are this step's. Its staging is bounded (no I/O but
            # send_budget_s); the guard only covers a stuck thread.
            staging.wait_idle(max(1.0, self.options.log_wait_s))
        step, metrics = self.client.latest_metrics()
        while (step is None or step < want_step) and time.monotonic() < deadline and self.client.connected:
            time.sleep(0.005)
            step, metrics = self.client.latest_metrics()
        return step, metrics
