"""Tiny offline causal LM + tokenizer for tests and benchmarks (no hub access).

`build_tiny_lm(tmpdir)` returns `(model, tokenizer)`, both also saved under `tmpdir`. The tokenizer is
byte-level with no merges (every UTF-8 byte is a token), so any text, including tool-call JSON, encodes;
its special tokens and chat template are Qwen3's (shipped inside TRL), so TRL's tool-calling path
recognises the template and can parse `<tool_call>` blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
            "<tool_response>", "</tool_response>", "<think>", "</think>"]


def qwen3_chat_template() -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()


def build_tokenizer(tmpdir: str | os.PathLike):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:2] + SPECIALS[3:],
    )
    fast.chat_template = qwen3_chat_template()
    fast.save_pretrained(str(tmpdir))
    return fast


def build_tiny_lm(tmpdir: str | os.PathLike, hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    """Build and save a random-init Qwen3 causal LM (hidden 32, 2 layers) and its tokenizer."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tmpdir)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=4096,  # byte-level tokens: a tool schema prompt alone is ~1k
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(tmpdir))
    return model, tokenizer


class ToolRollout:
    """A GRPO `rollout_func` whose completions contain tool-output spans (`env_mask` 0-runs).

    Deterministic per seed. Each completion is `pre` model tokens, optionally a tool span of `tool`
    tokens and `post` model tokens, then EOS. Every generated sequence is recorded in generation order
    (`self.records[i]` is the global sequence i across calls), so a test can recompute slice counts
    without looking at what the capture sent.
    """

    def __init__(self, tokenizer, seed: int = 0, max_completion_length: int = 24):
        import random

        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.max_len = max_completion_length
        self.records: list[dict] = []

    def make(self) -> tuple[list[int], list[int]]:
        r = self.rng
        pre = r.randint(1, 6)
        tool = r.choice([0, 0, 3, 4, 6])
        post = r.randint(1, 5) if tool else 0
        ids = [r.randint(65, 122) for _ in range(pre + tool + post)] + [self.tokenizer.eos_token_id]
        mask = [1] * pre + [0] * tool + [1] * post + [1]
        assert len(ids) <= self.max_len
        return ids, mask

    def __call__(self, prompts, trainer):
        prompt_ids, completion_ids, env_mask = [], [], []
        for p in prompts:
            text = p if isinstance(p, str) else p[-1]["content"]
            prompt_ids.append(self.tokenizer(text)["input_ids"])
            ids, mask = self.make()
            completion_ids.append(ids)
            env_mask.append(mask)
            self.records.append({"ids": ids, "env_mask": mask})
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None, "env_mask": env_mask}


def slice_counts(env_mask: list[int]) -> dict[str, int]:
    """DESIGN §3 derived slices of one completion, from its tool mask (1 = model token)."""
    counts = {"all": 0, "pre_tool": 0, "post_tool": 0, "tool_output": 0}
    seen_tool = False
    for m in env_mask:
        if m == 0:
            seen_tool = True
            counts["tool_output"] += 1
        else:
            counts["all"] += 1
            counts["post_tool" if seen_tool else "pre_tool"] += 1
    return counts


def length_reward(completions, **kwargs):
    """A reward with spread inside each group, so advantages are non-zero."""
    return [float(len(c) % 7) for c in completions]


def prompt_dataset(n: int = 16):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"question {i}: what is {i} times {i + 1}?" for i in range(n)]})


def start_engine(run_dir, extra_args=None):
    """A real `tailguard serve` process on a private ipc endpoint (stop it with `.stop()`)."""
    from tailguard.engine import EmbeddedEngine

    return EmbeddedEngine(run_dir=str(run_dir), extra_args=extra_args).start(timeout=60)


def read_jsonl(path) -> list[dict]:
    import json

    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:  # a torn last line
                    pass
    return out


def quantile_bracket(values, q: float) -> tuple[float, float]:
    """[lower, higher] order statistics around quantile q: any sane quantile definition lies inside."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    return float(np.quantile(v, q, method="lower")), float(np.quantile(v, q, method="higher"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(script, *args, env: dict | None = None, nproc: int = 2, timeout: float = 240,
                 launcher_args: list[str] | None = None) -> str:
    """Run `script *args` under torchrun (`nproc` CPU processes) and return its output; fail the test
    if it exits non-zero or outlives `timeout` s. `env` is added to os.environ. By default the rendezvous
    is 127.0.0.1 on a free port. A hung run is killed whole (`kill_tree`) and the test fails instead of hanging."""
    import subprocess
    import sys

    import pytest

    if launcher_args is None:
        launcher_args = ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *launcher_args,
           str(script), *map(str, args)]
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        output, _ = proc.communicate()
        pytest.fail(f"{nproc}-process run hung (> {timeout} s):\n" + output[-4000:])
    assert proc.returncode == 0, output[-4000:]
    return output


def kill_tree(pid: int) -> None:
    """SIGKILL a process started with start_new_session=True, its group and every descendant. Killing the
    group is not enough for torchrun: its workers run in sessions of their own and would keep the output
    pipe open (and the test waiting) after torchrun is gone."""
    import signal

    import psutil  # a dependency of accelerate

    try:
        descendants = psutil.Process(pid).children(recursive=True)  # before the kill re-parents them
    except psutil.NoSuchProcess:
        descendants = []
    os.killpg(pid, signal.SIGKILL)
    for d in descendants:
        try:
            os.killpg(d.pid, signal.SIGKILL) if os.getpgid(d.pid) == d.pid else d.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
