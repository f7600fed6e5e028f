"""Cross-language: the real Python client and raw DEALER sockets against a real `tailguard serve` process."""

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from helpers import expected_received  # noqa: E402
from synthetic_steps import big_step, synthetic_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402
from tailguard.wire import ACTIONS, DEFAULT_LIMITS, decode_message, encode_message, encode_step  # noqa: E402

VECTORS = sorted((ROOT / "proto" / "v1" / "vectors").glob("*.json"))


def encoded(client: EngineClient, step: int, arrays) -> list:
    """The chunk messages the client sends for these arrays (same buffers and chunking; only `sent_at` differs)."""
    h = {"type": "step", "run_id": client.run_id, "rank": client.rank, "world_size": client.world_size, "step": step}
    return encode_step(h, arrays, client.limits)


def test_handshake(engine):
    with EngineClient(engine.endpoint, "hs-run", rank=1, world_size=2, trainer="grpo", config={"beta": 0.04}) as c:
        w = c.connect(timeout=30)
    assert w["type"] == "welcome" and w["run_id"] == "hs-run" and w["rank"] == 1
    assert isinstance(w["session"], str) and w["session"]
    assert w["engine"]["name"] and w["engine"]["version"]
    # The documented client limits are all there; engine-side extras (max_runs) may be too (unknown fields are ignored).
    assert set(DEFAULT_LIMITS) <= set(w["limits"]), w["limits"]
    assert w["limits"].get("max_runs", 1) >= 1
    assert w["limits"]["max_frame_bytes"] == 4 * 1024 * 1024
    assert w["resume"] is None
    assert engine.alive


def test_two_ranks_100_steps_echo_exactly(engine):
    run = "two-ranks"
    clients = [EngineClient(engine.endpoint, run, rank=r, world_size=2, queue_max_steps=256, send_budget_s=5.0,
                            reply_timeout_s=60, checksum=True) for r in range(2)]
    rngs = [np.random.default_rng(100 + r) for r in range(2)]
    expected: dict[tuple[int, int], dict] = {}
    try:
        for c in clients:
            c.connect(timeout=30)
        for step in range(100):
            for r, c in enumerate(clients):
                a = synthetic_step(rngs[r], n_seqs=int(rngs[r].integers(0, 12)), mean_len=40, pairs=("policy_vs_ref", "policy_vs_old"))
                expected[(r, step)] = expected_received(encoded(c, step, a))
                assert c.send_step(step, a, knobs={"beta": 0.04, "epsilon_low": 0.2}, logs={"loss": float(step)})
        for c in clients:
            assert c.flush(120), c.stats
        for r, c in enumerate(clients):
            st = c.stats
            assert st["sent"] == 100 and st["acked"] == 100 and st["dropped"] == 0 and st["errors"] == 0, (st, list(c.errors))
            for step in range(100):
                reply = c.reply_for(step)
                assert reply["run_id"] == run and reply["rank"] == r and reply["step"] == step
                assert reply["received"] == expected[(r, step)], (r, step)
                # The policy may act on the synthetic tails: any action, applied after the step that triggered it.
                d = reply["directive"]
                assert d["action"] in ACTIONS and d["step"] < d["apply_at_step"] and d["id"]
            assert len(c.poll_directives()) == 100
    finally:
        for c in clients:
            c.close()
    assert engine.alive


def test_every_must_reject_vector_gets_its_error_and_the_engine_keeps_serving(engine):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.endpoint)

    def roundtrip(frames):
        s.send_multipart(frames)
        assert s.poll(30_000), "no reply from the engine"
        header, _ = decode_message(s.recv_multipart())
        return header

    try:
        hello = {"type": "hello", "run_id": "run-a", "rank": 0, "world_size": 2, "trainer": "synthetic"}
        assert roundtrip(encode_message(hello))["type"] == "welcome"
        n = 0
        for f in VECTORS:
            for i, case in enumerate(json.loads(f.read_text())["cases"]):
                if case["valid"]:
                    continue
                reply = roundtrip([bytes.fromhex(h) for h in case["frames"]])
                where = f"{f.name}#{i} {case['description']}"
                assert reply["type"] == "error", (where, reply)
                assert reply["code"] == case["error"], (where, reply)
                assert isinstance(reply["fatal"], bool) and reply["message"]
                n += 1
        assert n >= 60
        assert engine.alive
        # Still serving: a new hello and a valid step on the same socket.
        assert roundtrip(encode_message(hello))["type"] == "welcome"
        a = synthetic_step(np.random.default_rng(5))
        h = {"type": "step", "run_id": "run-a", "rank": 0, "world_size": 2, "step": 0}
        [frames] = encode_step(h, a)
        reply = roundtrip(frames)
        assert reply["type"] == "directive" and reply["received"] == expected_received([frames])
    finally:
        s.close(0)
        ctx.term()


