"""The demo's tool environment: a GRPO `rollout_func` where the agent itself decides whether to call a calculator.

An episode (prompt `#00017 q17: 52+81%10=`, the last digit of a sum):
- pre_tool: the agent writes PRE_LEN tokens with the current policy. Its FIRST token is the decision: a token
  of the "call" half of the vocabulary (even ids; the byte-level toy's stand-in for a function-call marker)
  calls the calculator, any other token answers directly. At random init about half the episodes call; no
  schedule forces or forbids tool use.
- tool call: the environment appends `<tool_response>3` (tool-output tokens, env_mask 0 → TRL's tool_mask 0),
  and the answer (POST_LEN tokens, post_tool) is written by the **post-tool inference worker**.
- no call: the agent writes the answer itself (pre_tool tokens: no tool output precedes them).
- reward (`make_reward`): 1 if the answer's first character is the right digit, + 0.2 × the share of digits
  among its first 3 characters (a format reward; without it the signal is too sparse for a random-init model).
  Adding in one's head is hard for a tiny model (chance: 0.1); repeating the tool's digit is easy, so tool use
  pays and spreads through the group advantages: α rises from the training dynamics.

The documented perturbation: the post-tool worker's weight sync stalls at `stale_onset` of the run (async
agentic RL: a turn waiting on a slow tool is finished by a worker whose weights lag the trainer). Its lag then
grows by one optimizer step every `stale_every` steps. The rollout returns the worker's own logprobs, so
`old_vs_rollout` on post_tool tokens is log π_current − log π_worker.

Rollout precision: like vLLM-style inference engines, the rollout side (the policy's sampling copy and the
post-tool worker) runs in bfloat16 (`rollout_dtype`), while the trainer recomputes logprobs in float32. So
`old_vs_rollout` is never ~0: every token carries the bf16 rounding mismatch (pre_tool included), and the
stall adds the worker's lag on top of it on post_tool tokens only. Nothing in the run resyncs the worker
except a rollback (tailguard's `cb.directives.rollbacks` grows): the restart loads the restored weights into
the worker and clears the stuck sync. With `stall_recurs=True` the stall resumes right after the resync
instead (a fault the restart does not fix); docs/demo.md gives the figures of both.
"""

from __future__ import annotations

import copy
import random
from collections import deque

import torch

PRE_LEN = 3  # agent tokens before the tool result; the first one is the call decision
POST_LEN = 4  # answer tokens (after the tool result, or right after the pre_tool tokens)


def make_prompt(i: int) -> tuple[str, int]:
    r = random.Random(i)
    a, b = r.randint(10, 99), r.randint(10, 99)
    return f"#{i:05d} q{i % 100:02d}: {a}+{b}%10=", (a + b) % 10


def prompt_index(text: str) -> int:
    return int(text.split("#", 1)[1].split(" ", 1)[0])


FORMAT_WEIGHT = 0.2  # a small format reward: digits are the answer's alphabet (without it the reward is too sparse)


def score(answer: str, result: int) -> float:
    """Share of the 3 zero-padded digits of `result` that `answer` gets right, in place, + the format reward."""
    correct = float(answer[:1] == str(result))
    return correct + FORMAT_WEIGHT * sum(c.isdigit() for c in answer[:3]) / 3


