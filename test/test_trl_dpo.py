"""End to end: a real tiny DPOTrainer, a real engine process. policy_vs_ref per token, with the user
slices `chosen` and `rejected`; the engine's counts match the tokenised completions."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import build_tiny_lm, quantile_bracket, read_jsonl, start_engine  # noqa: E402


def test_dpo_end_to_end(tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model_dir = tmp_path / "model"
    _, tok = build_tiny_lm(model_dir)
    n = 8
    data = Dataset.from_dict({
        "prompt": [f"q{i}: say yes" for i in range(n)],
        "chosen": [" yes" + "!" * (i % 3) for i in range(n)],
        "rejected": [" no, never" + "?" * (i % 4) for i in range(n)],
    })
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, max_steps=4, logging_steps=1,
                     report_to="none", learning_rate=5e-2, save_strategy="no", beta=0.1, bf16=False, seed=0)
    trainer = DPOTrainer(model=str(model_dir), processing_class=tok, args=args, train_dataset=data)
    engine = start_engine(tmp_path / "runs")
    try:
        cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="dpo-e2e", retain_captured=True,
                              log_wait_s=10.0)
        trainer.train()
        client = cb.last_client
    finally:
        engine.stop()

    captured = dict(cb.capture.captured)
    assert sorted(captured) == [1, 2, 3, 4]
    metrics = read_jsonl(tmp_path / "runs" / "dpo-e2e" / "metrics.jsonl")
    by_key = {(m["step"], m["pair"], m["slice"]): m for m in metrics}
    for step, a in captured.items():
        half = (len(a["offsets"]) - 1) // 2
        n_chosen = int(a["offsets"][half])
        n_rejected = int(a["offsets"][-1]) - n_chosen
        received = client.reply_for(step)["received"]
        assert received["tokens"] == n_chosen + n_rejected
        assert received["slices"]["all"] == n_chosen + n_rejected and received["slices"]["tool_output"] == 0
        assert by_key[(step, "policy_vs_ref", "user:chosen")]["n"] == n_chosen
        assert by_key[(step, "policy_vs_ref", "user:rejected")]["n"] == n_rejected
        vals = np.abs(a["policy_vs_ref"][:n_chosen].astype(np.float64))
        lo, hi = quantile_bracket(vals, 0.95)
        got = by_key[(step, "policy_vs_ref", "user:chosen")]["abs_q95"]
        assert lo * (1 - 1e-3) - 1e-9 <= got <= hi * (1 + 1e-3) + 1e-9
    assert np.abs(captured[4]["policy_vs_ref"]).max() > 0
    assert any(k.startswith("tailguard/policy_vs_ref/") for e in trainer.state.log_history for k in e)
