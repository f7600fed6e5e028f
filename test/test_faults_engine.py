"""Faults with real processes: the engine SIGKILLed and restarted, a trainer rank SIGKILLed, a slow engine.

Each test counts what happened on both sides (client stats, the run store, the engine's log) instead of
trusting that nothing went wrong. Send times are printed, never asserted (a loaded machine is no fault).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from synthetic_steps import synthetic_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402


def store_steps(run_dir: Path, run_id: str) -> dict[int, dict]:
    """steps.jsonl of a run, by step (a torn last line is ignored, as every reader does)."""
    out = {}
    p = run_dir / run_id / "steps.jsonl"
    for line in p.read_text().splitlines() if p.exists() else []:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[e["step"]] = e
    return out


def engine_log_records(engine) -> list[dict]:
    recs = []
    for line in engine.log().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return recs


def timed_send(c: EngineClient, step: int, arrays, worst: list) -> bool:
    t = time.monotonic()
    ok = c.send_step(step, arrays, knobs={"beta": 0.04}, logs={"loss": float(step)})
    worst[0] = max(worst[0], time.monotonic() - t)
    return ok


def test_engine_sigkill_restart_keeps_every_acknowledged_step(start_engine):
    engine = start_engine()
    run = "kill-restart"
    rng = np.random.default_rng(1)
    budget = 0.05
    c = EngineClient(engine.endpoint, run, send_budget_s=budget, queue_max_steps=8, reply_timeout_s=5.0,
                     hello_retry_s=0.5, heartbeat_ms=300)
    worst = [0.0]
    tokens_sent = {}
    try:
        c.connect(timeout=30)
        for step in range(24):  # engine up; the last 4 steps are still in flight at the kill
            a = synthetic_step(rng, n_seqs=6, mean_len=30)
            tokens_sent[step] = len(a["completion_mask"])
            assert timed_send(c, step, a, worst)
            if step < 20:
                assert c.flush(30), c.stats
        engine.kill()  # SIGKILL: no shutdown path runs
        acked_before_kill = {s for s in range(24) if c.reply_for(s) is not None}
        for step in range(24, 40):  # engine down: training goes on (fail_open)
            a = synthetic_step(rng, n_seqs=6, mean_len=30)
            tokens_sent[step] = len(a["completion_mask"])
            timed_send(c, step, a, worst)
            time.sleep(0.02)
        down_stats = c.stats
        engine.start()  # same endpoint, same run directory
        for step in range(40, 60):
            a = synthetic_step(rng, n_seqs=6, mean_len=30)
            tokens_sent[step] = len(a["completion_mask"])
            timed_send(c, step, a, worst)
            time.sleep(0.02)
        assert c.flush(60), c.stats
        st = c.stats
    finally:
        c.close()

    stored = store_steps(engine.run_dir, run)
    lost_acked = acked_before_kill - set(stored)
    print(f"kill/restart: acked before kill {len(acked_before_kill)}, lost after restart {len(lost_acked)}; "
          f"client {st}; stored {len(stored)} of 60 steps; worst send {worst[0] * 1000:.1f} ms")
    assert acked_before_kill >= set(range(20)), "every flushed step was answered before the kill"
    assert not lost_acked, f"steps acknowledged before SIGKILL missing from the store: {sorted(lost_acked)}"
    # While the engine was down nothing was answered; the queue held at most queue_max_steps, the rest dropped.
    assert down_stats["dropped"] >= 16 - 8
    # Exact accounting: every step is in the store or counted as dropped by the client, never both.
    assert st["reconnects"] >= 1
    assert len(stored) + st["dropped"] == 60, (sorted(stored), st)
    # The client's own ledger agrees: each step recorded or dropped once (none left unconfirmed after the bye),
    # a step resent after the restart answered once, and nothing both sent and dropped.
    assert st["recorded"] == len(stored) and st["unconfirmed"] == 0 and st["queued"] == 0, st
    assert st["acked"] == st["recorded"] and st["sent"] == st["recorded"], st
    assert all(stored[s]["tokens"] == tokens_sent[s] for s in stored)
    assert engine.alive


RANK1 = r"""
import sys, time, numpy as np
sys.path.insert(0, sys.argv[2])
from synthetic_steps import synthetic_step
from tailguard.client import EngineClient
c = EngineClient(sys.argv[1], "rank-kill", rank=1, world_size=2, queue_max_steps=64, send_budget_s=5)
c.connect(timeout=30)
rng = np.random.default_rng(11)
for step in range(5):
    c.send_step(step, synthetic_step(rng, n_seqs=4, mean_len=20))
