"""A real GRPOTrainer run on CPU: a tiny agent with a calculator tool, watched (and optionally steered) by tailguard.

    .venv/bin/python examples/grpo_tool_agent.py --policy-mode observe --steps 60
    .venv/bin/python examples/grpo_tool_agent.py --policy-mode control --steps 60

The environment (a GRPO `rollout_func`):
- Each prompt is an addition, "q07: 12+34=". The agent writes a few tokens (pre_tool), then in a share of
  episodes the calculator's answer enters the completion as `<tool_response>046</tool_response>` tool-output
  tokens (env_mask 0), and the agent writes its answer after it (post_tool).
- **Tool use grows over the run**: the share of episodes that call the calculator is `tool_start` during the
  healthy phase (the first `stale_onset` of the run), then rises linearly to `tool_end` (harder questions
  arrive); the number of tool groups per step follows that share exactly (error diffusion), not coin flips. The engine's `curriculum` directive's
  `alpha_ceiling`, when it arrives, caps that share: the sampler reads it, as the contract says a user's should.
- Reward: the share of the agent's own tokens that are digits (it should answer with numbers), plus 1 when
  the post-tool answer contains the calculator's result.

**The honest perturbation** (docs/demo.md): the post-tool continuation is sampled by a *stale copy of the
policy*, as in asynchronous agentic RL where a turn that waits on a slow tool is finished by an inference
worker whose weights lag the trainer. The lag is 0 for the first `--stale-onset` of the run, then grows by
one optimizer step every `--stale-every` steps. The rollout returns the sampler's own per-token logprobs,
so `old_vs_rollout` is real: exactly log π_current − log π_stale on post-tool tokens and 0 elsewhere. Nothing
is written into the numbers; the growing tail is what a lagging sampler does to the data the trainer sees.
`beta > 0` adds `policy_vs_ref`. TRL 1.16 feeds the sampler's logprobs into the loss only on its vLLM path
(IS correction) and in `off_policy_mask_threshold`; `is_mode` turns TRL's own IS correction on for this
worker (`use_worker_logprobs`), an experiment documented in docs/demo.md, off by default.

It prints one line per step, then writes `<run-dir>/<run-id>/example_summary.json` (trainer logs per step,
the final on-policy evaluation, client stats). With no `--endpoint` the engine is embedded: `attach()` starts
`tailguard serve` itself and stops it when training ends.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import warnings  # noqa: E402

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" bars on every checkpoint

warnings.filterwarnings("ignore")  # TRL experimental-API and tiny-model notices drown the progress lines

from common import build_tiny_lm  # noqa: E402

PRE_LEN = 6  # agent tokens before the tool call
POST_LEN = 8  # agent tokens after the tool result (or after PRE_LEN without a tool)
DIGITS = set("0123456789")


def make_prompt(i: int) -> tuple[str, int]:
    r = random.Random(i)
    a, b = r.randint(10, 99), r.randint(10, 99)
    return f"q{i % 100:02d}: {a}+{b}=", a + b


class CalculatorEnv:
    """The rollout_func: samples the agent with the current policy, the post-tool turn with a lagging copy."""

    def __init__(self, model, tok, max_steps, *, tool_start=0.2, tool_end=0.9, stale_onset=0.4, stale_every=2,
                 seed=0, ramp_onset=None):
        self.tok, self.max_steps = tok, max_steps
        self.tool_start, self.tool_end = tool_start, tool_end
        self.stale_onset, self.stale_every = stale_onset, stale_every
        self.ramp_onset = stale_onset if ramp_onset is None else ramp_onset
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.sampler = copy.deepcopy(model).eval()  # the lagging inference worker
        self.history: deque = deque(maxlen=64)  # (step, weights) as the worker receives them
        self._carry = 0.0  # fractional tool groups carried to the next step
        self.alpha_ceiling: float | None = None  # from the engine's curriculum directive (tailguard callback)
        self.log: list[dict] = []
        self.digits = [tok.convert_tokens_to_ids(c) for c in "0123456789"]

    # ---- schedules ----------------------------------------------------------------------------
    def tool_share(self, step: int) -> float:
        # Flat during the healthy phase, then harder questions arrive and tool use ramps up with the lag.
        onset = int(self.ramp_onset * self.max_steps)
        ramp = min(1.0, max(0, step - onset) / max(1, self.max_steps - 1 - onset))
        share = self.tool_start + (self.tool_end - self.tool_start) * ramp
        if self.alpha_ceiling is not None:
            share = min(share, self.alpha_ceiling * 1.5)  # α is a token share; ~1.5 episodes per post-tool token share
        return share

    def lag(self, step: int) -> int:
        onset = int(self.stale_onset * self.max_steps)
        return 0 if step < onset else 1 + (step - onset) // self.stale_every

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def _sample(self, model, context: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n tokens by ancestral sampling at temperature 1; returns (ids, logprobs), shape (B, n)."""
        ids, lps = [], []
        x = context
        for _ in range(n):
            logits = model(input_ids=x).logits[:, -1].float()
            logp = torch.log_softmax(logits, -1)
            nxt = torch.multinomial(logp.exp(), 1, generator=self.gen)
            ids.append(nxt)
            lps.append(logp.gather(1, nxt))
            x = torch.cat([x, nxt], 1)
        return torch.cat(ids, 1), torch.cat(lps, 1)

    def __call__(self, prompts, trainer):
        step = int(trainer.state.global_step)
        model = trainer.model
        was_training = model.training
        model.eval()
        if self.history and step <= self.history[-1][0]:
            self.history.clear()  # a rollback: the workers restart from the restored weights
        self.history.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        lag = self.lag(step)
        stale_step, weights = next(((s, w) for s, w in self.history if s >= step - lag), self.history[-1])
        self.sampler.load_state_dict(weights)
        try:
            return self._rollout(prompts, model, step, lag, stale_step)
        finally:
            model.train(was_training)

    def _rollout(self, prompts, model, step, lag, stale_step):
        tok = self.tok
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, prompt_ids))
        ctx = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompt_ids])
        pre, pre_lp = self._sample(model, ctx, PRE_LEN)
        share = self.tool_share(step)
        # One tool decision per group (same prompt), so group rewards compare like with like. The number of
        # tool groups follows the schedule (error diffusion, random order): α tracks the schedule, not coin noise.
        starts = [i for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]
        self._carry += share * len(starts)
        n_tool = min(len(starts), int(self._carry))
        self._carry -= n_tool
        chosen = set(self.rng.sample(starts, n_tool))
        uses, use = [], False
        for i in range(len(texts)):
            use = (i in chosen) if i in starts else use
            uses.append(use)
        completion_ids, logprobs, env_mask, results = [None] * len(texts), [None] * len(texts), [None] * len(texts), []
        for want_tool in (False, True):
            rows = [i for i, u in enumerate(uses) if u == want_tool]
            if not rows:
                continue
            if want_tool:
                spans = [tok(f"<tool_response>{make_prompt(self._index(texts[i]))[1]:03d}</tool_response>",
                             add_special_tokens=False)["input_ids"] for i in rows]
                span = torch.tensor(spans)  # same length: 3-digit results
                context = torch.cat([ctx[rows], pre[rows], span], 1)
                post, post_lp = self._sample(self.sampler, context, POST_LEN)  # the lagging worker
            else:
                span = torch.zeros(len(rows), 0, dtype=torch.long)
                post, post_lp = self._sample(model, torch.cat([ctx[rows], pre[rows]], 1), POST_LEN)
            sampler = self.sampler if want_tool else model
            end_ctx = torch.cat([ctx[rows], pre[rows], span, post], 1)
            eos_lp = torch.log_softmax(sampler(input_ids=end_ctx).logits[:, -1].float(), -1)[:, tok.eos_token_id]
            for j, i in enumerate(rows):
                s = span[j].tolist()
                completion_ids[i] = pre[i].tolist() + s + post[j].tolist() + [tok.eos_token_id]
                logprobs[i] = pre_lp[i].tolist() + [0.0] * len(s) + post_lp[j].tolist() + [float(eos_lp[j])]
                env_mask[i] = [1] * PRE_LEN + [0] * len(s) + [1] * POST_LEN + [1]
        self.log.append({"step": step, "tool_share": share, "lag": lag, "stale_step": stale_step,
                         "tool_episodes": sum(uses), "episodes": len(uses)})
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs,
                "env_mask": env_mask, "tool_used": uses}

    @staticmethod
    def _index(text: str) -> int:
        return int(text.split("#", 1)[1].split(" ", 1)[0]) if "#" in text else int(text[1:3])