def test_engine_errors_from_the_session_layer(engine):
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(engine.endpoint)

    def roundtrip(header, arrays=None):
        s.send_multipart(encode_step(header, arrays)[0] if arrays is not None else encode_message(header))
        assert s.poll(30_000)
        return decode_message(s.recv_multipart())[0]

    try:
        a = synthetic_step(np.random.default_rng(9))
        step = {"type": "step", "run_id": "sess-run", "rank": 0, "world_size": 1, "step": 3}
        r = roundtrip(step, a)
        assert (r["type"], r["code"], r["fatal"]) == ("error", "E_NO_SESSION", True)
        assert r["ref"]["step"] == 3
        assert roundtrip({"type": "hello", "run_id": "sess-run", "rank": 0, "world_size": 1, "trainer": "synthetic"})["type"] == "welcome"
        assert roundtrip(step, a)["type"] == "directive"
        assert roundtrip(step, a)["code"] == "E_DUPLICATE"
        assert roundtrip({**step, "world_size": 2, "step": 4}, a)["code"] == "E_RANK"
        bye = roundtrip({"type": "bye", "run_id": "sess-run", "rank": 0, "last_step": 3})
        assert bye["type"] == "ack" and bye["of"] == "bye"
    finally:
        s.close(0)
        ctx.term()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_engine_restart_mid_stream_client_reconnects_and_continues(engine, sig):
    rng = np.random.default_rng(11)
    c = EngineClient(engine.endpoint, f"restart-{sig.name.lower()}", queue_max_steps=64, send_budget_s=2.0,
                     reply_timeout_s=20, hello_retry_s=1.0, checksum=True)
    sent = {}
    try:
        c.connect(timeout=30)
        for step in range(10):
            sent[step] = synthetic_step(rng)
            assert c.send_step(step, sent[step])
        assert c.flush(60)
        for step in range(10, 15):  # these may be in flight when the engine goes away
            sent[step] = synthetic_step(rng)
            assert c.send_step(step, sent[step])
        engine.restart(sig)
        for step in range(15, 25):
            sent[step] = synthetic_step(rng)
            assert c.send_step(step, sent[step])
        assert c.flush(90), (c.stats, list(c.errors))
        st = c.stats
        assert st["acked"] == 25 and st["dropped"] == 0, st
        assert st["reconnects"] >= 1 and c.connected
        for step, a in sent.items():
            assert c.reply_for(step)["received"] == expected_received(encoded(c, step, a)), step
        # The new engine process really took over: more steps go through.
        assert c.send_step(25, synthetic_step(rng)) and c.flush(30)
    finally:
        c.close()
    assert engine.alive


def test_large_chunked_step(engine):
    a = big_step(np.random.default_rng(3), tokens=1_250_000, mean_len=2000, pairs=("policy_vs_ref", "old_vs_rollout"))
    with EngineClient(engine.endpoint, "big-run", send_budget_s=5.0, reply_timeout_s=120, checksum=True) as c:
        c.connect(timeout=30)
        messages = encoded(c, 0, a)
        assert len(messages) >= 2  # 1.25M f32 tokens exceed one 4 MiB frame
        assert all(len(f) <= c.limits["max_frame_bytes"] for m in messages for f in m[1:])
        t0 = time.monotonic()
        assert c.send_step(0, a)
        assert c.flush(120), c.stats
        print(f"1.25M-token step in {len(messages)} chunks answered after {time.monotonic() - t0:.3f}s")
        assert c.reply_for(0)["received"] == expected_received(messages)
        assert c.stats["errors"] == 0


def test_checksum_is_opt_in(engine):
    """The client's default hello says checksum: false: the engine skips the FNV-1a pass, counts stay exact."""
    a = synthetic_step(np.random.default_rng(5), n_seqs=7, mean_len=50)
    with EngineClient(engine.endpoint, "no-checksum-run") as c:
        c.connect(timeout=30)
        assert c.send_step(0, a) and c.flush(30), c.stats
        want = expected_received(encoded(c, 0, a))
        assert c.reply_for(0)["received"] == {**want, "checksum": None}
