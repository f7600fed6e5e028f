"""Training-side overhead of tailguard, in two parts, both in one process and one session.

1. `grpo`: a tiny CPU GRPO run with and without tailguard. Runs alternate (base, tailguard, base, ...)
   so drift in machine load hits both; medians and spread of the wall times, and their ratio. The
   rollout_func gives long completions with tool spans, so a step carries a few thousand tokens.
2. `boundary`: what the training thread blocks on, as a function of tokens per step, on the real code
   path: `GRPOCapture._stage` per micro-batch (pair differences, host staging), then at the step
   boundary `take_step` (flatten) and `EngineClient.send_step` (encode, chunk, enqueue) into a real
   engine process. Inputs are synthetic GRPO-shaped tensors (per-token logps [B, L], completion_mask,
   tool_mask, advantages, sequence index). The engine drains each step before the next is timed
   (untimed), so the figure is the shim's cost, not back-pressure from a slower engine. A least-squares
   fit over all samples gives the fixed cost per step and the slope per 10^6 tokens.

    .venv/bin/python bench/overhead.py                      # both parts, a few minutes on 2 cores
    .venv/bin/python bench/overhead.py --part boundary --sizes 1e4,1e5,1e6,1e7
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tiny import build_tiny_lm, length_reward, prompt_dataset, start_engine  # noqa: E402


# ---------------------------------------------------------------- part 1: tiny GRPO with / without


class LongToolRollout:
    """A GRPO `rollout_func` with long completions: length uniform in [L/2, L], and in 60 % of them a
    tool-output span (env_mask 0) of L/8 tokens in the middle, so pre-tool and post-tool slices exist."""

    def __init__(self, tokenizer, completion: int, seed: int = 0):
        self.tok, self.L, self.rng = tokenizer, completion, random.Random(seed)

    def make(self) -> tuple[list[int], list[int]]:
        r, L = self.rng, self.L
        n = r.randint(L // 2, L - 1)
        tool = L // 8 if r.random() < 0.6 else 0
        pre = (n - tool) // 2
        mask = [1] * pre + [0] * tool + [1] * (n - tool - pre) + [1]
        return [r.randint(65, 122) for _ in range(n)] + [self.tok.eos_token_id], mask

    def __call__(self, prompts, trainer):
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "env_mask": []}
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            ids, mask = self.make()
            out["prompt_ids"].append(self.tok(text)["input_ids"])
            out["completion_ids"].append(ids)
            out["env_mask"].append(mask)
        return out


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
        take = cb.capture.take_step

        def take_step(step):
            p = take(step)
            tokens.append(0 if p is None else p.tokens)
            return p

        cb.capture.take_step = take_step
        timed(cb, "_send_step", blocked)  # take_step (flatten) + send_step (encode, enqueue)
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


# ---------------------------------------------------------------- part 2: step-boundary cost vs tokens


def synthetic_micro_batches(tokens: int, n_mb: int, L: int, seed: int):
    """GRPO-shaped inputs for one step of ~`tokens` completion tokens over `n_mb` micro-batches."""
    g = torch.Generator().manual_seed(seed)
    n_seqs = max(n_mb, round(tokens / (0.75 * L)))  # lengths uniform in [L/2, L]: mean fill 0.75
    lens = torch.randint(L // 2, L + 1, (n_seqs,), generator=g)
    lens = (lens * tokens / lens.sum()).clamp(1, L).long()  # hit the target count closely
    out, seq0 = [], 0
    for lens_mb in torch.tensor_split(lens, n_mb):
        B = lens_mb.numel()
        pos = torch.arange(L).expand(B, L)
        cm = (pos < lens_mb[:, None]).long()  # TRL's completion_mask: int64, right-padded
        tool = torch.ones(B, L, dtype=torch.long)
        start = lens_mb // 2
        span = (pos >= start[:, None]) & (pos < (start + L // 8)[:, None]) & (torch.rand(B, 1, generator=g) < 0.6)
        tool[span] = 0
        cur = -torch.rand(B, L, generator=g) * 5
        inputs = {
            "completion_mask": cm,
            "tool_mask": tool * cm,
            "old_per_token_logps": cur + 0.01 * torch.randn(B, L, generator=g),
            "ref_per_token_logps": cur + 0.1 * torch.randn(B, L, generator=g),
            "advantages": torch.randn(B, generator=g),
            "_tailguard_seq": torch.arange(seq0, seq0 + B),
        }
        seq0 += B
        out.append((inputs, cur))
    return out, int(lens.sum())


def part_boundary(o, engine):
    from tailguard.capture.grpo import GRPOCapture
    from tailguard.client import EngineClient
    from tailguard.options import parse_options

    sizes = [int(float(s)) for s in o.sizes.split(",")]
    data = {n: synthetic_micro_batches(n, o.micro_batches, o.length, seed=i) for i, n in enumerate(sizes)}
    capture = GRPOCapture(SimpleNamespace(num_generations=8), parse_options())
    client = EngineClient(engine.endpoint, f"bench-boundary-{time.time_ns()}", trainer="grpo",
                          queue_max_steps=8, reply_timeout_s=120)
    client.connect()
    samples: dict[int, list[tuple[float, float, float]]] = {n: [] for n in sizes}
    step = 0
    try:
        for rep in range(o.boundary_reps + 1):  # rep 0 warms up (allocator, first chunking)
            for n in sizes:
                mbs, _ = data[n]
                t0 = time.perf_counter()
                for inputs, cur in mbs:
                    capture._stage(inputs, cur, loss=torch.tensor(0.5))
                t1 = time.perf_counter()
                payload = capture.take_step(step)
                t2 = time.perf_counter()
                ok = client.send_step(step, payload.arrays, logs={"loss": payload.loss}, implicit=payload.implicit)
                t3 = time.perf_counter()
                del payload
                if not ok or not client.flush(timeout=300):  # drain (untimed): the next sample starts idle
                    raise RuntimeError(f"step {step} ({n} tokens) not answered: {client.stats}")
                if rep:
                    samples[n].append((t1 - t0, t2 - t1, t3 - t2))
                step += 1
    finally:
        stats = client.stats
        client.close()
    print(f"\n== step-boundary blocking, GRPO-shaped synthetic steps: {o.micro_batches} micro-batches, "
          f"completion length <= {o.length} (mean fill 0.75), pairs policy_vs_old + policy_vs_ref, "
          f"{o.boundary_reps} reps per size; client stats {stats}")
    print(f"{'tokens/step':>12} {'seqs':>6} {'stage ms':>9} {'flatten ms':>10} {'send ms':>8} {'total ms':>9} "
          f"{'(min..max)':>16} {'ns/token':>9}")
    xs, ys = [], []
    for n in sizes:
        s = np.array(samples[n]) * 1e3
        tot = s.sum(axis=1)
        real = data[n][1]
        seqs = sum(inp["completion_mask"].shape[0] for inp, _ in data[n][0])
        med = np.median(s, axis=0)
        print(f"{real:>12} {seqs:>6} {med[0]:>9.2f} {med[1]:>10.2f} {med[2]:>8.2f} {np.median(tot):>9.2f} "
              f"{f'({tot.min():.2f}..{tot.max():.2f})':>16} {np.median(tot) * 1e6 / real:>9.1f}")
        xs += [real] * len(tot)
        ys += list(tot)
    slope, icpt = np.polyfit(np.array(xs, float), np.array(ys), 1)  # ms per token, ms
    print(f"fit total_ms = {icpt:.2f} ms + {slope * 1e6:.1f} ms per 1e6 tokens "
          f"(= {slope * 1e9:.0f} µs per 1e6 tokens, {slope * 1e6:.1f} ns/token)")


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
    o = ap.parse_args()
    import logging

    import transformers
    import trl

    torch.set_num_threads(o.threads)
    transformers.logging.set_verbosity_error()
    logging.getLogger("tailguard").setLevel(logging.ERROR)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), trl {trl.__version__}, "
          f"transformers {transformers.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    tmp = tempfile.mkdtemp(prefix="tg-bench-")
    engine = start_engine(Path(tmp) / "runs")
    try:
        if o.part in ("grpo", "both"):
            part_grpo(o, tmp, engine)
        if o.part in ("boundary", "both"):
            part_boundary(o, engine)
    finally:
        engine.stop()
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
