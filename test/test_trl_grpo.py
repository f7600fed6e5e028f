"""End to end: a real tiny GRPOTrainer with a tool-span rollout_func, a real engine process.

Asserts that the engine's per-step token counts per slice equal what the rollout's masks imply
(recomputed here from the rollout's own records), that its abs_q95 for policy_vs_ref matches numpy on
the same captured tensors, and that `tailguard/...` keys land in the trainer's log history."""

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import (  # noqa: E402
    ToolRollout, build_tiny_lm, length_reward, prompt_dataset, quantile_bracket, read_jsonl, slice_counts, start_engine,
)

SLICES = ("all", "pre_tool", "post_tool")


def slice_of_tokens(tool_mask, offsets):
    """Per-token slice label of the flattened step (DESIGN §3), for numpy's side of the comparison."""
    labels = np.empty(len(tool_mask), dtype=object)
    for i in range(len(offsets) - 1):
        seen = False
        for t in range(offsets[i], offsets[i + 1]):
            if tool_mask[t] == 0:
                seen = True
                labels[t] = "tool_output"
            else:
                labels[t] = "post_tool" if seen else "pre_tool"
    return labels


def test_grpo_tool_rollout_end_to_end(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    model_dir = tmp_path / "model"
    _, tok = build_tiny_lm(model_dir)
    engine = start_engine(tmp_path / "runs")
    try:
        ro = ToolRollout(tok, seed=7)
        args = GRPOConfig(
            output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
            gradient_accumulation_steps=2, max_steps=6, num_iterations=2, beta=0.1, max_completion_length=24,
            logging_steps=1, report_to="none", learning_rate=2e-2, bf16=False, save_strategy="no", seed=0,
        )
        trainer = GRPOTrainer(model=str(model_dir), processing_class=tok, reward_funcs=length_reward, args=args,
                              train_dataset=prompt_dataset(), rollout_func=ro)
        cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="grpo-e2e", retain_captured=True,
                              log_wait_s=10.0, record_to=str(tmp_path / "grpo.tgcap"))
        trainer.train()
        client = cb.last_client
        assert client.stats["dropped"] == 0 and client.stats["sent"] == 6
    finally:
        engine.stop()

    captured = dict(cb.capture.captured)
    assert sorted(captured) == [1, 2, 3, 4, 5, 6]

    # 1. Token counts per slice: engine's `received` echo and its metric records vs the rollout's records.
    metrics = read_jsonl(tmp_path / "runs" / "grpo-e2e" / "metrics.jsonl")
    by_key = {(m["step"], m["pair"], m["slice"]): m for m in metrics}
    for step, arrays in captured.items():
        expected = defaultdict(int)
        for sid in arrays["seq_ids"]:
            for k, v in slice_counts(ro.records[sid]["env_mask"]).items():
                expected[k] += v
        received = client.reply_for(step)["received"]
        assert received["tokens"] == expected["all"] + expected["tool_output"]
        assert received["n_seqs"] == 8
        for s in ("all", "pre_tool", "post_tool", "tool_output"):
            assert received["slices"][s] == expected[s], (step, s)
        for s in SLICES:
            assert by_key[(step, "policy_vs_ref", s)]["n"] == expected[s], (step, s)
            assert by_key[(step, "policy_vs_old", s)]["n"] == expected[s], (step, s)

    # 2. abs_q95 of policy_vs_ref per slice vs numpy on the very arrays that were sent.
    checked = 0
    for step, arrays in captured.items():
        labels = slice_of_tokens(arrays["tool_mask"], arrays["offsets"])
        for s in SLICES:
            sel = labels != "tool_output" if s == "all" else labels == s
            vals = np.abs(arrays["policy_vs_ref"][sel].astype(np.float64))
            lo, hi = quantile_bracket(vals, 0.95)
            got = by_key[(step, "policy_vs_ref", s)]["abs_q95"]
            assert lo * (1 - 1e-3) - 1e-9 <= got <= hi * (1 + 1e-3) + 1e-9, (step, s, lo, got, hi)
            checked += hi > 0
    assert checked >= 6  # the comparison ran on real, non-zero tails

    # 3. The engine's metrics are in the trainer's own log history (what W&B/TensorBoard/trackio get).
    keys = {k for entry in trainer.state.log_history for k in entry if k.startswith("tailguard/")}
    assert any(k.startswith("tailguard/policy_vs_ref/") for k in keys), keys
    assert any(k.startswith("tailguard/policy_vs_old/") for k in keys), keys
    assert "tailguard/client/dropped" in keys
    last = [e for e in trainer.state.log_history if "tailguard/metrics_step" in e]
    assert last and last[-1]["tailguard/metrics_step"] == 6

    # 4. record_to=: the recording replays through the engine to the same statistics as the live run.
    repo = Path(__file__).resolve().parents[1]
    replay = subprocess.run(["node", str(repo / "ts-core" / "bin" / "tailguard.mjs"), "replay", str(tmp_path / "grpo.tgcap"),
                             "--run-dir", str(tmp_path / "replayed")], capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    replayed = read_jsonl(tmp_path / "replayed" / "grpo-e2e" / "metrics.jsonl")
    assert [(m["step"], m["pair"], m["slice"], m["n"], m["abs_q95"], m["ess"]) for m in replayed] == [
        (m["step"], m["pair"], m["slice"], m["n"], m["abs_q95"], m["ess"]) for m in metrics
    ]
