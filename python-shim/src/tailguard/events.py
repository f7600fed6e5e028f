"""Findings and directives as events in the trainer's own logs, so W&B, TensorBoard and trackio users see them
where they already look (beside loss and reward).

Keys (one value per logged step, only on steps where something happened):

- ``tailguard/event/<detector>``: the highest severity of that detector's findings behind a directive applied
  since the last log (0 info, 1 warn, 2 high, 3 critical).
- ``tailguard/event/directive/<action>``: 1 applied, 0.5 partly applied (some knobs refused), -1 refused.

The engine sends findings to the shim inside directives (``evidence.findings``); a warn-level finding reaches the
trainer as a ``warn`` directive. The full history is in the run store and its report.
"""

from __future__ import annotations

from collections import deque
from typing import Any

SEVERITY = {"info": 0, "warn": 1, "high": 2, "critical": 3}


def directive_events(d: dict, rec: dict | None) -> dict[str, float]:
    """The log entries of one applied (or refused) directive and the findings behind it."""
    out: dict[str, float] = {}
    action = d.get("action")
    if not action or action == "noop":
        return out
    evidence = d.get("evidence") if isinstance(d.get("evidence"), dict) else {}
    for f in evidence.get("findings") or ():
        if isinstance(f, dict) and isinstance(f.get("detector"), str):
            key = f"tailguard/event/{f['detector']}"
            out[key] = max(out.get(key, 0.0), float(SEVERITY.get(str(f.get("severity")), 0)))
    applied = bool(rec and rec.get("applied"))
    refused = bool(rec and rec.get("refused"))
    out[f"tailguard/event/directive/{action}"] = (0.5 if refused else 1.0) if applied else -1.0
    return out


class EventLog:
    """Events waiting for the next ``trainer.log``; bounded, so ranks that never log cannot grow it."""

    def __init__(self, maxlen: int = 256) -> None:
        self._q: deque[dict[str, float]] = deque(maxlen=maxlen)

    def tap(self, applier: Any) -> None:
        """Record every directive the applier (directives.py) applies or refuses; its behaviour is unchanged."""
        original = applier.apply

        def apply(d, step, control):
            rec = original(d, step, control)
            try:
                self._q.append(directive_events(d, rec if isinstance(rec, dict) else None))
            except Exception:  # an event is a convenience: never let it touch training
                pass
            return rec

        applier.apply = apply

    def drain(self) -> dict[str, float]:
        out: dict[str, float] = {}
        while self._q:
            for k, v in self._q.popleft().items():
                out[k] = max(out.get(k, v), v) if not k.startswith("tailguard/event/directive/") else v
        return out
