"""Training-side overhead of tailguard, in two parts, both in one process and one session.

1. `grpo`: a tiny CPU GRPO run with and without tailguard. Runs alternate (base, tailguard, base, ...)
   so drift in machine load hits both; medians and spread of the wall times, and their ratio. The
   rollout_func gives long completions with tool spans, so a step carries a few thousand tokens.
2. `boundary`: what the training thread blocks on, as a function of tokens per step, on the real code
   path: `GRPOCapture._stage` per micro-batch, then at the step boundary the hand-over to the staging
   thread ("threaded", raw mode's default), or `take_step` (flatten) and `EngineClient.send_step` (encode,
   chunk, enqueue) on the training thread, into a real engine process. Inputs are synthetic GRPO-shaped tensors (per-token logps [B, L], completion_mask,
   tool_mask, advantages, sequence index). The engine drains each step before the next is timed
   (untimed), so the figure is the shim's cost, not back-pressure from a slower engine. A least-squares
   fit over all samples gives the fixed cost per step and the slope per 10^6 tokens. The same steps go,
   interleaved, through the staging as it was before issue 17 (legacy_staging.py): the same-run baseline.
   With CUDA present the boundary part also runs with the tensors on the GPU.

    .venv/bin/python bench/overhead.py                      # both parts, a few minutes on 2 cores
    .venv/bin/python bench/overhead.py --part boundary --sizes 1e4,1e5,1e6,1e7
    .venv/bin/python bench/overhead.py --write-doc          # and rewrite docs/benchmarks.md's "overhead" section
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "python-shim" / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from docsection import RunInfo, gpu_note, verdict, write_section  # noqa: E402
from overhead_data import LongToolRollout, synthetic_micro_batches  # noqa: E402
from tiny import build_tiny_lm, length_reward, prompt_dataset, start_engine  # noqa: E402

TARGET_NS = 5.0  # issue 17: the training thread blocked ≤ 5 ns per completion token


# ---------------------------------------------------------------- part 1: tiny GRPO with / without


def make_trainer(model_dir, tok, out, o, steps):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=o.batch, num_generations=8,
                      gradient_accumulation_steps=2, max_steps=steps, num_iterations=2, beta=0.1,
                      max_completion_length=o.completion, logging_steps=1, report_to="none",
                      learning_rate=1e-2, bf16=False, save_strategy="no", seed=0, disable_tqdm=True)
    return GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward, args=args,
                       train_dataset=prompt_dataset(1024), rollout_func=LongToolRollout(tok, o.completion))


def timed(obj, name, bucket):
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            bucket.append(time.perf_counter() - t)

    setattr(obj, name, wrapper)


def grpo_run(model_dir, tok, tmp, o, steps, endpoint=None):
    """One training run; returns (wall s, blocked s, tokens sent, client stats)."""
    trainer = make_trainer(model_dir, tok, tempfile.mkdtemp(dir=tmp), o, steps)
    blocked, tokens = [], []
    cb = None
    if endpoint:
        import tailguard

        cb = tailguard.attach(trainer, endpoint=endpoint, run_id=f"bench-{time.time_ns()}")
        timed(cb.capture, "_stage", blocked)  # pair differences + host staging, per micro-batch
        take = cb.capture.take_pending

        def take_pending(step):  # counts the tokens when the staging thread builds the step
            build = take(step)
            return None if build is None else (lambda: (p := build(), tokens.append(p.tokens))[0])

        cb.capture.take_pending = take_pending
        timed(cb, "_send_step", blocked)  # the hand-over to the staging thread (or flatten + send, fail_closed)
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its final metrics dict
        trainer.train()
    wall = time.perf_counter() - t
    if cb is None:
        return wall, 0.0, 0, None
    return wall, sum(blocked), sum(tokens), cb.last_client.stats


def part_grpo(o, tmp, engine):
    _, tok = build_tiny_lm(Path(tmp) / "model")
    model_dir = str(Path(tmp) / "model")
    grpo_run(model_dir, tok, tmp, o, 2)  # warm-up (imports, allocator)
    grpo_run(model_dir, tok, tmp, o, 2, engine.endpoint)
    base, tg, blocked, tokens, stats = [], [], [], [], None
    for _ in range(o.repeats):
        base.append(grpo_run(model_dir, tok, tmp, o, o.steps)[0])
        w, b, n, stats = grpo_run(model_dir, tok, tmp, o, o.steps, engine.endpoint)
        tg.append(w), blocked.append(b), tokens.append(n)
    steps = o.steps * o.repeats
    mb, mt = float(np.median(base)), float(np.median(tg))
    ratios = [t / b for b, t in zip(base, tg)]  # each tailguard run against the base run just before it
    per_step = sum(blocked) / steps
    tps = sum(tokens) / steps
    print(f"\n== tiny GRPO: {o.steps} steps x {o.repeats} repeats, {2 * o.batch} sequences/step, "
          f"completions <= {o.completion}, {tps:.0f} completion tokens/step; client stats {stats}")
    print(f"wall without tailguard: median {mb:.3f}s  runs {[round(x, 3) for x in base]}")
    print(f"wall with tailguard:    median {mt:.3f}s  runs {[round(x, 3) for x in tg]}")
    print(f"ratio of medians:       {mt / mb:.3f}   paired ratios {[round(r, 3) for r in ratios]} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    print(f"blocking in tailguard:  {per_step * 1e3:.2f} ms/step = {100 * per_step * steps / sum(tg):.2f} % of the "
          f"tailguard runs' wall (a fixed per-step cost dominates at this size: see the boundary part)")
    return dict(base=base, tg=tg, ratios=ratios, per_step=per_step, tps=tps, stats=stats)


# ---------------------------------------------------------------- part 2: step-boundary cost vs tokens


def boundary_samples(o, engine, device: str):
    """Per size, (stage, flatten, send, thread CPU) seconds per step for the current staging and the legacy one,
    interleaved step by step on the same inputs."""
    from legacy_staging import LegacyGRPOCapture
    from tailguard.capture.background import StagingThread
    from tailguard.capture.grpo import GRPOCapture
    from tailguard.client import EngineClient
    from tailguard.options import parse_options

    sizes = [int(float(s)) for s in o.sizes.split(",")]
    data = {}
    for i, n in enumerate(sizes):
        mbs, real = synthetic_micro_batches(n, o.micro_batches, o.length, seed=i)
        data[n] = ([({k: v.to(device) for k, v in inp.items()}, cur.to(device)) for inp, cur in mbs], real)
    trainer = SimpleNamespace(num_generations=8)
    # "warm": each micro-batch's tensors are read (untimed) just before staging, as TRL's loss reads them.
    caps = {"threaded": GRPOCapture(trainer, parse_options()), "now": GRPOCapture(trainer, parse_options()), "now, warm": GRPOCapture(trainer, parse_options()),
            "before": LegacyGRPOCapture(trainer, parse_options())}
    client = EngineClient(engine.endpoint, f"bench-boundary-{device}-{time.time_ns()}", trainer="grpo",
                          queue_max_steps=8, reply_timeout_s=120)
    client.connect()
    caps["threaded"].defer_host = True  # as the callback sets it (raw, fail_open): staged on its own thread
    staging = StagingThread(8, client.drop_step, client.held_steps)
    samples = {(k, n): [] for k in caps for n in sizes}
    step = 0
    try:
        for rep in range(o.boundary_reps + 1):  # rep 0 warms up (allocator, buffer growth, first chunking)
            for n in sizes:
                for kind, capture in caps.items():
                    mbs, _ = data[n]
                    if device == "cuda":
                        torch.cuda.synchronize()
                    stage, cpu = 0.0, 0.0
                    for inputs, cur in mbs:
                        if kind.endswith("warm"):
                            sum(float(v.sum()) for v in inputs.values()) + float(cur.sum())
                        c0, t0 = time.thread_time(), time.perf_counter()
                        capture._stage(inputs, cur, loss=torch.tensor(0.5))
                        stage, cpu = stage + time.perf_counter() - t0, cpu + time.thread_time() - c0
                    bg0, ok = staging.cpu_s, True
                    c1, t1 = time.thread_time(), time.perf_counter()
                    if kind == "threaded":  # the boundary hands the step over; staging + send on the thread
                        build = capture.take_pending(step)
                        t2 = time.perf_counter()
                        staging.submit(step, lambda s=step, b=build: (p := b(), client.send_step(
                            s, p.arrays, logs={"loss": 0.5}, implicit=p.implicit)))
                    else:
                        payload = capture.take_step(step)
                        t2 = time.perf_counter()
                        ok = client.send_step(step, payload.arrays, logs={"loss": 0.5}, implicit=payload.implicit)
                        del payload
                    t3, c3 = time.perf_counter(), time.thread_time()
                    # Drain (untimed): the next sample starts idle.
                    if not ok or not staging.wait_idle(300) or not client.flush(timeout=300) or staging.failed:
                        raise RuntimeError(f"step {step} ({n} tokens) not answered: {client.stats}")
                    if rep:  # (stage, flatten, send, training thread CPU, staging thread CPU) s
                        samples[kind, n].append((stage, t2 - t1, t3 - t2, cpu + c3 - c1, staging.cpu_s - bg0))
                    step += 1
    finally:
        stats = client.stats
        staging.close(5.0)
        client.close()
    return sizes, data, samples, stats


def part_boundary(o, engine, device="cpu"):
    sizes, data, samples, stats = boundary_samples(o, engine, device)
    print(f"\n== step-boundary blocking on {device}, GRPO-shaped synthetic steps: {o.micro_batches} micro-batches, "
          f"completion length <= {o.length} (mean fill 0.75), pairs policy_vs_old + policy_vs_ref, "
          f"{o.boundary_reps} reps per size; now and before interleaved; client stats {stats}")
    rows, fits = [], {}
    for kind in ("threaded", "now", "now, warm", "before"):
        xs, ys, cs, bs = [], [], [], []
        for n in sizes:
            real = data[n][1]
            s = np.array(samples[kind, n]) * 1e3
            tot = s[:, :3].sum(axis=1)
            xs += [real] * len(tot)
            ys += list(tot)
            cs += list(s[:, 3])
            bs += list(s[:, 3] + s[:, 4])
            med = np.median(s, axis=0)
            seqs = sum(inp["completion_mask"].shape[0] for inp, _ in data[n][0])
            rows.append((kind, real, med, float(np.median(tot)), float(med[3]), seqs, float(med[3] + med[4])))
            print(f"{kind:>9} {real:>10} tokens: stage {med[0]:7.2f}  flatten {med[1]:7.2f}  send {med[2]:6.2f}  "
                  f"total {np.median(tot):8.2f} ms ({np.median(tot) * 1e6 / real:6.1f} ns/token; thread CPU "
                  f"{med[3] * 1e6 / real:6.1f}; with the staging thread's {(med[3] + med[4]) * 1e6 / real:6.1f})")
        x = np.array(xs, float)
        slope, icpt = np.polyfit(x, np.array(ys), 1)  # ms per token, ms
        cslope, bslope = np.polyfit(x, np.array(cs), 1)[0], np.polyfit(x, np.array(bs), 1)[0]
        fits[kind] = (slope * 1e6, icpt, cslope * 1e6, bslope * 1e6)
        print(f"{kind:>9} fit total_ms = {icpt:.2f} ms + {slope * 1e6:.2f} ms per 1e6 tokens ({slope * 1e6:.2f} ns/token; "
              f"thread CPU {cslope * 1e6:.2f} ns/token; all threads' CPU {bslope * 1e6:.2f})")
    return dict(device=device, rows=rows, fits=fits, stats=stats)


def doc_section(info, o, grpo, bounds) -> str:
    out = ["## Training overhead (generated by `bench/overhead.py --write-doc`)", "",
           "What the training thread is blocked by tailguard per optimizer step in raw mode. **threaded** (the "
           "default in raw mode with fail_open, issue 17 item 6): per micro-batch `GRPOCapture._stage` keeps references "
           "to the host tensors (no copy); at the step boundary `take_pending` and the hand-over to the staging thread "
           "(capture/background.py), which computes the pair differences, selects into reused wire buffers "
           "(capture/staging.py), encodes and enqueues. **now** is the same fused staging on the "
           "training thread (fail_closed keeps it there), **now, warm** the same with each micro-batch's tensors read "
           "just before staging (untimed), as TRL's loss has just read them. **before** is the staging before issue "
           "17 (dtype-converted copies, boolean selection, concatenate; bench/legacy_staging.py), interleaved on the "
           f"same inputs. Synthetic GRPO-shaped steps ({o.micro_batches} micro-batches, completion length ≤ {o.length}, "
           "fill 0.75, int64 masks, policy_vs_old + policy_vs_ref); the engine answers each step (and the staging "
           "thread finishes it) before the next is timed. Medians. Wall time is the blocking; on this shared machine it "
           "includes waiting for a core. CPU in brackets: the training thread's, then with the staging thread's.", ""]
    for b in bounds:
        by = {k: {r[1]: r for r in b["rows"] if r[0] == k} for k in ("threaded", "now", "now, warm", "before")}
        out += [f"On {b['device']} (wall ms per step; ns per token, CPU in brackets):", "",
                "| tokens/step | sequences | threaded: stage / take / hand over | threaded | threaded ns/token "
                "| now | now ns/token | now, warm ns/token | before | before ns/token |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n, r in by["threaded"].items():
            w, q, f = by["now, warm"][n], by["before"][n], by["now"][n]
            ns = lambda x: f"{x[3] * 1e6 / n:.1f} ({x[4] * 1e6 / n:.1f})"  # noqa: E731
            out.append(f"| {n:,} | {r[5]:,} | {r[2][0]:.2f} / {r[2][1]:.2f} / {r[2][2]:.2f} | {r[3]:.2f} | "
                       f"{r[3] * 1e6 / n:.1f} ({r[4] * 1e6 / n:.1f}; {r[6] * 1e6 / n:.1f}) | {f[3]:.2f} | {ns(f)} | "
                       f"{ns(w)} | {q[3]:.2f} | {ns(q)} |")
        f = b["fits"]
        out += ["", "Least-squares fit over all samples, ms per step + ns per token (training thread CPU; all threads' "
                "CPU): " + "; ".join(f"{k} {f[k][1]:.2f} ms + **{f[k][0]:.2f}** ns ({f[k][2]:.2f}; {f[k][3]:.2f})"
                                     for k in f)
                + f". Target (issue 17): the training thread blocked ≤ {TARGET_NS:g} ns per token, read off the fitted "
                f"slope of the wall time: threaded {verdict(f['threaded'][0], TARGET_NS)} (a fixed "
                f"{f['threaded'][1]:.2f} ms per step: Python per micro-batch; the work moved to the staging thread, "
                f"{f['threaded'][3]:.1f} ns per token of its CPU, and competes for cores on a CPU-only trainer); on the "
                f"training thread, cold inputs {verdict(f['now'][0], TARGET_NS)}, warm {verdict(f['now, warm'][0], TARGET_NS)}. "
                f"Client: {b['stats']['sent']} sent, {b['stats']['dropped']} dropped.", ""]
    if grpo:
        mb, mt = float(np.median(grpo["base"])), float(np.median(grpo["tg"]))
        out += [f"Tiny CPU GRPO ({o.steps} steps × {o.repeats} runs each way, alternating, {grpo['tps']:.0f} completion "
                f"tokens per step, torch on 1 thread, real engine on ipc): wall without tailguard {mb:.2f} s, with "
                f"{mt:.2f} s (ratio of medians **{mt / mb:.3f}**, paired ratios "
                f"{', '.join(f'{r:.2f}' for r in grpo['ratios'])}); blocked in tailguard {grpo['per_step'] * 1e3:.2f} ms "
                f"per step ({grpo['per_step'] * 1e9 / max(grpo['tps'], 1):.0f} ns per token: at this size the fixed "
                "per-step cost dominates).", ""]
    note = gpu_note()
    out += ([note, ""] if note else []) + [info.footer()]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["grpo", "boundary", "both"], default="both")
    ap.add_argument("--steps", type=int, default=10, help="GRPO: optimizer steps per run")
    ap.add_argument("--repeats", type=int, default=4, help="GRPO: runs with and without tailguard each")
    ap.add_argument("--batch", type=int, default=16, help="GRPO: per-device batch (2 micro-batches per step)")
    ap.add_argument("--completion", type=int, default=128, help="GRPO: max completion length")
    ap.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="boundary: tokens per step")
    ap.add_argument("--micro-batches", type=int, default=4, help="boundary: micro-batches per step")
    ap.add_argument("--length", type=int, default=1024, help="boundary: max completion length")
    ap.add_argument("--boundary-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--write-doc", action="store_true", help="rewrite the 'overhead' section of docs/benchmarks.md")
    o = ap.parse_args()
    import logging

    import transformers
    import trl

    info = RunInfo()
    torch.set_num_threads(o.threads)
    transformers.logging.set_verbosity_error()
    logging.getLogger("tailguard").setLevel(logging.ERROR)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), trl {trl.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    tmp = tempfile.mkdtemp(prefix="tg-bench-")
    engine = start_engine(Path(tmp) / "runs")
    grpo, bounds = None, []
    try:
        if o.part in ("grpo", "both"):
            grpo = part_grpo(o, tmp, engine)
        if o.part in ("boundary", "both"):
            for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
                bounds.append(part_boundary(o, engine, device))
    finally:
        engine.stop()
    print(f"load average at the end {os.getloadavg()}")
    if o.write_doc:
        write_section("overhead", doc_section(info, o, grpo, bounds))


if __name__ == "__main__":
    main()
