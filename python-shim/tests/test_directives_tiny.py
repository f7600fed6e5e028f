"""Helpers for the directive/rollback tests: a tiny offline GRPO trainer and a driver callback.

No tests here. The driver stands in for TailguardCallback's hooks so apply/rollback can be tested
with hand-made directive dicts before (and independently of) a real engine.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Import into a test module to run its torch on one thread: on a small shared box, intra-op
    threads make these tiny models several times slower, not faster."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def build_grpo(out_dir, *, beta=0.0, max_steps=6, save_steps=0, save_total_limit=None, seed=0, callbacks=(), **cfg):
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for i in range(61):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ptok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    # beta > 0 builds the reference model from this path; one per rank, as ranks write concurrently
    model_dir = f"{out_dir}-model{os.environ.get('RANK', '')}"
    model.save_pretrained(model_dir)
    model = Qwen2ForCausalLM.from_pretrained(model_dir)
    ds = Dataset.from_dict({"prompt": [f"w{i % 50} w{(i + 1) % 50} w{(i + 2) % 50}" for i in range(200)]})

    def reward(completions, **kw):  # length-free, content-dependent: advantages are non-zero
        return [float(sum(int(w[1:]) % 7 for w in c.split() if w[1:].isdigit())) for c in completions]

    save = dict(save_strategy="steps", save_steps=save_steps) if save_steps else dict(save_strategy="no")
    args = GRPOConfig(
        output_dir=str(out_dir), bf16=False, report_to="none", num_generations=2, max_completion_length=8,
        per_device_train_batch_size=2, logging_steps=1, max_steps=max_steps, use_cpu=True, beta=beta,
        learning_rate=1e-2, seed=seed, save_total_limit=save_total_limit, disable_tqdm=True, **save, **cfg,
    )  # fmt: skip
    return GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=ptok, callbacks=list(callbacks)
    )


class ScriptedClient:
    """Hands rank 0 the directives scripted for a step; records acks. ``lost_at`` fakes a dead engine."""

    def __init__(self, trainer, script: dict[int, list[dict]], lost_at: int | None = None):
        self.trainer, self.script, self.lost_at = trainer, script, lost_at
        self.acks: list[dict] = []

    def poll_directives(self):
        return self.script.get(int(self.trainer.state.global_step), [])

    def send_ack(self, **ack):
        self.acks.append(ack)

    def engine_lost(self):
        if self.lost_at is not None and self.trainer.state.global_step >= self.lost_at:
            return "E_ENGINE_LOST: no reply"
        return None


def drive(trainer, applier, observe=None):
    """Register a callback that calls the applier hooks, then ``observe(state)`` after each step."""
    from transformers import TrainerCallback

    class Drive(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            applier.on_train_begin(state)

        def on_step_end(self, args, state, control, **kw):
            applier.on_step_end(state, control)
            if observe:
                observe(state)

        def on_save(self, args, state, control, **kw):
            applier.on_save(state)

    trainer.add_callback(Drive())


def read_jsonl(path):
    import json

    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
