"""Training-side overhead of tailguard on a tiny CPU GRPO run, against the same run without it.

Same process, same session: runs alternate (base, tailguard, base, tailguard, ...) so drift in machine
load hits both. Prints wall time per run, the ratio, and the time the training thread spends blocked
in tailguard (capture staging + step flush/send), per step and per 10^6 tokens.

    .venv/bin/python bench/overhead.py [--steps 8] [--repeats 2] [--completion 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

import numpy as np  # noqa: E402
from tiny import ToolRollout, build_tiny_lm, length_reward, prompt_dataset, start_engine  # noqa: E402


def make_trainer(model_dir, tok, out, steps, completion):
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=out, per_device_train_batch_size=8, num_generations=4, gradient_accumulation_steps=2,
                      max_steps=steps, num_iterations=2, beta=0.1, max_completion_length=completion,
                      logging_steps=1, report_to="none", learning_rate=1e-2, bf16=False, save_strategy="no",
                      seed=0, disable_tqdm=True)
    rollout = ToolRollout(tok, seed=0, max_completion_length=completion)
    return GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward, args=args,
                       train_dataset=prompt_dataset(256), rollout_func=rollout)


def timed(obj, name, bucket):
    fn = getattr(obj, name)

    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            bucket.append(time.perf_counter() - t)

    setattr(obj, name, wrapper)


def run(model_dir, tok, tmp, steps, completion, endpoint=None):
    trainer = make_trainer(model_dir, tok, tempfile.mkdtemp(dir=tmp), steps, completion)
    blocked, flushes, tokens = [], [], []
    if endpoint:
        import tailguard

        cb = tailguard.attach(trainer, endpoint=endpoint, run_id=f"bench-{time.time_ns()}", retain_captured=True)
        timed(cb.capture, "stage_micro_batch", blocked)
        timed(cb, "_send_step", flushes)
    t = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t
    if endpoint:
        tokens = [len(a["tool_mask"]) for _, a in cb.capture.captured]
        stats = cb.last_client.stats
        return wall, sum(blocked) + sum(flushes), sum(tokens), stats, flushes
    return wall, 0.0, 0, None, []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--completion", type=int, default=24)
    o = ap.parse_args()
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("tailguard").setLevel(logging.ERROR)
    tmp = tempfile.mkdtemp(prefix="tg-bench-")
    _, tok = build_tiny_lm(Path(tmp) / "model")
    engine = start_engine(Path(tmp) / "runs")
    try:
        run(str(Path(tmp) / "model"), tok, tmp, 2, o.completion)  # warm-up (imports, allocator)
        base, tg, blocked, tokens, flushes = [], [], [], [], []
        for _ in range(o.repeats):
            base.append(run(str(Path(tmp) / "model"), tok, tmp, o.steps, o.completion)[0])
            w, b, n, stats, f = run(str(Path(tmp) / "model"), tok, tmp, o.steps, o.completion, engine.endpoint)
            tg.append(w), blocked.append(b), tokens.append(n), flushes.extend(f)
    finally:
        engine.stop()
    steps = o.steps * o.repeats
    mb, mt = float(np.median(base)), float(np.median(tg))
    per_step = sum(blocked) / steps
    tok_per_step = sum(tokens) / steps
    print(f"tiny GRPO, {o.steps} steps x {o.repeats} repeats, ~{tok_per_step:.0f} tokens/step/rank, client stats {stats}")
    print(f"wall without tailguard: median {mb:.3f}s  runs {[round(x, 3) for x in base]}")
    print(f"wall with tailguard:    median {mt:.3f}s  runs {[round(x, 3) for x in tg]}")
    print(f"ratio with/without:     {mt / mb:.3f}")
    print(f"blocking in tailguard:  mean {per_step * 1e3:.3f} ms/step = {per_step / (tok_per_step / 1e6):.3f} s per step per 1e6 tokens")
    print(f"step flush (take+send): median {np.median(flushes) * 1e3:.3f} ms, max {np.max(flushes) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
