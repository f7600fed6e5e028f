"""End to end: GRPO's built-in `tools=` path with a deterministic fake `generate` (as TRL's own tests do),
a real engine process. The first generation of every group calls `multiply_tool(3, 4)`; the engine must see the
tool result as `tool_output`, the call as `pre_tool` and the answer after it as `post_tool`."""

import os
import sys
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import build_tiny_lm, start_engine  # noqa: E402

CALL = '<tool_call>\n{"name": "multiply_tool", "arguments": {"a": 3, "b": 4}}\n</tool_call><|im_end|>'
ANSWER = "It is 12.<|im_end|>"
DIRECT = "No tool needed.<|im_end|>"


def multiply_tool(a: int, b: int) -> int:
    """
    Multiplies two integers.

    Args:
        a: The first integer.
        b: The second integer.

    Returns:
        The product of the two integers.
    """
    return a * b


def test_grpo_builtin_tools_end_to_end(tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model_dir = tmp_path / "model"
    _, tok = build_tiny_lm(model_dir)
    ids = {name: tok(text, add_special_tokens=False)["input_ids"] for name, text in
           [("call", CALL), ("answer", ANSWER), ("direct", DIRECT)]}
    response_id = tok.convert_tokens_to_ids("<tool_response>")

    def fake_generate(input_ids, **kwargs):
        rows = []
        for i, row in enumerate(input_ids.tolist()):
            if response_id in row:  # the post-tool turn
                rows.append(ids["answer"])
            else:  # one of each group's two generations calls the tool, so rewards (and updates) differ
                rows.append(ids["call"] if i % 2 == 0 else ids["direct"])
        width = max(map(len, rows))
        comp = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows], device=input_ids.device)
        return torch.cat([input_ids, comp], dim=1)

    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": f"question {i}: 3 times 4?"}] for i in range(8)]})
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=2, beta=0.1, max_completion_length=160, logging_steps=1, report_to="none",
                      learning_rate=1e-2, bf16=False, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=str(model_dir), processing_class=tok,
                          reward_funcs=lambda completions, **kw: [float(len(str(c)) % 5) for c in completions],
                          args=args, train_dataset=dataset, tools=[multiply_tool])
    engine = start_engine(tmp_path / "runs")
    try:
        cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="tools-e2e", retain_captured=True,
                              send_token_ids=True, log_wait_s=float(os.environ.get('TG_LOG_WAIT', 10)))
        with patch.object(trainer.model, "generate", side_effect=fake_generate):
            trainer.train()
        client = cb.last_client
    finally:
        engine.stop()

    assert len(cb.capture.captured) == 2
    n_tool_seqs = 0
    for step, a in cb.capture.captured:
        off, tm, tokens = a["offsets"], a["tool_mask"], a["token_ids"]
        expected = {"pre_tool": 0, "post_tool": 0, "tool_output": 0}
        for i in range(len(off) - 1):
            seq_tm, seq_ids = tm[off[i]:off[i + 1]], tokens[off[i]:off[i + 1]].tolist()
            model_ids = [t for t, m in zip(seq_ids, seq_tm) if m == 1]
            if (seq_tm == 0).any():
                n_tool_seqs += 1
                # What the model produced is exactly the call then the answer; the tool span is the result.
                assert model_ids == ids["call"] + ids["answer"]
                tool_text = tok.decode([t for t, m in zip(seq_ids, seq_tm) if m == 0])
                assert "<tool_response>" in tool_text and "12" in tool_text
                first_zero = int(np.argmin(seq_tm))
                assert seq_ids[:first_zero] == ids["call"]
                expected["pre_tool"] += len(ids["call"])
                expected["post_tool"] += len(ids["answer"])
                expected["tool_output"] += int((seq_tm == 0).sum())
            else:
                assert model_ids == ids["direct"], (tok.decode(model_ids), step, i)
                expected["pre_tool"] += len(ids["direct"])
        received = client.reply_for(step)["received"]["slices"]
        for s, n in expected.items():
            assert received[s] == n, (step, s)
        assert received["all"] == expected["pre_tool"] + expected["post_tool"]
    assert n_tool_seqs >= 2
    assert any(k.startswith("tailguard/policy_vs_ref/post_tool/") for e in trainer.state.log_history for k in e)