def make_reward(tok):
    """Share of the agent's own tokens that are digits, + 1 when the post-tool answer holds the tool's result."""

    def digit_reward(completions, completion_ids, tool_used, **kwargs):
        out = []
        for ids, used in zip(completion_ids, tool_used):
            ids = [t for t in ids if t != tok.eos_token_id]
            agent = tok.decode(ids[:PRE_LEN] + ids[len(ids) - POST_LEN:], skip_special_tokens=True)
            r = sum(c in DIGITS for c in agent) / max(1, len(agent))
            if used:
                result = tok.decode(ids[PRE_LEN:len(ids) - POST_LEN], skip_special_tokens=True)
                answer = tok.decode(ids[len(ids) - POST_LEN:], skip_special_tokens=True)
                r += 1.0 if result and result in answer else 0.0
            out.append(r)
        return out

    return digit_reward


@torch.no_grad()
def evaluate(model, tok, n: int = 64, seed: int = 123) -> float:
    """Mean digit share of n fresh on-policy samples (no tool, no lag): the quality of the trained policy."""
    g = torch.Generator().manual_seed(seed)
    prompts = [tok(make_prompt(10_000 + i)[0], add_special_tokens=False)["input_ids"] for i in range(n)]
    width = max(map(len, prompts))
    x = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    model.eval()
    out = []
    for _ in range(PRE_LEN + POST_LEN):
        probs = torch.softmax(model(input_ids=x).logits[:, -1].float(), -1)
        nxt = torch.multinomial(probs, 1, generator=g)
        out.append(nxt)
        x = torch.cat([x, nxt], 1)
    gen = torch.cat(out, 1)
    texts = tok.batch_decode(gen, skip_special_tokens=True)
    return sum(sum(c in DIGITS for c in t) / max(1, len(t)) for t in texts) / n


