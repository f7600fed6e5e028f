"""End to end: a real GRPO run (tiny model, rollout_func with tool spans and rollout logprobs), a real engine
process, `send_token_ids=True`. A finding's `evidence.top_tokens` must be the top-k |old_vs_rollout| tokens of
what the shim sent (numpy reference over the captured arrays), naming sequence, position, token id and the
token's text decoded by the engine from the trainer's own tokenizer."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-shim" / "tests"))

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import build_tiny_lm, prompt_dataset, read_jsonl, start_engine  # noqa: E402

PRE, TOOL, POST = 3, 3, 3


class PlantedRollout:
    """Every completion: PRE model tokens, a TOOL-token tool span, POST model tokens, EOS. The rollout's
    logprobs are -3 everywhere except one post_tool token per call at -40 (a large |ℓ| that must top the list),
    and from the second call on one NaN (a non-finite value, which the engine reports at its own step)."""

    def __init__(self, tok):
        self.tok, self.calls = tok, 0
        self.rng = np.random.default_rng(0)

    def __call__(self, prompts, trainer):
        self.calls += 1
        prompt_ids, completion_ids, logprobs, env_mask = [], [], [], []
        for i, p in enumerate(prompts):
            prompt_ids.append(self.tok(p)["input_ids"])
            ids = [int(x) for x in self.rng.integers(65, 123, PRE + TOOL + POST)] + [self.tok.eos_token_id]
            lp = [-3.0] * PRE + [0.0] * TOOL + [-3.0] * POST + [-3.0]
            if i == 0:
                lp[PRE + TOOL + 1] = -40.0
            if i == 1 and self.calls >= 2:
                lp[PRE + TOOL] = float("nan")
            completion_ids.append(ids)
            logprobs.append(lp)
            env_mask.append([1] * PRE + [0] * TOOL + [1] * (POST + 1))
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs, "env_mask": env_mask}


def reference_top(arrays: dict, slice_name: str, k: int) -> list[tuple]:
    """(seq, pos, value, token_id) of the k largest finite |ℓ| of a slice, ties by sequence then position."""
    off, tm, cm = arrays["offsets"], arrays["tool_mask"], arrays["completion_mask"]
    x, ids = arrays["old_vs_rollout"], arrays["token_ids"]
    rows = []
    for s in range(len(off) - 1):
        seen = False
        for t in range(off[s], off[s + 1]):
            if not cm[t]:
                continue
            if not tm[t]:
                seen = True
                continue
            if (slice_name == "post_tool" and not seen) or (slice_name == "pre_tool" and seen) or not np.isfinite(x[t]):
                continue
            rows.append((-abs(float(x[t])), s, t - int(off[s]), float(x[t]), int(ids[t])))
    rows.sort()
    return [r[1:] for r in rows[:k]]


def test_findings_name_their_top_tokens(tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    model_dir = tmp_path / "model"
    _, tok = build_tiny_lm(model_dir)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=3, beta=0.0, max_completion_length=16, logging_steps=1, report_to="none",
                      learning_rate=1e-3, bf16=False, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=str(model_dir), processing_class=tok,
                          reward_funcs=lambda completions, **kw: [float(len(str(c)) % 5) for c in completions],
                          args=args, train_dataset=prompt_dataset(16), rollout_func=PlantedRollout(tok))
    engine = start_engine(tmp_path / "runs")
    try:
        cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="forensics", retain_captured=True,
                              send_token_ids=True, log_wait_s=10.0)
        trainer.train()
    finally:
        engine.stop()

    captured = dict(cb.capture.captured)
    assert set(captured) == {1, 2, 3} and all("token_ids" in a for a in captured.values())
    findings = [f for f in read_jsonl(tmp_path / "runs" / "forensics" / "directives.jsonl") if f.get("kind") == "finding"]
    with_tokens = [f for f in findings if f.get("evidence", {}).get("top_tokens")]
    # the NaN from step 2 on is a non-finite finding at its own step, on old_vs_rollout
    nan = [f for f in with_tokens if f["detector"] == "nonfinite" and f["pair"] == "old_vs_rollout"]
    assert nan and nan[0]["step"] == 2, [(f["detector"], f["step"]) for f in findings]
    for f in with_tokens:
        got = f["evidence"]["top_tokens"]
        want = reference_top(captured[f["step"]], f.get("slice", "all"), 8)  # k = 8, the engine's default
        assert [(t["seq"], t["pos"], t["token_id"]) for t in got] == [(s, p, i) for s, p, _, i in want], f
        assert np.allclose([t["value"] for t in got], [v for _, _, v, _ in want], rtol=1e-6, atol=0)
        assert all(t["rank"] == 0 for t in got)
        # decoded by the engine from the trainer's tokenizer.json: the same text transformers decodes
        assert [t["text"] for t in got] == [tok.decode([t["token_id"]]) for t in got]
        top = got[0]
        if f.get("slice", "all") in ("all", "post_tool"):  # the planted -40 rollout logprob tops the list
            assert top["pos"] == PRE + TOOL + 1 and top["value"] > 30