class CalculatorEnv:
    """The rollout_func: the policy writes pre_tool tokens and direct answers, the (lagging) worker post_tool ones."""

    def __init__(self, model, tok, max_steps, *, stale_onset=0.4, stale_every=1, seed=0, lag=True,
                 stall_recurs=False, rollout_dtype=torch.bfloat16):
        self.tok, self.max_steps, self.stall_recurs = tok, max_steps, stall_recurs
        self.stale_onset, self.stale_every, self.lag_on = stale_onset, stale_every, lag
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        # the inference side in rollout_dtype: a synced copy of the policy, and the post-tool worker
        self.engine = copy.deepcopy(model).to(rollout_dtype).eval()
        self.worker = copy.deepcopy(model).to(rollout_dtype).eval()
        self.history: deque = deque(maxlen=128)  # (step, weights) as the trainer published them
        self.resync_step = 0  # the last step at which the worker was resynced (a rollback)
        self.rollbacks = 0  # tailguard's rollback count, read by the Progress callback after each step
        self.alpha_ceiling: float | None = None  # tailguard's curriculum directive: denied calls above it
        self.log: list[dict] = []
        self.call_ids = {i for i in range(len(tok)) if i % 2 == 0}  # the "call" half of the vocabulary

    def lag(self, step: int) -> int:
        onset = max(int(self.stale_onset * self.max_steps), self.resync_step)
        if not self.lag_on or step < onset or (self.rollbacks and not self.stall_recurs):
            return 0
        return 1 + (step - onset) // self.stale_every

    def note_rollbacks(self, n: int, step: int) -> None:
        """A rollback restored older weights: the worker reloads them (history cleared), its lag restarts."""
        if n > self.rollbacks:
            self.rollbacks = n
            self.history.clear()
            self.resync_step = step

    @torch.no_grad()
    def _sample(self, model, context: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n tokens by ancestral sampling at temperature 1; returns (ids, logprobs), shape (B, n)."""
        ids, lps, x = [], [], context
        for _ in range(n):
            logp = torch.log_softmax(model(input_ids=x).logits[:, -1].float(), -1)
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
        self.history.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        lag = self.lag(step)
        worker_step, weights = next(((s, w) for s, w in self.history if s >= step - lag), self.history[-1])
        self.worker.load_state_dict(weights)  # cast to the rollout dtype
        self.engine.load_state_dict(self.history[-1][1])  # the synced sampler: the current weights, cast
        try:
            out, info = self.rollout(prompts, self.engine, self.worker)
        finally:
            model.train(was_training)
        self.log.append({"step": step, "lag": lag, "worker_step": worker_step, **info})
        return out

    def rollout(self, prompts, policy, worker) -> tuple[dict, dict]:
        tok = self.tok
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, prompt_ids))
        ctx = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompt_ids])
        pre, pre_lp = self._sample(policy, ctx, PRE_LEN)
        wants = [int(t) in self.call_ids for t in pre[:, 0]]
        uses = list(wants)
        if self.alpha_ceiling is not None:  # the curriculum ceiling: the environment denies calls above it
            allowed = int(self.alpha_ceiling * len(texts) * 1.5)  # α is a token share; ~1.5 calls per unit
            calls = [i for i, w in enumerate(wants) if w]
            for i in calls[allowed:]:
                uses[i] = False
        n = len(texts)
        completion_ids: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        env_mask: list[list[int]] = [[] for _ in range(n)]
        for use in (False, True):
            rows = [i for i in range(n) if uses[i] == use]
            if not rows:
                continue
            if use:
                span = torch.tensor([tok(f"<tool_response>{make_prompt(prompt_index(texts[i]))[1]}",
                                         add_special_tokens=False)["input_ids"] for i in rows])
            else:
                span = torch.zeros(len(rows), 0, dtype=torch.long)
            sampler = worker if use else policy
            context = torch.cat([ctx[rows], pre[rows], span], 1)
            post, post_lp = self._sample(sampler, context, POST_LEN)
            end = torch.log_softmax(sampler(input_ids=torch.cat([context, post], 1)).logits[:, -1].float(), -1)
            for j, i in enumerate(rows):
                s = span[j].tolist()
                completion_ids[i] = pre[i].tolist() + s + post[j].tolist() + [tok.eos_token_id]
                logprobs[i] = (pre_lp[i].tolist() + [0.0] * len(s) + post_lp[j].tolist()
                               + [float(end[j, tok.eos_token_id])])
                env_mask[i] = [1] * PRE_LEN + [0] * len(s) + [1] * (POST_LEN + 1)
        info = {"episodes": n, "calls_wanted": sum(wants), "tool_episodes": sum(uses)}
        return ({"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs,
                 "env_mask": env_mask, "tool_used": uses}, info)


def make_reward(tok):
    """Correctness of the answer (the POST_LEN tokens before the end), whether or not the tool was called."""

    def answer_reward(completions, completion_ids, prompts, tool_used, **kwargs):
        out = []
        for ids, prompt in zip(completion_ids, prompts):
            text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            ids = [t for t in ids if t != tok.eos_token_id][-POST_LEN:]
            out.append(score(tok.decode(ids, skip_special_tokens=True), make_prompt(prompt_index(text))[1]))
        return out

    return answer_reward


@torch.no_grad()
def evaluate(model, tok, n: int = 128, seed: int = 123) -> dict:
    """The trained policy on fresh prompts, on-policy: it decides, the tool answers, a synced worker (the
    model itself) writes the post-tool answer. Returns the mean reward and the share of episodes that call."""
    env = CalculatorEnv(model, tok, 1, seed=seed, lag=False)
    prompts = [make_prompt(100_000 + i)[0] for i in range(n)]
    was = model.training
    model.eval()
    out, info = env.rollout(prompts, model, model)
    model.train(was)
    reward = make_reward(tok)(None, out["completion_ids"], prompts, out["tool_used"])
    return {"reward": sum(reward) / n, "tool_rate": info["tool_episodes"] / n}
