"""An honest client against a real engine process: every step ends recorded or dropped (never both, never
neither), a full engine (`E_LIMIT`) is retried, and a refused client says so from `send_step`.

No assertion here is on time: waits are on events, with generous hang guards.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from synthetic_steps import synthetic_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402
from tailguard.wire import ProtocolError  # noqa: E402


def settled(st: dict, offered: int) -> None:
    """The ledger's invariants once nothing is queued: each step recorded or dropped, exactly once."""
    assert st["queued"] == 0 and st.get("unconfirmed", 0) == 0, st
    assert st["recorded"] + st["dropped"] == offered, st
    assert st["sent"] == st["recorded"], st  # a dropped step is not also counted as sent
    assert st["acked"] >= st["recorded"], st


def test_e_limit_is_retried_until_a_run_slot_frees(start_engine):
    engine = start_engine("--max-runs", "1")
    rng = np.random.default_rng(0)
    first = EngineClient(engine.endpoint, "holder")
    first.connect(timeout=30)
    waiting = EngineClient(engine.endpoint, "waiter", connect_timeout_s=1.0)
    try:
        with pytest.raises(TimeoutError, match="E_LIMIT"):  # full: refused, but still retrying
            waiting.connect()
        assert waiting.stats["retries"] >= 1 and waiting.refused is None
        assert waiting.send_step(0, synthetic_step(rng, n_seqs=2, mean_len=10))  # held while it retries
        first.close()  # the holder says bye: its run is idle, so the next hello gets the slot
        waiting.connect(timeout=60)
        assert waiting.flush(60), waiting.stats
        st = waiting.stats
        settled(st, 1)
        assert st["recorded"] == 1 and {e["code"] for e in waiting.errors} == {"E_LIMIT"}
    finally:
        first.close()
        waiting.close()


def test_a_refused_client_drops_and_counts_every_step(start_engine):
    engine = start_engine()
    rng = np.random.default_rng(1)
    c = EngineClient(engine.endpoint, "refused", world_size=2, rank=0)
    other = EngineClient(engine.endpoint, "refused", world_size=3, rank=1)  # a world_size the run does not have
    try:
        c.connect(timeout=30)
        with pytest.raises(ProtocolError) as e:
            other.connect(timeout=30)
        assert e.value.code == "E_RANK"
        for step in range(3):  # before: True every time, the steps sat unsent and uncounted
            assert other.send_step(step, synthetic_step(rng, n_seqs=2, mean_len=10)) is False
        assert other.stats["dropped"] == 3 and other.stats["sent"] == 0
        assert [s for s, _ in other.drops_since(0)] == [0, 1, 2]
    finally:
        c.close()
        other.close()


def test_engine_killed_mid_run_every_step_is_recorded_or_dropped_once(start_engine):
    engine = start_engine()
    rng = np.random.default_rng(2)
    c = EngineClient(engine.endpoint, "killed", queue_max_steps=3, reply_timeout_s=600, heartbeat_ms=200)
    try:
        c.connect(timeout=30)
        for step in range(5):
            assert c.send_step(step, synthetic_step(rng, n_seqs=2, mean_len=10))
            assert c.flush(60)
        engine.kill()
        drops = []
        for step in range(5, 12):  # no engine: the queue holds 3, every later step pushes one out
            c.send_step(step, synthetic_step(rng, n_seqs=2, mean_len=10))
            drops.append(c.stats["dropped"])
        assert drops[-1] >= 4 and drops == sorted(drops), drops  # seen as they happen, not only at the end
    finally:
        c.close(timeout=0.5)
    st = c.stats
    settled(st, 12)  # before: the steps still held at close were neither recorded nor dropped
    assert st["recorded"] == 5 and st["dropped"] == 7, st


def test_steps_the_store_lost_count_as_dropped_and_the_rest_as_recorded():
    """proto v1.1: a step is recorded once `recorded_through` passes it; `E_STORE` loses what it had not passed."""
    sys.path.insert(0, str(ROOT / "python-shim" / "tests"))
    from fake_engine import FakeEngine

    e = FakeEngine(store_fault_at=3).start()
    rng = np.random.default_rng(3)
    try:
        c = EngineClient(e.endpoint, "store-fault", reply_timeout_s=600)
        c.connect(timeout=30)
        for step in range(6):
            c.send_step(step, synthetic_step(rng, n_seqs=2, mean_len=10))
            assert c.flush(30), c.stats
        st = c.stats
        assert st["recorded"] == 3 and st["unconfirmed"] == 1, st  # 0, 1, 4 recorded; 5 waits for the watermark
        c.close()  # the bye ack's recorded_through confirms step 5
        st = c.stats
        settled(st, 6)
        assert st["recorded"] == 4 and st["dropped"] == 2, st  # 2 (above the watermark) and 3 (refused) lost
        assert sorted(s for s, _ in c.drops_since(0)) == [2, 3]
    finally:
        e.close()


@pytest.mark.parametrize("endpoint, hint", [
    ("http://127.0.0.1:8080", "not HTTP"), ("inproc://engine", "another process"), ("udp://x:1", "unsupported"),
    ("127.0.0.1:5599", "not a ZeroMQ endpoint"),
])
def test_endpoints_a_client_cannot_use_are_refused_up_front(endpoint, hint):
    with pytest.raises(ValueError, match=hint):
        EngineClient(endpoint, "run")


def test_a_client_whose_session_was_taken_over_stops_instead_of_taking_it_back(start_engine):
    engine = start_engine()
    rng = np.random.default_rng(4)
    old = EngineClient(engine.endpoint, "takeover", reply_timeout_s=600)
    new = EngineClient(engine.endpoint, "takeover", reply_timeout_s=600)
    try:
        old.connect(timeout=30)
        assert old.send_step(0, synthetic_step(rng, n_seqs=2, mean_len=10)) and old.flush(30)
        new.connect(timeout=30)  # the same (run, rank) from another connection: it takes the session over
        old.send_step(1, synthetic_step(rng, n_seqs=2, mean_len=10))
        assert old.flush(60)  # settled by E_SESSION, not left waiting
        assert old.refused is not None and old.refused["code"] == "E_SESSION", old.errors
        assert old.send_step(2, synthetic_step(rng, n_seqs=2, mean_len=10)) is False
        for step in (1, 2):  # the new owner keeps its session: the old one never says hello again
            assert new.send_step(step, synthetic_step(rng, n_seqs=2, mean_len=10)) and new.flush(30), new.stats
        st = new.stats
        assert st["reconnects"] == 0 and st["dropped"] == 0 and st["acked"] == 2, st
        assert old.stats["dropped"] == 2 and old.stats["recorded"] + old.stats["unconfirmed"] == 1, old.stats
    finally:
        old.close()
        new.close()
