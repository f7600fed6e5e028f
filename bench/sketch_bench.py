"""Sketch mode vs raw mode: the shim's time per step and bytes, 10^5..10^8 tokens; and, with a real engine
process, the engine's reply latency per step (raw vs sketch).

    .venv/bin/python bench/sketch_bench.py [--max-exp 7] [--engine] [--reps 5] [--threads 1] [--write-doc]
    .venv/bin/python bench/sketch_bench.py --bytes --max-exp 7   # bytes per pair per step (docs/sketch.md)

The sketch path (compute_sketch + reduce_sketch + encode) runs with the default kernel (numpy on CPU) and,
interleaved on the same data, with the torch kernel (`backend="torch"`, what CPU used before issue 17 and what
accelerators run): the same-run baseline. Raw mode's shim (a copy into reused host buffers + encode) is the
other. Two kinds of data: tool outputs as spans (as trainers produce them) and as 5% scattered single tokens
(a run boundary every ~10 tokens: the numpy kernel's worst case). With CUDA present the table is repeated on
the GPU. Figures are medians of --reps runs; nothing is asserted (benchmarks live apart from tests).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from docsection import RunInfo, gpu_note, verdict, write_section  # noqa: E402
from tailguard import sketch as S  # noqa: E402
from tailguard.wire import encode_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_NS = 15.0  # issue 17: the shim's sketch cost on CPU ≤ 15 ns per token and pair


def synth(T: int, seed: int = 0, seq_len: int = 1024, spans: bool = False):
    rng = np.random.default_rng(seed)
    n_seqs = max(1, T // seq_len)
    cuts = np.sort(rng.choice(np.arange(1, T), n_seqs - 1, replace=False)) if n_seqs > 1 else np.array([], np.int64)
    offsets = np.concatenate([[0], cuts, [T]]).astype(np.int32)
    x = (rng.standard_t(3, T).astype(np.float32) * np.float32(0.2))
    tm = np.ones(T, np.uint8)
    if spans:  # tool outputs of 16-64 tokens covering ~5% of the tokens
        for s in rng.integers(0, T, T // 800):
            tm[s:s + rng.integers(16, 65)] = 0
    else:
        tm[rng.random(T) < 0.05] = 0  # about 30% post-tool after the first tool token per sequence
    cm = np.ones(T, np.uint8)
    return {"policy_vs_ref": x, "completion_mask": cm, "tool_mask": tm, "offsets": offsets}


def timed(f, sync=None):
    """(wall, this thread's CPU) seconds of f(), and its result."""
    if sync:
        sync()
    t0, c0 = time.perf_counter(), time.thread_time()
    out = f()
    if sync:
        sync()
    return (time.perf_counter() - t0, time.thread_time() - c0), out


def frames_bytes(messages) -> int:
    return sum(len(memoryview(f).cast("B")) for frames in messages for f in frames)


HEADER = {"type": "step", "run_id": "bench", "rank": 0, "world_size": 1, "step": 0, "implicit": [], "knobs": {},
          "logs": {}, "sent_at": 0.0}


def raw_shim(arrays, host):
    # The device→host copy into a reused host buffer (on a CPU machine: a memcpy), then encode.
    for k, a in arrays.items():
        host[k].copy_(a, non_blocking=False)
    return encode_step(HEADER, {k: v.numpy() for k, v in host.items()})


class _Id:
    run_id, rank, world_size = "bench", 0, 1


def sketch_shim(arrays, backend=None):
    sk = S.compute_sketch({"policy_vs_ref": arrays["policy_vs_ref"]}, arrays["completion_mask"], arrays["tool_mask"],
                          arrays["offsets"], backend=backend)
    sk = S.reduce_sketch(sk)
    return [S.encode_sketch_step(_Id, 0, sk)]


def shim_table(max_exp: int, reps: int, device: str = "cpu"):
    """Per size and data kind: medians of raw, sketch (default kernel) and sketch (torch kernel), interleaved."""
    rows = []
    sync = torch.cuda.synchronize if device == "cuda" else None
    for spans in (True, False):
        for e in range(5, max_exp + 1):
            T = 10**e
            arrays = {k: torch.from_numpy(v).to(device) for k, v in synth(T, spans=spans).items()}
            host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=device == "cuda") for k, v in arrays.items()}
            r = reps if e < 8 else 1
            t = {"raw": [], "now": [], "torch": []}
            for _ in range(r + 1):  # the first round warms up
                t["raw"].append(timed(lambda: raw_shim(arrays, host), sync)[0])
                dt, msgs = timed(lambda: sketch_shim(arrays), sync)
                t["now"].append(dt)
                if device == "cpu":
                    t["torch"].append(timed(lambda: sketch_shim(arrays, "torch"), sync)[0])
            m = {k: statistics.median(x[0] for x in v[1:]) if v else float("nan") for k, v in t.items()}
            m.update({f"{k} cpu": statistics.median(x[1] for x in v[1:]) if v else float("nan") for k, v in t.items()})
            rows.append((device, "spans" if spans else "scattered", T, m, frames_bytes(msgs)))
            print(f"{device} {'spans' if spans else 'scattered':9s} T=1e{e}: raw {m['raw'] / T * 1e9:6.2f} ns/token | "
                  f"sketch {m['now'] / T * 1e9:6.1f} ns/token (CPU {m['now cpu'] / T * 1e9:5.1f}) | "
                  f"torch kernel {m['torch'] / T * 1e9:6.1f} ns/token "
                  f"({m['torch'] / m['now']:.2f}x) | sketch {frames_bytes(msgs) / 1e3:.1f} KB", flush=True)
            del arrays, host
    return rows


