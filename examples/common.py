"""Helpers shared by the examples: a tiny offline causal LM, run-store readers, the `tailguard` CLI.

Nothing is downloaded: the tokenizer is byte-level with no merges (every UTF-8 byte is a token) and the
model is a random-init 2-layer Qwen3 built from a config (DESIGN §6).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
            "<tool_response>", "</tool_response>"]


def build_tiny_lm(out_dir, hidden_size: int = 32, num_layers: int = 2, seed: int = 0):
    """Build, save and return `(model, tokenizer)`: a byte-level tokenizer and a random-init Qwen3."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=SPECIALS[1:2] + SPECIALS[3:])
    tok.save_pretrained(str(out_dir))
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out_dir))
    return model, tok


def read_jsonl(path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line is skipped."""
    out: list[dict] = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def tailguard_cli(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run the project's own CLI (`node ts-core/bin/tailguard.mjs ...`, or TAILGUARD_ENGINE_CMD)."""
    from tailguard.engine import engine_command

    return subprocess.run(engine_command() + list(args), check=check, cwd=ROOT, text=True,
                          capture_output=capture)
