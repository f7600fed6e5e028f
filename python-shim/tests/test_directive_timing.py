"""The directive contract's client rule (proto/README.md, "Timing (client)"): at the boundary of step b, rank 0
waits (bounded by `log_wait_s`) for its replies to steps <= b - D before applying, so a directive due at b is
applied at b, not one step late. A slow engine (replies 0.5 s after the step) makes the late case certain
without the wait; the assertion is on the step it was applied at, not on time."""

from __future__ import annotations

import os

from fake_engine import FakeEngine
from test_directives_tiny import build_grpo, read_jsonl
from test_directives_tiny import one_torch_thread  # noqa: F401 - autouse fixture

import tailguard


def test_a_directive_due_at_a_boundary_is_applied_there_even_when_the_reply_is_slow(tmp_path):
    engine = FakeEngine(delay_s=0.5, warn_at=frozenset({2, 4})).start()
    try:
        # No log waits for the reply (logging_steps > max_steps): only the directive rule may wait.
        tr = build_grpo(tmp_path / "out", max_steps=6)
        tr.args.logging_steps = 100
        cb = tailguard.attach(tr, endpoint=engine.endpoint, log_wait_s=30.0)
        tr.train()
    finally:
        engine.stop()
    log = read_jsonl(cb.directives.log_path) if os.path.exists(cb.directives.log_path) else []
    applied = {r["directive_id"]: r for r in log if r["event"] == "directive"}
    assert set(applied) == {"d2", "d4"}, log
    for did, due in (("d2", 3), ("d4", 5)):  # before: applied at the next boundary after the reply came, late
        assert applied[did]["step"] == due and applied[did]["late"] is False, applied[did]