def doc_section(info, rows, reps) -> str:
    out = ["## Sketch mode, shim cost (generated by `bench/sketch_bench.py --write-doc`)", "",
           "What sketch mode costs the trainer per step, for one pair (`policy_vs_ref`, Student-t(3)·0.2, sequences of "
           "~1,000 tokens, ~5% tool-output tokens): `compute_sketch` + `reduce_sketch` (one rank) + encoding, with the "
           "default kernel (on CPU: numpy over slice-contiguous tokens, sketch/cpu.py) and, interleaved on the same data, "
           "the torch kernel (`backend=\"torch\"`: what CPU tensors used before issue 17, and what accelerators run). "
           "Raw mode's shim (a copy into reused host buffers, then encode) is the other baseline. Tool outputs come as "
           f"16-64-token spans, or as scattered single tokens (a run boundary every ~10 tokens). Medians of {reps} rounds.",
           "", "Wall time per token, with the thread's CPU time in brackets (on this shared machine wall includes waiting "
           "for a core).", "",
           "| device | tool outputs | tokens/step | sketch ns/token | torch kernel ns/token | torch / now | raw mode ns/token "
           "| sketch / raw | sketch bytes | target ≤ 15 ns (wall; CPU) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for dev, kind, T, m, nbytes in rows:
        now, old, raw, now_c, old_c = (m[k] / T * 1e9 for k in ("now", "torch", "raw", "now cpu", "torch cpu"))
        old_s = f"{old:.1f} ({old_c:.1f}) | {old / now:.1f}×" if old == old else "— | —"
        target = f"{verdict(now, TARGET_NS)}; {verdict(now_c, TARGET_NS)}" if dev == "cpu" else "(CPU target)"
        out.append(f"| {dev} | {kind} | {T:,} | {now:.1f} ({now_c:.1f}) | {old_s} | {raw:.2f} | {now / raw:.0f}× | "
                   f"{nbytes / 1e3:.1f} KB | {target} |")
    note = gpu_note()
    out += ["", "Sketch bytes are the whole step message (histograms coded as the shim sends them; docs/sketch.md \"Bytes per step\"). "
            "Counts are identical to raw mode and the sums agree to float64 rounding (python-shim/tests/test_sketch*.py).",
            ""] + ([note, ""] if note else []) + [info.footer()]
    return "\n".join(out)


def engine_table(max_exp: int, reps: int, steps: int = 5):
    """Reply latency of a real engine process: send a step, wait for its directive."""
    from tailguard.client import EngineClient

    rows = []
    with tempfile.TemporaryDirectory() as d:
        ready = os.path.join(d, "ready")
        proc = subprocess.Popen(["node", os.path.join(ROOT, "ts-core/bin/tailguard.mjs"), "serve", "--endpoint",
                                 "tcp://127.0.0.1:0", "--run-dir", d, "--ready-file", ready, "--log-level", "warn"],
                                cwd=ROOT)
        try:
            t0 = time.time()
            while not os.path.exists(ready) and time.time() - t0 < 30:
                time.sleep(0.05)
            endpoint = open(ready).read().strip()
            for mode in ("raw", "sketch"):
                for e in range(5, max_exp + 1):
                    if mode == "raw" and e > 7:
                        continue  # 600 MB per raw step: skipped to keep memory bounded on a shared machine
                    T = 10**e
                    arrays = {k: torch.from_numpy(v) for k, v in synth(T).items()}
                    sk_frames = sketch_shim(arrays)[0]
                    c = EngineClient(endpoint, f"bench-{mode}-{e}", mode=mode, send_budget_s=30.0,
                                     queue_max_steps=2, connect_timeout_s=30.0)
                    c.connect()
                    lat = []
                    for step in range(steps):
                        t1 = time.perf_counter()
                        if mode == "raw":
                            c.send_step(step, {k: v.numpy() for k, v in arrays.items()})
                        else:
                            sk = S.compute_sketch({"policy_vs_ref": arrays["policy_vs_ref"]}, arrays["completion_mask"],
                                                  arrays["tool_mask"], arrays["offsets"])
                            t1 = time.perf_counter()  # engine side only: from enqueue to reply
                            S.send_sketch_step(c, step, sk)
                        while c.reply_for(step) is None and time.perf_counter() - t1 < 120:
                            time.sleep(0.0005)
                        lat.append(time.perf_counter() - t1)
                    c.close()
                    m = statistics.median(lat[1:])
                    rows.append((mode, T, m))
                    print(f"engine {mode:6s} T=1e{e}: reply latency {m*1e3:8.2f} ms", flush=True)
                    del sk_frames
        finally:
            proc.terminate()
            proc.wait(10)
    return rows


def bytes_table(max_exp: int, ranks: int = 64):
    """Bytes of a one-pair sketch step, per step, on heavy-tailed ℓ with 0.1% each of NaN, +inf, -inf: the
    "runs" hist coding (what the shim sends) against "varint" and "dense", same sketch, same process; then with
    per-rank summaries of `ranks` ranks (sketch_per_rank's default is on up to 64), and with 2 user slices too."""
    from tailguard.wire import encode_message

    print(f"| tokens/step | data | dense | varint | runs | runs + per-rank ({ranks} ranks) | + 2 user slices |\n"
          "|---|---|---|---|---|---|---|")
    for e in range(5, max_exp + 1):
        T = 10**e
        a = synth(T)
        rng = np.random.default_rng(e)
        half = np.repeat(np.arange(len(a["offsets"]) - 1) % 2, np.diff(a["offsets"])).astype(np.int32)  # by sequence
        for name, x in (("t(3)·0.2", a["policy_vs_ref"]), ("Cauchy·0.05", rng.standard_cauchy(T).astype(np.float32) * 0.05)):
            u = rng.random(T)
            x = x.copy()
            x[u < 1e-3], x[(u >= 1e-3) & (u < 2e-3)], x[(u >= 2e-3) & (u < 3e-3)] = np.nan, np.inf, -np.inf
            t = lambda v: torch.from_numpy(v)  # noqa: E731
            sk = S.compute_sketch({"policy_vs_ref": t(x)}, t(a["completion_mask"]), t(a["tool_mask"]), t(a["offsets"]))
            h = S.sketch_step_header(_Id, 0, sk)
            size = lambda coding: frames_bytes([encode_message(  # noqa: E731
                {**h, "hist": {**S.HIST_LAYOUT, "coding": coding}}, sk.buffers(coding=coding))])
            dense, varint, runs = size("dense"), size("varint"), size("runs")
            _per_rank(sk, ranks)
            with_ranks = frames_bytes([S.encode_sketch_step(_Ranks, 0, sk)])
            us = S.compute_sketch({"policy_vs_ref": t(x)}, t(a["completion_mask"]), t(a["tool_mask"]), t(a["offsets"]),
                                  slice_ids=t(half), slice_names=["chosen", "rejected"])
            _per_rank(us, ranks)
            user = frames_bytes([S.encode_sketch_step(_Ranks, 0, us)])
            print(f"| 1e{e} | {name} | {dense:,} | {varint:,} | {runs:,} | {with_ranks:,} | {user:,} |", flush=True)


class _Ranks:
    run_id, rank, world_size = "bench", 0, 64


def _per_rank(sk, ranks: int) -> None:
    """Per-rank summaries as `ranks` ranks send them (their values do not change the size)."""
    _Ranks.world_size = ranks
    sk.per_rank = S.summarize(sk).unsqueeze(0).repeat(ranks, 1, 1, 1)
    sk.rank_tokens = [sk.tokens // ranks] * ranks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-exp", type=int, default=7)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared; 0: torch's default)")
    ap.add_argument("--engine", action="store_true", help="also time a real engine process (raw vs sketch)")
    ap.add_argument("--bytes", action="store_true", help="only the bytes-per-pair table (hist codings, per-rank, user slices)")
    ap.add_argument("--ranks", type=int, default=64, help="--bytes: ranks of the per-rank summaries")
    ap.add_argument("--write-doc", action="store_true", help="rewrite the 'sketch' section of docs/benchmarks.md")
    a = ap.parse_args()
    info = RunInfo()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if a.bytes:
        return bytes_table(a.max_exp, a.ranks)
    rows = []
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        rows += shim_table(a.max_exp, a.reps, device)
    if a.engine:
        engine_table(min(a.max_exp, 8), a.reps)
    if a.write_doc:
        write_section("sketch", doc_section(info, rows, a.reps))


if __name__ == "__main__":
    sys.exit(main())
