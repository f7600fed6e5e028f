"""In-process rollback on a real tiny GRPO trainer, and checkpoint protection from rotation."""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file
from test_directives_tiny import ScriptedClient, build_grpo, drive, read_jsonl
from test_directives_tiny import one_torch_thread  # noqa: F401 - autouse fixture

from tailguard.control.checkpoints import PROTECTED_DIR, CheckpointKeeper
from tailguard.control.directives import DirectiveApplier


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_rollback_restores_weights_optimizer_scheduler_rng_bit_for_bit(tmp_path):
    tr = build_grpo(tmp_path, max_steps=8, save_steps=2, save_total_limit=1)
    d = {"id": "rb", "action": "rollback", "apply_at_step": 5, "params": {"checkpoint": {"step": 2, "path": None}}}
    client = ScriptedClient(tr, {4: [d]})
    ap = DirectiveApplier(tr, client)
    after = {}

    def observe(state):
        if state.global_step == 5:
            after["weights"] = _weights(tr.model)
            after["opt"] = {k: v.clone() for k, v in tr.optimizer.state_dict()["state"][0].items()}
            after["lr_epoch"] = tr.lr_scheduler.state_dict()["last_epoch"]
            after["buffered"] = tr._buffered_inputs
            after["grads"] = [p.grad for p in tr.model.parameters()]
            after["rng"] = torch.random.get_rng_state().clone()

    drive(tr, ap, observe)
    tr.train()

    # save_total_limit=1 rotated checkpoint-2 out of output_dir; the protected copy served the rollback.
    assert not os.path.isdir(os.path.join(tmp_path, "checkpoint-2"))
    ckpt = os.path.join(tmp_path, PROTECTED_DIR, "checkpoint-2")
    saved = load_file(os.path.join(ckpt, "model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(after["weights"][name], tensor), name  # bit for bit
    saved_opt = torch.load(os.path.join(ckpt, "optimizer.pt"), weights_only=True)["state"][0]
    for k, v in saved_opt.items():
        assert torch.equal(after["opt"][k], v), k
    assert after["lr_epoch"] == torch.load(os.path.join(ckpt, "scheduler.pt"), weights_only=True)["last_epoch"] == 2
    assert torch.equal(after["rng"], torch.load(os.path.join(ckpt, "rng_state.pth"), weights_only=False)["cpu"])
    assert after["buffered"] is None and all(g is None for g in after["grads"])
    # Training went on past the rollback, with weights moving again.
    assert tr.state.global_step == 8
    assert any(not torch.equal(v, saved[k]) for k, v in _weights(tr.model).items() if k in saved)
    (ack,) = client.acks
    assert ack["applied"] and ack["changes"] == [{"knob": "checkpoint", "old": 5, "new": 2}]
    (rec,) = [r for r in read_jsonl(ap.log_path) if r["event"] == "directive"]
    assert rec["changes"][0]["path"] == ckpt and rec["step"] == 5


def test_rollback_refused_without_optimizer_state(tmp_path):
    tr = build_grpo(tmp_path, max_steps=5, save_steps=2, save_only_model=True)
    d = {"id": "rb", "action": "rollback", "apply_at_step": 3, "params": {"step": 2}}
    client = ScriptedClient(tr, {3: [d]})
    drive(tr, DirectiveApplier(tr, client))
    tr.train()
    assert tr.state.global_step == 5
    assert not client.acks[0]["applied"] and client.acks[0]["refused"].startswith("E_ROLLBACK_NO_OPTIMIZER")


def test_rollback_to_unknown_checkpoint_is_refused(tmp_path):
    tr = build_grpo(tmp_path, max_steps=3)
    client = ScriptedClient(tr, {2: [{"id": "x", "action": "rollback", "apply_at_step": 2, "params": {"step": 99}}]})
    drive(tr, DirectiveApplier(tr, client))
    tr.train()
    assert client.acks[0]["refused"].startswith("E_ROLLBACK_NOT_FOUND") and tr.state.global_step == 3


def test_keeper_keeps_last_k_certified_and_newer_pending(tmp_path):
    k = CheckpointKeeper(str(tmp_path), keep_certified=2, keep_uncertified=2)
    for step in (2, 4, 6, 8, 10, 12):
        os.makedirs(tmp_path / f"checkpoint-{step}")
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"w%d" % step)
        k.on_save(step, {"knobs": {}})
        if step in (2, 4, 6):
            k.mark_certified([{"step": step, "path": "x"}])
    # certified 4 and 6 (last K=2), then the 2 oldest awaiting a verdict (the engine decides those first).
    assert k.protected_steps() == [4, 6, 8, 10]
    # Hard links: the copy survives the original's deletion, same bytes.
    os.remove(tmp_path / "checkpoint-4" / "model.safetensors")
    assert (tmp_path / PROTECTED_DIR / "checkpoint-4" / "model.safetensors").read_bytes() == b"w4"
    assert k.resolve(path=str(tmp_path / "checkpoint-4")) == str(tmp_path / PROTECTED_DIR / "checkpoint-4")
    assert [n["step"] for n in k.take_notices()] == [2, 4, 6, 8, 10, 12] and k.take_notices() == []
