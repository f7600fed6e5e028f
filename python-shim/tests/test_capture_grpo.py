"""GRPO capture on a real tiny GRPOTrainer: the arrays the shim would send, checked against what the
rollout produced (recorded independently) and against TRL's own semantics. No engine needed here
(fail_open with an unreachable endpoint); the engine round trip is in test/test_trl_*.py."""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import ToolRollout, length_reward, prompt_dataset, slice_counts  # noqa: E402

NOWHERE = "tcp://127.0.0.1:9"  # nothing listens: fail_open must keep training going


def grpo(tiny, tmp_path, rollout=None, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    model_dir, tok = tiny
    cfg = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
        gradient_accumulation_steps=2, max_steps=4, max_completion_length=24, logging_steps=1,
        report_to="none", learning_rate=1e-2, bf16=False, save_strategy="no", seed=0,
    )
    cfg.update(overrides)
    return GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward,
                       args=GRPOConfig(**cfg), train_dataset=prompt_dataset(), rollout_func=rollout)


def check_step_against_rollout(arrays, records, num_generations):
    seq_ids = arrays["seq_ids"]
    offsets = arrays["offsets"]
    assert offsets[0] == 0 and offsets[-1] == len(arrays["tool_mask"]) == len(arrays["completion_mask"])
    assert np.all(arrays["completion_mask"] == 1)
    np.testing.assert_array_equal(arrays["group_ids"], seq_ids // num_generations)
    for i, sid in enumerate(seq_ids):
        mask = records[sid]["env_mask"]
        got = arrays["tool_mask"][offsets[i] : offsets[i + 1]]
        np.testing.assert_array_equal(got, np.array(mask, np.uint8))


def test_grpo_rollout_func_env_mask_offpolicy_and_ref(tiny, tmp_path):
    ro = ToolRollout(tiny[1], seed=1)
    trainer = grpo(tiny, tmp_path, ro, num_iterations=2, beta=0.1)
    cb = tailguard.attach(trainer, endpoint=NOWHERE, retain_captured=True, connect_timeout_s=0.1)
    trainer.train()
    steps = cb.capture.captured
    assert [s for s, _ in steps] == [1, 2, 3, 4]
    for _, a in steps:
        assert set(a) >= {"policy_vs_old", "policy_vs_ref", "tool_mask", "offsets", "advantages", "seq_ids"}
        assert a["policy_vs_old"].dtype == np.float32 and a["tool_mask"].dtype == np.uint8
        assert a["offsets"].dtype == np.int32 and len(a["seq_ids"]) == 8  # 4 per micro-batch x 2
        check_step_against_rollout(a, ro.records, 4)
        assert (a["tool_mask"] == 0).any()  # tool spans present
    # num_iterations=2: every second step reuses data from an older policy, so the drift is real.
    assert any(np.abs(a["policy_vs_old"]).max() > 0 for _, a in steps)
    # beta>0: after the first update the policy has left the reference.
    assert np.abs(steps[-1][1]["policy_vs_ref"]).max() > 0
    # The same sequences are trained on twice (num_iterations=2), never a third time.
    all_ids = np.concatenate([a["seq_ids"] for _, a in steps])
    assert np.bincount(all_ids).max() == 2
    trainer_tokens = sum(slice_counts(ro.records[s]["env_mask"])["all"] for s in all_ids)
    assert trainer_tokens == sum(int(a["tool_mask"].sum()) for _, a in steps)


def test_grpo_policy_vs_old_implicit_with_defaults(tiny, tmp_path):
    ro = ToolRollout(tiny[1], seed=2)
    trainer = grpo(tiny, tmp_path, ro, max_steps=2, importance_sampling_level="sequence", beta=0.0)
    cb = tailguard.attach(trainer, endpoint=NOWHERE, retain_captured=True, connect_timeout_s=0.1)
    trainer.train()
    assert [s for s, _ in cb.capture.captured] == [1, 2]
    for step, arrays in cb.capture.captured:
        assert cb.capture.captured_implicit[step] == ["policy_vs_old"]
        assert "policy_vs_old" not in arrays and "policy_vs_ref" not in arrays  # beta=0: no reference
        assert len(arrays["seq_ids"]) == 8  # both micro-batches of the step
    assert cb.capture.knobs()["beta"] == 0.0


def test_grpo_steps_per_generation_gt_accumulation_gives_old(tiny, tmp_path):
    ro = ToolRollout(tiny[1], seed=3)
    trainer = grpo(tiny, tmp_path, ro, max_steps=2, gradient_accumulation_steps=1, steps_per_generation=2)
    cb = tailguard.attach(trainer, endpoint=NOWHERE, retain_captured=True, connect_timeout_s=0.1)
    trainer.train()
    (_, a1), (_, a2) = cb.capture.captured
    assert np.abs(a1["policy_vs_old"]).max() == 0  # first micro-batch: the policy that generated it
    assert np.abs(a2["policy_vs_old"]).max() > 0  # second: one optimizer step later
    check_step_against_rollout(a2, ro.records, 4)


def test_detach_restores_trainer_and_knobs_are_live(tiny, tmp_path):
    trainer = grpo(tiny, tmp_path, ToolRollout(tiny[1]), beta=0.05, epsilon=0.3, max_steps=1)
    cls_compute = type(trainer)._compute_loss
    cb = tailguard.attach(trainer, endpoint=NOWHERE)
    assert "_compute_loss" in vars(trainer) and cb in trainer.callback_handler.callbacks
    knobs = cb.capture.knobs()
    assert knobs["beta"] == 0.05 and knobs["epsilon_low"] == 0.3 and knobs["epsilon_high"] == 0.3
    trainer.beta = 0.2
    assert cb.capture.knobs()["beta"] == 0.2
    cb.detach()
    assert "_compute_loss" not in vars(trainer) and "log" not in vars(trainer)
    assert type(trainer)._compute_loss is cls_compute
    assert cb not in trainer.callback_handler.callbacks