DEMO_POLICY = Path(__file__).resolve().parent / "demo_policy.yaml"


def policy_file(mode: str, path: Path) -> Path:
    """The demo's policy override: `mode` + examples/demo_policy.yaml (each deviation justified in docs/demo.md)."""
    path.write_text(f"mode: {mode}\n" + DEMO_POLICY.read_text())
    return path


class LaggingWorker:
    """Stands where TRL's `vllm_generation` would: the rollout_func is the (lagging) inference worker and
    syncs its own weights, so TRL's weight push is a no-op. Its presence lets TRL's own importance-sampling
    correction (`vllm_importance_sampling_*`) consume the worker's logprobs, as it does for a vLLM server."""

    def sync_weights(self):
        pass


def use_worker_logprobs(trainer, mode: str, cap: float) -> None:
    """Turn on TRL 1.16's sampler-logprob IS correction for a rollout_func worker (docs/demo.md, mechanism)."""
    trainer.use_vllm = True  # read only in the generation/IS paths; the rollout_func does the generating
    trainer.vllm_generation = LaggingWorker()
    trainer._last_loaded_step = -1
    trainer.vllm_importance_sampling_correction = True
    trainer.vllm_importance_sampling_mode = mode
    trainer.vllm_importance_sampling_clip_max = cap


