"""EngineClient against a small Python ROUTER (fake_engine.py). The real engine is driven by test/test_cross_*.py."""

import time

import numpy as np
import pytest

from fake_engine import FakeEngine
from tailguard.client import EngineClient
from tailguard.wire import ProtocolError, step_checksum


def arrays(T=12, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "policy_vs_ref": rng.standard_normal(T).astype(np.float32),
        "completion_mask": np.ones(T, np.uint8),
        "tool_mask": (rng.random(T) < 0.7).astype(np.uint8),
        "offsets": np.array([0, T // 3, T], np.int32),
    }


@pytest.fixture
def engine():
    e = FakeEngine().start()
    yield e
    e.close()


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_handshake_steps_replies_and_bye(engine):
    with EngineClient(engine.endpoint, "unit-run", trainer="grpo", config={"beta": np.float32(0.5)}, checksum=True) as c:
        welcome = c.connect()
        assert welcome["type"] == "welcome" and welcome["run_id"] == "unit-run"
        sent = {}
        for s in range(6):
            a = arrays(10 + s, seed=s)
            sent[s] = a
            assert c.send_step(s, a, knobs={"beta": np.float64(0.04), "label": "dropped"}, logs={"loss": 1.0})
        assert c.flush(10)
        for s, a in sent.items():
            r = c.reply_for(s)["received"]
            assert r["tokens"] == 10 + s and r["n_seqs"] == 2
            assert r["checksum"] == step_checksum(a.values())
        directives = c.poll_directives()
        assert [d["apply_at_step"] for d in directives] == [1, 2, 3, 4, 5, 6]
        assert c.poll_directives() == []
        assert c.latest_metrics() == (5, {"policy_vs_ref/all/n": 15.0})
        c.send_ack("d5", 5, applied=True, changes=[{"knob": "beta", "old": 0.04, "new": 0.08}])
        assert wait_for(lambda: engine.acks)
        assert engine.acks[0]["directive_id"] == "d5" and engine.acks[0]["changes"][0]["new"] == 0.08
        st = c.stats
        assert st["sent"] == 6 and st["acked"] == 6 and st["dropped"] == 0 and st["queued"] == 0
    assert engine.byes and engine.byes[0]["last_step"] == 5 and engine.byes[0]["stats"]["sent"] == 6
    assert engine.sessions[next(iter(engine.sessions))]["config"] == {"beta": 0.5}


def test_torch_tensors_are_sent(engine):
    torch = pytest.importorskip("torch")
    with EngineClient(engine.endpoint, "torch-run", checksum=True) as c:
        c.connect()
        a = {k: torch.from_numpy(v) for k, v in arrays(9).items()}
        a["completion_mask"] = a["completion_mask"].bool()
        assert c.send_step(0, a)
        assert c.flush(10)
        assert c.reply_for(0)["received"]["checksum"] == step_checksum(arrays(9).values())


def test_full_queue_drops_and_counts_instead_of_blocking():
    e = FakeEngine(reply_steps=False).start()  # accepts steps, never answers: the queue fills
    try:
        with EngineClient(e.endpoint, "slow-run", queue_max_steps=2, send_budget_s=0.01, reply_timeout_s=60) as c:
            c.connect()
            results = [c.send_step(s, arrays()) for s in range(5)]
            assert results == [True, True, False, False, False]
            assert c.stats["dropped"] == 3 and c.stats["queued"] == 2
            assert not c.flush(0.1)
    finally:
        e.close()


def test_engine_absent_then_late_start_keeps_newest_steps():
    probe = FakeEngine().start()
    port = probe.port
    probe.close()  # a free port with nobody listening
    c = EngineClient(f"tcp://127.0.0.1:{port}", "late-run", queue_max_steps=3, connect_timeout_s=0.2, hello_retry_s=0.3)
    try:
        with pytest.raises(TimeoutError):
            c.connect()
        for s in range(5):
            assert c.send_step(s, arrays(seed=s))  # no engine to wait for: the oldest is dropped instead
        assert c.stats["dropped"] == 2 and c.stats["queued"] == 3
        e = FakeEngine(port=port).start()
        try:
            assert c.flush(15)
            assert sorted(s for _, s, _, _ in e.steps) == [2, 3, 4]
            assert c.stats["acked"] == 3
        finally:
            c.close()
            e.close()
    finally:
        c.close()


def test_reconnect_after_engine_restart_resends_unanswered(engine):
    c = EngineClient(engine.endpoint, "restart-run", queue_max_steps=16, reply_timeout_s=30, hello_retry_s=0.5)
    try:
        c.connect()
        for s in range(3):
            c.send_step(s, arrays(seed=s))
        assert c.flush(10)
        engine.stop()  # the engine dies; its sessions are gone
        engine.steps.clear()
        for s in range(3, 6):
            assert c.send_step(s, arrays(seed=s))
        engine.start()  # same port, no sessions
        assert c.flush(20)
        st = c.stats
        assert st["acked"] == 6 and st["dropped"] == 0 and st["reconnects"] >= 1
        assert engine.hellos >= 1 and sorted({s for _, s, _, _ in engine.steps}) == [3, 4, 5]
        assert c.connected
    finally:
        c.close()


def test_engine_errors_are_recorded_not_raised(engine):
    with EngineClient(engine.endpoint, "bad run id") as c:  # the engine refuses the hello
        with pytest.raises(ProtocolError) as e:
            c.connect()
        assert e.value.code == "E_RUN_ID"
        assert not c.send_step(0, {"tool_mask": np.ones(3, np.uint8)})  # not encodable: dropped, recorded
        assert c.stats["errors"] == 2 and {x["code"] for x in c.errors} == {"E_RUN_ID", "E_MISSING_FIELD"}


def test_a_reply_that_breaks_the_spec_is_recorded_and_settles_its_step():
    e = FakeEngine(bad_directives=True).start()
    try:
        with EngineClient(e.endpoint, "bad-reply-run", reply_timeout_s=600) as c:
            c.connect()
            assert c.send_step(0, arrays())
            assert c.flush(10)  # settled by the bad reply itself, not by a timeout and a resend
            st = c.stats
            assert st["acked"] == 1 and st["errors"] == 1 and st["resent"] == 0 and st["reconnects"] == 0
            assert c.errors[0]["code"] == "E_HEADER_DECODE" and c.reply_for(0) is None
    finally:
        e.close()


def test_close_never_hangs_without_an_engine(engine):
    c = EngineClient(engine.endpoint, "gone-run", close_timeout_s=0.2)
    c.connect()
    engine.stop()
    c.send_step(0, arrays())
    c.close()
    c.close()  # twice is fine
    assert not c.send_step(1, arrays())


def test_close_with_a_capture_recorder_closes_it(engine, tmp_path):
    c = EngineClient(engine.endpoint, "rec-run", record_to=str(tmp_path / "c.tgcap"))
    c.connect()
    assert c.send_step(0, arrays()) and c.flush(10)
    c.close()  # raised NameError once (the recorder's close sat behind a stray condition)
    assert c._recorder is None and (tmp_path / "c.tgcap").stat().st_size > 0
