"""The client's counters reach the trainer's logs as they change: with the engine killed mid-run, each step's
log line shows the drops so far, and at the end every step is recorded or dropped (issue 14, item 3).
A real tiny GRPO trainer and a real engine process; no assertion on time."""

import os
import sys
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("trl")

import tailguard  # noqa: E402
from test_attach import grpo  # noqa: E402
from tiny import start_engine  # noqa: E402

KILL_AT, STEPS = 3, 8


def test_engine_killed_mid_run_the_logs_show_drops_as_they_happen(tiny, tmp_path):
    from transformers import TrainerCallback

    engine = start_engine(tmp_path / "runs")
    trainer = grpo(tiny, tmp_path, max_steps=STEPS)
    box = {}

    class Kill(TrainerCallback):  # runs before tailguard's on_step_end
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == KILL_AT:
                # Every step sent so far is acknowledged before the kill, so the count of drops does not depend on
                # whether the engine answered step KILL_AT - 1 in time (it raced in CI: 7 drops instead of 6).
                client, deadline = box["cb"].client, time.monotonic() + 60
                while client.stats["recorded"] < KILL_AT - 1 and time.monotonic() < deadline:  # hang guard only
                    time.sleep(0.02)
                engine.stop()
                while client.connected and time.monotonic() < deadline:  # hang guard only
                    time.sleep(0.02)

    try:
        trainer.add_callback(Kill())
        box["cb"] = cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="logs-kill", queue_max_steps=2,
                                          log_wait_s=0.0)
        trainer.train()  # fail_open: training goes on
    finally:
        engine.stop()
    assert trainer.state.global_step == STEPS
    logged = {r["step"]: r for r in trainer.state.log_history if "tailguard/client/dropped" in r}
    dropped = [logged[s]["tailguard/client/dropped"] for s in range(KILL_AT, STEPS + 1)]
    # From the kill on, the queue (2 steps) fills and every further step pushes one out: the log line of each
    # of those steps shows one more drop than the one before (before: drops only in the final stats).
    tail = dropped[-(STEPS - KILL_AT - 1):]
    assert tail[0] >= 1 and all(b == a + 1 for a, b in zip(tail, tail[1:])), dropped
    for s in range(KILL_AT, STEPS + 1):
        r = logged[s]
        assert r["tailguard/client/queued"] <= 2 and r["tailguard/client/sent"] >= r["tailguard/client/recorded"], r
    st = cb.last_client.stats  # after close: the steps still held are dropped too, none counted twice
    assert st["recorded"] + st["dropped"] + st["unconfirmed"] == STEPS and st["queued"] == 0, st
    assert st["dropped"] == STEPS - KILL_AT + 1 and st["sent"] == st["recorded"] + st["unconfirmed"], st
