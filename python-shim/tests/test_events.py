"""events.py: directives and their findings as trainer log entries."""

from tailguard.events import EventLog, directive_events


def _d(action, findings=()):
    return {"id": f"r/1/{action}", "action": action, "evidence": {"findings": list(findings)}}


def test_directive_events_carry_severity_and_outcome():
    d = _d("tighten", [{"detector": "post_tool_tail_growth", "severity": "high"}, {"detector": "post_tool_tail_growth", "severity": "warn"}, {"detector": "exceedance", "severity": "warn"}])
    ev = directive_events(d, {"applied": True, "refused": "E_NO_REF_MODEL: beta"})
    assert ev == {"tailguard/event/post_tool_tail_growth": 2.0, "tailguard/event/exceedance": 1.0, "tailguard/event/directive/tighten": 0.5}
    assert directive_events(_d("rollback"), {"applied": True, "refused": None}) == {"tailguard/event/directive/rollback": 1.0}
    assert directive_events(_d("rollback"), {"applied": False, "refused": "E_ZERO3"}) == {"tailguard/event/directive/rollback": -1.0}
    assert directive_events(_d("noop"), {"applied": True}) == {}


def test_event_log_taps_apply_without_changing_it_and_drains_once():
    class Applier:
        def apply(self, d, step, control):
            return {"applied": d["action"] != "stop", "refused": None if d["action"] != "stop" else "E_X"}

    a, log = Applier(), EventLog(maxlen=3)
    log.tap(a)
    assert a.apply(_d("warn", [{"detector": "ess_collapse", "severity": "warn"}]), 1, None) == {"applied": True, "refused": None}
    a.apply(_d("stop"), 2, None)
    assert log.drain() == {"tailguard/event/ess_collapse": 1.0, "tailguard/event/directive/warn": 1.0, "tailguard/event/directive/stop": -1.0}
    assert log.drain() == {}
    for _ in range(10):
        a.apply(_d("warn"), 3, None)
    assert len(log._q) == 3  # bounded
