"""The keeper keeps every copy the engine may still certify, however late its verdict arrives."""

from __future__ import annotations

import os

from test_directives_tiny import ScriptedClient, build_grpo, drive
from test_directives_tiny import one_torch_thread  # noqa: F401 - autouse fixture

from tailguard.control.checkpoints import PROTECTED_DIR, CheckpointKeeper
from tailguard.control.directives import DirectiveApplier


def _save(k, tmp_path, step, rotate_out=True):
    """What TRL does on save (then rotates the original away, as save_total_limit would)."""
    src = tmp_path / f"checkpoint-{step}"
    os.makedirs(src)
    (src / "model.safetensors").write_bytes(b"w%d" % step)
    k.on_save(step, {"knobs": {}})
    if rotate_out:
        for f in os.listdir(src):
            os.remove(src / f)
        os.rmdir(src)


def test_late_certification_after_many_newer_saves_finds_the_copy(tmp_path):
    # A starved engine certifies checkpoint 10 only after six newer saves (the old keeper kept 4).
    k = CheckpointKeeper(str(tmp_path))
    for step in range(10, 45, 5):
        _save(k, tmp_path, step)
    k.mark_certified([{"step": 10, "path": "x"}])
    assert k.resolve(step=10) == str(tmp_path / PROTECTED_DIR / "checkpoint-10")
    assert (tmp_path / PROTECTED_DIR / "checkpoint-10" / "model.safetensors").read_bytes() == b"w10"
    assert k.protected_steps() == [10, 15, 20, 25, 30, 35, 40]


def test_rejected_copies_are_dropped_and_older_than_newest_certified(tmp_path):
    k = CheckpointKeeper(str(tmp_path), keep_certified=1)
    for step in (10, 15, 20, 25):
        _save(k, tmp_path, step)
    k.mark_rejected([{"step": 15, "path": "x"}], at_step=26)
    assert k.protected_steps() == [10, 20, 25]
    # 20 certified: 10 (undecided in our view) predates it, and the engine decides in step order.
    k.mark_certified([{"step": 20, "path": "x"}])
    assert k.protected_steps() == [20, 25]
    # A verdict from before a step was saved is about an older copy there (a resumed run): ignored.
    k.mark_rejected([25], at_step=24)
    assert k.protected_steps() == [20, 25]


def test_cap_keeps_the_oldest_waiting_copies(tmp_path):
    k = CheckpointKeeper(str(tmp_path), keep_uncertified=3)
    for step in (2, 4, 6, 8, 10):
        _save(k, tmp_path, step, rotate_out=False)
    # The engine decides the oldest first, so those stay; 8 and 10 are left to TRL's own folders.
    assert k.protected_steps() == [2, 4, 6]
    notices = k.take_notices()
    assert [n["path"] for n in notices][-1] == os.path.abspath(tmp_path / "checkpoint-10")
    assert k.resolve(step=10) == str(tmp_path / "checkpoint-10")
    k.mark_rejected([2, 4], at_step=11)
    _save(k, tmp_path, 12)
    assert k.protected_steps() == [6, 12]


def test_rollback_to_a_checkpoint_certified_after_five_newer_saves(tmp_path):
    # Real trainer: save every step, rotation keeps 1; the engine certifies 1 only at step 7.
    tr = build_grpo(tmp_path, max_steps=8, save_steps=1, save_total_limit=1)
    noop = {"id": "r/7/noop", "action": "noop", "step": 7, "params": {"certified_checkpoints": [{"step": 1, "path": None}]}}
    rb = {"id": "rb", "action": "rollback", "step": 7, "apply_at_step": 7, "params": {"checkpoint": {"step": 1, "path": None}}}
    client = ScriptedClient(tr, {7: [noop, rb]})
    drive(tr, DirectiveApplier(tr, client))
    tr.train()
    assert not os.path.isdir(tmp_path / "checkpoint-1")
    (ack,) = client.acks
    assert ack["applied"], ack["refused"]
    assert ack["changes"] == [{"knob": "checkpoint", "old": 7, "new": 1}]