assert c.flush(30)
print("rank1 sent 0..4", flush=True)
time.sleep(600)  # wait to be killed
"""


def test_rank_killed_steps_finalised_after_timeout_rank_marked_missing(start_engine):
    engine = start_engine("--step-timeout", "1500")
    proc = subprocess.Popen([sys.executable, "-c", RANK1, engine.endpoint, str(ROOT / "examples")], stdout=subprocess.PIPE, text=True)
    c = EngineClient(engine.endpoint, "rank-kill", rank=0, world_size=2, queue_max_steps=64, send_budget_s=5)
    rng = np.random.default_rng(10)
    try:
        c.connect(timeout=30)
        assert proc.stdout.readline().strip() == "rank1 sent 0..4"
        proc.kill()  # SIGKILL the trainer rank
        proc.wait(10)
        for step in range(12):
            assert c.send_step(step, synthetic_step(rng, n_seqs=4, mean_len=20))
        assert c.flush(30), c.stats
        deadline = time.monotonic() + 30
        while len(store_steps(engine.run_dir, "rank-kill")) < 12 and time.monotonic() < deadline:
            time.sleep(0.2)  # steps 5.. wait for the step timeout, then the engine's tick finalises them
    finally:
        c.close()
        if proc.poll() is None:
            proc.kill()
    stored = store_steps(engine.run_dir, "rank-kill")
    assert sorted(stored) == list(range(12)), sorted(stored)
    for s in range(5):
        assert stored[s]["ranks_present"] == [0, 1] and stored[s]["ranks_missing"] == []
    for s in range(5, 12):
        assert stored[s]["ranks_present"] == [0] and stored[s]["ranks_missing"] == [1], stored[s]
    # Still healthy: a new run is served.
    with EngineClient(engine.endpoint, "after-rank-kill") as h:
        h.connect(timeout=10)
        assert h.send_step(0, synthetic_step(rng, n_seqs=2, mean_len=10)) and h.flush(10)
    assert engine.alive


def test_slow_engine_never_blocks_training_and_drops_are_counted_on_both_sides(start_engine):
    engine = start_engine("--delay-ms", "300", log_level="info")
    budget = 0.05
    c = EngineClient(engine.endpoint, "slow", send_budget_s=budget, queue_max_steps=4, reply_timeout_s=30)
    rng = np.random.default_rng(3)
    worst = [0.0]
    results = []
    try:
        c.connect(timeout=30)
        for step in range(40):
            results.append(timed_send(c, step, synthetic_step(rng, n_seqs=4, mean_len=20), worst))
        c.flush(30)
        st = c.stats
    finally:
        c.close()
    time.sleep(0.5)
    dropped = results.count(False)
    assert dropped > 0, "a 300 ms engine with a 4-step queue must drop at 40 steps in a burst"
    assert st["dropped"] == dropped and st["sent"] == 40 - dropped, st
    # Engine side: it stored exactly the steps the client sent, and its log has the client's drop count (bye).
    stored = store_steps(engine.run_dir, "slow")
    assert len(stored) == st["sent"]
    byes = [r for r in engine_log_records(engine) if r.get("msg") == "bye" and r.get("run_id") == "slow"]
    assert byes and byes[-1]["stats"]["dropped"] == dropped and byes[-1]["stats"]["sent"] == st["sent"], byes
    print(f"slow engine: {dropped} of 40 dropped, worst send {worst[0] * 1000:.1f} ms (budget {budget * 1000:.0f} ms)")
