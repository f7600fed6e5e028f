"""RLOO and DPO captures on real tiny trainers, and the refusals (other trainers, changed internals)."""

import os
import sys

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

import tailguard  # noqa: E402
from tailguard.capture import CaptureError, check_trl_version  # noqa: E402
from tiny import length_reward, prompt_dataset  # noqa: E402

NOWHERE = "tcp://127.0.0.1:9"


def dpo_dataset(n=8):
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [f"q{i}: say yes" for i in range(n)],
        "chosen": [" yes" + "!" * (i % 3) for i in range(n)],
        "rejected": [" no, never" + "?" * (i % 4) for i in range(n)],
    })


def test_rloo_per_token_old_and_ref(tiny, tmp_path):
    from trl import RLOOConfig, RLOOTrainer

    model_dir, tok = tiny
    args = RLOOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      gradient_accumulation_steps=1, max_steps=3, max_completion_length=8, num_iterations=2,
                      beta=0.1, logging_steps=1, report_to="none", learning_rate=1e-2, save_strategy="no", bf16=False)
    trainer = RLOOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward, args=args,
                          train_dataset=prompt_dataset())
    cb = tailguard.attach(trainer, endpoint=NOWHERE, retain_captured=True, connect_timeout_s=0.1)
    trainer.train()
    steps = cb.capture.captured
    assert [s for s, _ in steps] == [1, 2, 3]
    for _, a in steps:
        assert {"policy_vs_old", "policy_vs_ref", "offsets", "seq_ids", "group_ids", "advantages"} <= set(a)
        assert len(a["policy_vs_old"]) == a["offsets"][-1] > 0
        assert np.all(a["tool_mask"] == 1)
    # step 2 re-trains step 1's generation after one update (num_iterations=2): real drift.
    assert np.abs(steps[1][1]["policy_vs_old"]).max() > 1e-6
    assert np.abs(steps[-1][1]["policy_vs_ref"]).max() > 1e-6
    assert cb.capture.kind == "rloo"


def test_dpo_policy_vs_ref_chosen_rejected(tiny, tmp_path):
    from trl import DPOConfig, DPOTrainer

    model_dir, tok = tiny
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, logging_steps=1,
                     report_to="none", learning_rate=1e-2, save_strategy="no", beta=0.1, bf16=False)
    trainer = DPOTrainer(model=model_dir, processing_class=tok, args=args, train_dataset=dpo_dataset())
    cb = tailguard.attach(trainer, endpoint=NOWHERE, retain_captured=True, connect_timeout_s=0.1)
    assert cb.capture.slice_names == ["chosen", "rejected"]
    trainer.train()
    steps = cb.capture.captured
    assert len(steps) == 3
    for _, a in steps:
        assert set(a) >= {"policy_vs_ref", "slice_ids", "offsets", "seq_ids", "group_ids"}
        assert a["slice_ids"].dtype == np.uint16
        off = a["offsets"]
        n = len(off) - 1
        assert n == 4  # 2 pairs -> 2 chosen + 2 rejected rows
        # rows are [chosen; rejected]; each row's tokens carry its slice id, chosen/rejected share a group
        for i in range(n):
            assert np.all(a["slice_ids"][off[i] : off[i + 1]] == (0 if i < n // 2 else 1))
        np.testing.assert_array_equal(a["group_ids"][: n // 2], a["group_ids"][n // 2 :])
        lens = np.diff(off)
        assert np.all(lens[: n // 2] >= 2) and np.all(lens[n // 2 :] >= 4)  # " yes" / " no, never" in bytes
    assert np.abs(steps[0][1]["policy_vs_ref"]).max() == 0  # before any update the policy is the reference
    assert np.abs(steps[-1][1]["policy_vs_ref"]).max() > 0


def test_sft_is_refused_with_reason(tiny, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model_dir, tok = tiny
    trainer = SFTTrainer(model=model_dir, processing_class=tok,
                         args=SFTConfig(output_dir=str(tmp_path), report_to="none", max_steps=1, bf16=False),
                         train_dataset=Dataset.from_dict({"text": ["hello world"] * 4}))
    with pytest.raises(CaptureError, match="SFT has no importance ratios") as e:
        tailguard.attach(trainer, endpoint=NOWHERE)
    assert e.value.code == "E_UNSUPPORTED"
    assert "_compute_loss" not in vars(trainer)


def test_unknown_object_and_changed_internals_are_refused(tiny, tmp_path):
    with pytest.raises(CaptureError, match="supports TRL's GRPOTrainer"):
        tailguard.attach(object(), endpoint=NOWHERE)

    from trl import GRPOTrainer

    class RenamedInternals(GRPOTrainer):  # a TRL whose private names moved
        _get_per_token_logps_and_entropies = property(lambda self: (_ for _ in ()).throw(AttributeError("gone")))

    trainer = RenamedInternals.__new__(RenamedInternals)
    with pytest.raises(CaptureError, match="internals differ") as e:
        tailguard.attach(trainer, endpoint=NOWHERE)
    assert e.value.code == "E_TRL_INTERNALS"


def test_trl_version_gate():
    check_trl_version("1.16.0")
    check_trl_version("1.10.2")
    with pytest.raises(CaptureError, match="TAILGUARD_ALLOW_UNTESTED_TRL") as e:
        check_trl_version("2.0.0")
    assert e.value.code == "E_TRL_VERSION"
    check_trl_version("2.0.0", allow_untested=True)


def test_disabled_by_env_attaches_nothing(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TAILGUARD_DISABLE", "1")
    cb = tailguard.TailguardCallback(endpoint=NOWHERE)
    marker = object()
    assert cb.attach(marker) is cb and cb.capture is None
