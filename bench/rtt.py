"""Round-trip time of one step through a real engine: send (header + frames, loopback tcp) → directive reply.

    .venv/bin/python bench/rtt.py [--tokens 1000000] [--runs 20]

Prints the median and p90 over N runs for a 1M-token step through EngineClient (background thread,
queue, zero-copy frames) and through a bare DEALER, with and without the engine's checksum, plus the
ratio to a 100-token step measured in the same process (the fixed per-message cost).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "test")]

from engine_fixture import Engine  # noqa: E402
from synthetic_steps import big_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402
from tailguard.wire import decode_message, encode_message, encode_step  # noqa: E402


def client_rtts(endpoint: str, run: str, arrays, runs: int, checksum: bool) -> list[float]:
    out = []
    with EngineClient(endpoint, run, checksum=checksum, send_budget_s=10, reply_timeout_s=60) as c:
        c.connect(timeout=30)
        for step in range(runs + 2):
            t0 = time.perf_counter()
            c.send_step(step, arrays)
            if not c.flush(60):
                raise RuntimeError(f"no reply: {c.stats} {list(c.errors)}")
            if step >= 2:  # two warm-up steps (JIT, buffer growth)
                out.append(time.perf_counter() - t0)
    return out


def dealer_rtts(endpoint: str, run: str, arrays, runs: int, checksum: bool) -> list[float]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send_multipart(encode_message({"type": "hello", "run_id": run, "rank": 0, "world_size": 1,
                                         "trainer": "synthetic", "checksum": checksum}))
        assert s.poll(30_000) and decode_message(s.recv_multipart())[0]["type"] == "welcome"
        out = []
        for step in range(runs + 2):
            t0 = time.perf_counter()
            msgs = encode_step({"type": "step", "run_id": run, "rank": 0, "world_size": 1, "step": step}, arrays)
            for frames in msgs:
                s.send_multipart(frames, copy=False)
            assert s.poll(60_000)
            h, _ = decode_message(s.recv_multipart(copy=False))
            assert h["type"] == "directive", h
            if step >= 2:
                out.append(time.perf_counter() - t0)
        return out
    finally:
        s.close(0)
        ctx.term()


def fmt(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1e3:8.2f} ms   p90 {xs[int(0.9 * (len(xs) - 1))] * 1e3:8.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--endpoint", help="use a running engine instead of starting one")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    big = big_step(rng, tokens=args.tokens, mean_len=1000)
    small = big_step(rng, tokens=100, mean_len=50)
    nbytes = sum(a.nbytes for a in big.values())
    chunks = len(encode_step({"type": "step", "run_id": "x", "rank": 0, "world_size": 1, "step": 0}, big))
    print(f"step: {args.tokens:,} tokens, buffers {list(big)}, {nbytes / 2**20:.1f} MiB in {chunks} message(s)")

    with tempfile.TemporaryDirectory(prefix="tailguard-rtt-") as tmp:
        engine = None if args.endpoint else Engine(Path(tmp)).start()
        endpoint = args.endpoint or engine.endpoint
        try:
            results = {}
            for name, fn in (("EngineClient", client_rtts), ("bare DEALER", dealer_rtts)):
                for checksum in (True, False):
                    tag = f"{name}, checksum {'on' if checksum else 'off'}"
                    base = fn(endpoint, f"rtt-small-{len(results)}", small, args.runs, checksum)
                    rtts = fn(endpoint, f"rtt-big-{len(results)}", big, args.runs, checksum)
                    results[tag] = (base, rtts)
                    ratio = statistics.median(rtts) / statistics.median(base)
                    print(f"{tag:<28} 1M: {fmt(rtts)}   100-token: {fmt(base)}   ratio {ratio:6.1f}x   "
                          f"{nbytes / statistics.median(rtts) / 2**30:5.2f} GiB/s")
        finally:
            if engine is not None:
                engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
