"""Two CPU processes (torchrun, gloo) each send their own shard of every step; the engine merges by step
and reports world_size 2 with both ranks' token counts."""

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TESTS = Path(__file__).resolve().parents[1] / "python-shim" / "tests"
sys.path.insert(0, str(TESTS))

pytest.importorskip("trl")

from tiny import build_tiny_lm, read_jsonl, run_torchrun, start_engine  # noqa: E402

WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, os.environ["TG_TESTS"])
    import tailguard
    from tiny import ToolRollout, length_reward, prompt_dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    model_dir, out = os.environ["TG_MODEL"], os.environ["TG_OUT"]
    rank = int(os.environ["RANK"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    args = GRPOConfig(output_dir=out, per_device_train_batch_size=4, num_generations=4, gradient_accumulation_steps=1,
                      max_steps=3, beta=0.1, max_completion_length=24, logging_steps=1, report_to="none",
                      learning_rate=1e-2, bf16=False, save_strategy="no", seed=0, use_cpu=True)
    trainer = GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward, args=args,
                          train_dataset=prompt_dataset(), rollout_func=ToolRollout(tok, seed=10 + rank))
    cb = tailguard.attach(trainer, endpoint=os.environ["TG_ENDPOINT"], run_id="ddp-e2e", retain_captured=True)
    trainer.train()
    assert cb.last_client.world_size == 2 and cb.last_client.rank == rank
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({str(s): {"tokens": len(a["tool_mask"]), "seq_ids": a["seq_ids"].tolist()}
                   for s, a in cb.capture.captured}, f)
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def test_two_process_gloo_run_merges_by_step(tmp_path):
    model_dir = tmp_path / "model"
    build_tiny_lm(model_dir)
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    engine = start_engine(tmp_path / "runs")
    try:
        env = {"TG_TESTS": str(TESTS), "TG_MODEL": str(model_dir), "TG_OUT": str(out), "TG_ENDPOINT": engine.endpoint,
               "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        run_torchrun(tmp_path / "worker.py", env=env, launcher_args=["--standalone"])
    finally:
        engine.stop()

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == ["1", "2", "3"]
    # Each rank sent its own shard: disjoint global sequence ids, same step numbers.
    for s in ("1", "2", "3"):
        assert not set(ranks[0][s]["seq_ids"]) & set(ranks[1][s]["seq_ids"])
    steps = {e["step"]: e for e in read_jsonl(tmp_path / "runs" / "ddp-e2e" / "steps.jsonl")}
    assert sorted(steps) == [1, 2, 3]
    for s, entry in steps.items():
        assert entry["world_size"] == 2
        assert entry["ranks_present"] == [0, 1] and entry["ranks_missing"] == []
        per_rank = {int(k): v for k, v in entry["tokens_per_rank"].items()}
        assert per_rank == {0: ranks[0][str(s)]["tokens"], 1: ranks[1][str(s)]["tokens"]}
        assert entry["tokens"] == per_rank[0] + per_rank[1]
