"""Sketch mode vs raw mode: bytes sent per step and the shim's time per step, 10^5..10^8 tokens;
and, with a real engine process, the engine's reply latency per step (raw vs sketch).

    .venv/bin/python bench/sketch_bench.py [--max-exp 8] [--engine] [--reps 3] [--threads 1] [--before REV]
    .venv/bin/python bench/sketch_bench.py --bytes --max-exp 7   # bytes per pair per step (docs/sketch.md)

--before REV also times `compute_sketch` as it was at git revision REV (loaded from `git show`), on the same
data in the same process: the before/after column of docs/benchmarks.md.

Figures are medians of --reps runs in this process; ratios are against raw mode measured here.
Nothing is asserted (benchmarks live apart from tests).
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

from tailguard import sketch as S
from tailguard.wire import encode_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synth(T: int, seed: int = 0, seq_len: int = 1024):
    rng = np.random.default_rng(seed)
    n_seqs = max(1, T // seq_len)
    cuts = np.sort(rng.choice(np.arange(1, T), n_seqs - 1, replace=False)) if n_seqs > 1 else np.array([], np.int64)
    offsets = np.concatenate([[0], cuts, [T]]).astype(np.int32)
    x = (rng.standard_t(3, T).astype(np.float32) * np.float32(0.2))
    tm = np.ones(T, np.uint8)
    tm[rng.random(T) < 0.05] = 0  # about 30% post-tool after the first tool token per sequence
    cm = np.ones(T, np.uint8)
    return {"policy_vs_ref": x, "completion_mask": cm, "tool_mask": tm, "offsets": offsets}


def med(f, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def frames_bytes(messages) -> int:
    return sum(len(memoryview(f).cast("B")) for frames in messages for f in frames)


HEADER = {"type": "step", "run_id": "bench", "rank": 0, "world_size": 1, "step": 0, "implicit": [], "knobs": {},
          "logs": {}, "sent_at": 0.0}


def raw_shim(arrays, host):
    # The device→host copy into a reused host buffer (on this CPU machine: a memcpy), then encode.
    for k, a in arrays.items():
        host[k].copy_(a)
    return encode_step(HEADER, {k: v.numpy() for k, v in host.items()})


class _Id:
    run_id, rank, world_size = "bench", 0, 1


def sketch_shim(arrays, mod=S):
    sk = mod.compute_sketch({"policy_vs_ref": arrays["policy_vs_ref"]}, arrays["completion_mask"], arrays["tool_mask"],
                          arrays["offsets"])
    sk = mod.reduce_sketch(sk)
    return [mod.encode_sketch_step(_Id, 0, sk)]


def load_rev(rev: str):
    """tailguard/sketch.py at git revision `rev`, as a module (its tailguard imports resolve to this checkout)."""
    import importlib.util

    src = subprocess.check_output(["git", "show", f"{rev}:python-shim/src/tailguard/sketch.py"], cwd=ROOT, text=True)
    path = os.path.join(tempfile.mkdtemp(), f"sketch_{rev}.py")
    with open(path, "w") as f:
        f.write(src.replace("from .", "from tailguard."))
    spec = importlib.util.spec_from_file_location(f"sketch_{rev}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def shim_table(max_exp: int, reps: int, before=None):
    rows = []
    for e in range(5, max_exp + 1):
        T = 10**e
        arrays = {k: torch.from_numpy(v) for k, v in synth(T).items()}
        host = {k: torch.empty_like(v) for k, v in arrays.items()}
        r = reps if e < 8 else 1
        t_raw, raw_msgs = med(lambda: raw_shim(arrays, host), r)
        t_sk, sk_msgs = med(lambda: sketch_shim(arrays), r)
        old = ""
        if before is not None:  # alternate with the current version so both see the same machine load
            t_old, _ = med(lambda: sketch_shim(arrays, before), r)
            t_sk = min(t_sk, med(lambda: sketch_shim(arrays), r)[0])
            old = f" | before {t_old*1e3:9.1f} ms ({t_old/T*1e9:5.1f} ns/token, {t_old/t_sk:4.2f}x)"
        rows.append((T, frames_bytes(raw_msgs), frames_bytes(sk_msgs), t_raw, t_sk))
        print(f"T=1e{e}: raw {frames_bytes(raw_msgs)/1e6:9.2f} MB {t_raw*1e3:9.1f} ms | "
              f"sketch {frames_bytes(sk_msgs)/1e3:7.1f} KB {t_sk*1e3:9.1f} ms ({t_sk/T*1e9:5.1f} ns/token){old}", flush=True)
        del arrays, host, raw_msgs
    return rows


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


def bytes_table(max_exp: int):
    """Bytes of a one-pair sketch step, per step, on heavy-tailed ℓ with 0.1% each of NaN, +inf, -inf:
    the "varint" hist coding against the "dense" one (f64[16386] per hist), same sketch, same process."""
    from tailguard.wire import encode_message

    print("| tokens/step | data | dense (bytes/pair) | varint (bytes/pair) | ratio |\n|---|---|---|---|---|")
    for e in range(5, max_exp + 1):
        T = 10**e
        a = synth(T)
        rng = np.random.default_rng(e)
        for name, x in (("t(3)·0.2", a["policy_vs_ref"]), ("Cauchy·0.05", rng.standard_cauchy(T).astype(np.float32) * 0.05)):
            u = rng.random(T)
            x = x.copy()
            x[u < 1e-3], x[(u >= 1e-3) & (u < 2e-3)], x[(u >= 2e-3) & (u < 3e-3)] = np.nan, np.inf, -np.inf
            sk = S.compute_sketch({"policy_vs_ref": torch.from_numpy(x)}, torch.from_numpy(a["completion_mask"]),
                                  torch.from_numpy(a["tool_mask"]), torch.from_numpy(a["offsets"]))
            varint = frames_bytes([S.encode_sketch_step(_Id, 0, sk)])
            h = {**S.sketch_step_header(_Id, 0, sk), "hist": dict(S.HIST_LAYOUT)}
            dense = frames_bytes([encode_message(h, sk.buffers(coding="dense"))])
            print(f"| 1e{e} | {name} | {dense:,} | {varint:,} | {dense / varint:.1f}× |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-exp", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared; 0: torch's default)")
    ap.add_argument("--engine", action="store_true", help="also time a real engine process (raw vs sketch)")
    ap.add_argument("--bytes", action="store_true", help="only the bytes-per-pair table (dense vs varint hist coding)")
    ap.add_argument("--before", default=None, help="git revision whose compute_sketch to time too (before/after)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    if a.bytes:
        return bytes_table(a.max_exp)
    shim_table(a.max_exp, a.reps, load_rev(a.before) if a.before else None)
    if a.engine:
        engine_table(min(a.max_exp, 8), a.reps)


if __name__ == "__main__":
    sys.exit(main())
