"""A real GRPOTrainer run on CPU: a tiny agent with a calculator tool, watched (and optionally steered) by tailguard.

    .venv/bin/python examples/grpo_tool_agent.py --policy-mode observe [--steps 96] [--no-lag] [--stall-recurs]
    .venv/bin/python examples/grpo_tool_agent.py --policy-mode control

The environment and the documented perturbation are in `calculator_env.py` (and docs/demo.md): the agent
decides whether to call a calculator, the reward is the right answer, and from `stale_onset` of the run the
post-tool answer is written by an inference worker whose weights lag more and more (its weight sync stalled).
A tailguard rollback resyncs that worker. `beta = 0` (TRL's default: no reference model), so the pairs with
signal are `old_vs_rollout` (the worker's logprobs, returned by the rollout) and nothing is written into them.

It prints one line per step, then writes `<run-dir>/<run-id>/example_summary.json` (trainer logs per step,
the final on-policy evaluation, client stats). With no `--endpoint` the engine is embedded: `attach()` starts
`tailguard serve` itself and stops it when training ends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import warnings  # noqa: E402

from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" bars on every checkpoint

warnings.filterwarnings("ignore")  # TRL experimental-API and tiny-model notices drown the progress lines

from calculator_env import POST_LEN, PRE_LEN, CalculatorEnv, evaluate, make_prompt, make_reward  # noqa: E402
from common import build_tiny_lm  # noqa: E402


DEMO_POLICY = Path(__file__).resolve().parent / "demo_policy.yaml"


def policy_file(mode: str, path: Path) -> Path:
    """The demo's policy override: `mode` + examples/demo_policy.yaml (each deviation justified in docs/demo.md)."""
    path.write_text(f"mode: {mode}\n" + DEMO_POLICY.read_text())
    return path


def run(policy_mode="control", steps=96, run_dir="runs", run_id=None, seed=0, lr=1e-2, beta=0.0, batch=32,
        num_generations=4, endpoint=None, quiet=False, stale_onset=0.1, stale_every=1, lag=True, record_to=None,
        checkpoint_every=5, attach=True, stall_recurs=False, rollout_dtype="bfloat16", send_token_ids=True) -> dict:
    """One training run; returns the summary (also written to `<run_dir>/<run_id>/example_summary.json`)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    import tailguard

    run_id = run_id or f"grpo-tool-{policy_mode}"
    run_dir = Path(run_dir).resolve()
    # Each call is a new training run under a fixed id: clear the last one's store (the engine refuses a fixed
    # id it already holds steps for, E_RUN_EXISTS, rather than append to it).
    shutil.rmtree(run_dir / run_id, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"tg-{run_id}-"))
    model, tok = build_tiny_lm(work / "model", seed=seed)
    n_prompts = steps * batch // num_generations + batch
    dataset = Dataset.from_dict({"prompt": [make_prompt(i)[0] for i in range(n_prompts)]})
    args = GRPOConfig(
        output_dir=str(work / "out"), per_device_train_batch_size=batch, num_generations=num_generations,
        max_steps=steps, beta=beta, max_completion_length=PRE_LEN + POST_LEN + 24, learning_rate=lr,
        logging_steps=1, report_to="none", bf16=False, save_strategy="no", seed=seed, use_cpu=True,
        lr_scheduler_type="constant", shuffle_dataset=False, disable_tqdm=True,
    )
    import torch

    env = CalculatorEnv(model, tok, steps, stale_onset=stale_onset, stale_every=stale_every, seed=seed, lag=lag,
                        stall_recurs=stall_recurs, rollout_dtype=getattr(torch, rollout_dtype))
    trainer = GRPOTrainer(model=str(work / "model"), processing_class=tok, reward_funcs=make_reward(tok), args=args,
                          train_dataset=dataset, rollout_func=env)
    os.environ["TAILGUARD_RUN_DIR"] = str(run_dir)
    engine_args = f"--policy {policy_file(policy_mode, work / 'policy.yaml')}"
    if record_to:  # the engine writes every received step message to a capture (`tailguard replay` reads it)
        engine_args += f" --record {Path(record_to).resolve()}"
    os.environ["TAILGUARD_ENGINE_ARGS"] = engine_args
    options = dict(run_id=run_id, log_wait_s=0.5, checkpoint_every=checkpoint_every, send_token_ids=send_token_ids)
    cb = tailguard.attach(trainer, endpoint=endpoint, **options) if attach else None
    rows: list[dict] = []
    t0 = time.monotonic()

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            if cb is not None and cb.directives is not None:  # what the sampler reads from tailguard
                env.alpha_ceiling = cb.directives.alpha_ceiling
                env.note_rollbacks(cb.directives.rollbacks, state.global_step)  # resync the worker
            e = env.log[-1] if env.log else {}
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                   "lag": e.get("lag"), "tool_share": e.get("tool_episodes", 0) / max(1, e.get("episodes", 1))}
            rows.append(row)
            if not quiet:
                q = row.get("tailguard/old_vs_rollout/post_tool/abs_q99", float("nan"))
                print(f"  [{policy_mode:>7}] step {state.global_step:3d}/{steps}  reward {row['reward']:.3f}  "
                      f"entropy {row.get('entropy', float('nan')):.3f}  loss {row.get('loss', float('nan')):+.4f}  "
                      f"tool {row['tool_share']:.2f}  lag {row['lag']}  post_tool q99 {q:.3f}  "
                      f"({time.monotonic() - t0:.0f}s)", flush=True)

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # our one line per step replaces the raw log dicts
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Progress())
    trainer.train()
    summary = {
        "run_id": run_id, "policy_mode": policy_mode, "steps_done": int(trainer.state.global_step),
        "steps_planned": steps, "rows": rows, "env": env.log, **{f"eval_{k}": v for k, v in evaluate(trainer.model, tok).items()},
        "client": dict(cb.last_client.stats) if cb is not None and cb.last_client is not None else {},
        "alpha_ceiling": cb.directives.alpha_ceiling if cb is not None and cb.directives is not None else None,
        "seconds": time.monotonic() - t0,
    }
    out = run_dir / run_id / "example_summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, default=float))
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy-mode", choices=["observe", "control"], default="control")
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--no-lag", action="store_true", help="keep the post-tool worker in sync (the paired check)")
    ap.add_argument("--stall-recurs", action="store_true", help="the worker's stall resumes after a rollback's resync")
    ap.add_argument("--rollout-dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="precision of the rollout side's logprobs (bfloat16, as vLLM-style engines)")
    ap.add_argument("--record-to", help="also write every step message to this recording (tailguard replay)")
    ap.add_argument("--run-dir", default="runs")
    ap.add_argument("--run-id")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--endpoint", help="a running engine instead of the embedded one")
    args = ap.parse_args()
    s = run(args.policy_mode, args.steps, args.run_dir, args.run_id, args.seed, endpoint=args.endpoint,
            lag=not args.no_lag, stall_recurs=args.stall_recurs, rollout_dtype=args.rollout_dtype, record_to=args.record_to)
    print(json.dumps({k: s[k] for k in ("run_id", "steps_done", "eval_reward", "client", "seconds")}, default=float))
    return 0 if math.isfinite(s["eval_reward"]) else 1


if __name__ == "__main__":
    sys.exit(main())