def run(policy_mode="control", steps=60, run_dir="runs", run_id=None, seed=0, lr=5e-3, beta=0.04, batch=16,
        num_generations=4, endpoint=None, quiet=False, tool_start=0.2, tool_end=0.9, stale_onset=0.4,
        stale_every=2, record_to=None, checkpoint_every=5, is_mode=None, is_cap=3.0, attach=True, ramp_onset=None) -> dict:
    """One training run; returns the summary (also written to `<run_dir>/<run_id>/example_summary.json`)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    import tailguard

    run_id = run_id or f"grpo-tool-{policy_mode}"
    run_dir = Path(run_dir).resolve()
    work = Path(tempfile.mkdtemp(prefix=f"tg-{run_id}-"))
    model, tok = build_tiny_lm(work / "model", seed=seed)
    n_prompts = steps * batch // num_generations + batch
    dataset = Dataset.from_dict({"prompt": [f"#{i:05d} " + make_prompt(i)[0] for i in range(n_prompts)]})
    args = GRPOConfig(
        output_dir=str(work / "out"), per_device_train_batch_size=batch, num_generations=num_generations,
        max_steps=steps, beta=beta, max_completion_length=PRE_LEN + POST_LEN + 24, learning_rate=lr,
        logging_steps=1, report_to="none", bf16=False, save_strategy="no", seed=seed, use_cpu=True,
        lr_scheduler_type="constant", shuffle_dataset=False, disable_tqdm=True,
    )
    env = CalculatorEnv(model, tok, steps, tool_start=tool_start, tool_end=tool_end, stale_onset=stale_onset,
                        stale_every=stale_every, seed=seed, ramp_onset=ramp_onset)
    trainer = GRPOTrainer(model=str(work / "model"), processing_class=tok, reward_funcs=make_reward(tok), args=args,
                          train_dataset=dataset, rollout_func=env)
    if is_mode:
        use_worker_logprobs(trainer, is_mode, is_cap)
    os.environ["TAILGUARD_RUN_DIR"] = str(run_dir)
    engine_args = f"--policy {policy_file(policy_mode, work / 'policy.yaml')}"
    if record_to:  # the engine writes every received step message to a capture (`tailguard replay` reads it)
        engine_args += f" --record {Path(record_to).resolve()}"
    os.environ["TAILGUARD_ENGINE_ARGS"] = engine_args
    options = dict(run_id=run_id, log_wait_s=0.5, checkpoint_every=checkpoint_every)
    cb = tailguard.attach(trainer, endpoint=endpoint, **options) if attach else None
    rows: list[dict] = []
    t0 = time.monotonic()

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            env.alpha_ceiling = cb.directives.alpha_ceiling if cb is not None and cb.directives is not None else None
            e = env.log[-1] if env.log else {}
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                   "lag": e.get("lag"), "tool_share": e.get("tool_share")}
            rows.append(row)
            if not quiet:
                q = row.get("tailguard/old_vs_rollout/post_tool/abs_q99", float("nan"))
                print(f"  [{policy_mode:>7}] step {state.global_step:3d}/{steps}  reward {row['reward']:.3f}  "
                      f"kl {row.get('kl', float('nan')):.4f}  loss {row.get('loss', float('nan')):+.4f}  "
                      f"tool {row['tool_share']:.2f}  lag {row['lag']}  post_tool q99 {q:.3f}  "
                      f"({time.monotonic() - t0:.0f}s)", flush=True)

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # our one line per step replaces the raw log dicts
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(Progress())
    trainer.train()
    summary = {
        "run_id": run_id, "policy_mode": policy_mode, "steps_done": int(trainer.state.global_step),
        "steps_planned": steps, "rows": rows, "env": env.log, "eval_reward": evaluate(trainer.model, tok),
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
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--run-dir", default="runs")
    ap.add_argument("--run-id")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--endpoint", help="a running engine instead of the embedded one")
    args = ap.parse_args()
    s = run(args.policy_mode, args.steps, args.run_dir, args.run_id, args.seed, endpoint=args.endpoint)
    print(json.dumps({k: s[k] for k in ("run_id", "steps_done", "eval_reward", "client", "seconds")}, default=float))
    return 0 if math.isfinite(s["eval_reward"]) else 1


if __name__ == "__main__":
    sys.exit(main())
