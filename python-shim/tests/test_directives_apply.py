"""Directives applied on a real tiny GRPO trainer (hand-made directive dicts, no engine)."""

from __future__ import annotations

import json
import os

import pytest
from test_directives_tiny import ScriptedClient, build_grpo, drive, read_jsonl
from test_directives_tiny import one_torch_thread  # noqa: F401 - autouse fixture

from tailguard.control.directives import ALPHA_CEILING_ENV, ALPHA_CEILING_FILE, DirectiveApplier, read_knobs


def _run(tmp_path, script, *, observe=None, lost_at=None, fail_mode="fail_open", **kw):
    tr = build_grpo(tmp_path, **kw)
    client = ScriptedClient(tr, script, lost_at=lost_at)
    ap = DirectiveApplier(tr, client, fail_mode=fail_mode)
    drive(tr, ap, observe and (lambda s: observe(tr, s)))
    tr.train()
    return tr, ap, client


def test_tighten_applies_at_apply_at_step_and_acks_old_new(tmp_path):
    seen = {}
    d = {
        "id": "d-1", "action": "tighten", "apply_at_step": 3, "reason": "post_tool tail growth",
        "params": {"knobs": {"beta": 0.08, "epsilon_low": 0.1, "epsilon_high": 0.14, "off_policy_mask_threshold": 0.5}},
    }  # fmt: skip
    # Delivered at step 1, due at step 3: nothing may change before step 3.
    tr, ap, client = _run(tmp_path, {1: [d]}, beta=0.04, observe=lambda t, s: seen.update({s.global_step: read_knobs(t)}))
    assert seen[2]["beta"] == 0.04 and seen[2]["epsilon_low"] == 0.2
    assert seen[3]["beta"] == 0.08 and seen[3]["epsilon_low"] == 0.1 and seen[3]["epsilon_high"] == 0.14
    assert seen[3]["off_policy_mask_threshold"] == 0.5
    assert tr.state.global_step == 6  # training went on with the mask enabled
    (ack,) = client.acks
    assert ack["directive_id"] == "d-1" and ack["step"] == 3 and ack["applied"] and ack["refused"] is None
    assert {"knob": "beta", "old": 0.04, "new": 0.08} in ack["changes"]
    assert {"knob": "off_policy_mask_threshold", "old": None, "new": 0.5} in ack["changes"]
    log = read_jsonl(ap.log_path)
    assert [r["directive_id"] for r in log if r["event"] == "directive"] == ["d-1"]


def test_raising_beta_from_zero_is_refused_and_training_goes_on(tmp_path):
    d = {"id": "d-2", "action": "tighten", "apply_at_step": 2, "params": {"beta": 0.1, "epsilon_high": 0.15}}
    tr, ap, client = _run(tmp_path, {2: [d]}, beta=0.0)
    assert tr.state.global_step == 6 and tr.beta == 0.0
    assert tr.epsilon_high == 0.15  # the honourable part still applies
    (ack,) = client.acks
    assert ack["applied"] and "E_NO_REF_MODEL" in ack["refused"] and "resume_from_checkpoint" in ack["refused"]
    assert [c["knob"] for c in ack["changes"]] == ["epsilon_high"]
    (rec,) = [r for r in read_jsonl(ap.log_path) if r["event"] == "directive"]
    assert "E_NO_REF_MODEL" in rec["refused"]


def test_whole_refusal_is_not_applied(tmp_path):
    script = {
        1: [{"id": "a", "action": "tighten", "apply_at_step": 1, "params": {"knobs": {"temperature": 0.5}}}],
        2: [{"id": "b", "action": "explode", "apply_at_step": 2, "params": {}}],
        3: [{"id": "c", "action": "tighten", "apply_at_step": 3, "params": {"epsilon_low": float("nan")}}],
    }
    tr, ap, client = _run(tmp_path, script, max_steps=4)
    codes = [a["refused"].split(":")[0] for a in client.acks]
    assert codes == ["E_UNKNOWN_KNOB", "E_UNKNOWN_ACTION", "E_KNOB_VALUE"]
    assert not any(a["applied"] for a in client.acks) and tr.epsilon_low == 0.2 and tr.state.global_step == 4


def test_is_clip_max_sets_the_two_sided_clip_delta(tmp_path):
    d = {"id": "d-3", "action": "tighten", "apply_at_step": 1, "params": {"is_clip_max": 3.0}}
    tr, _, client = _run(tmp_path, {1: [d]}, max_steps=3)
    assert tr.args.delta == 3.0 and client.acks[0]["changes"] == [{"knob": "is_clip_max", "old": None, "new": 3.0}]


def test_stop_ends_training_at_that_step(tmp_path):
    tr, _, client = _run(tmp_path, {2: [{"id": "s", "action": "stop", "apply_at_step": 3, "params": {}}]})
    assert tr.state.global_step == 3 and client.acks[0]["applied"]
    # The ack must pass the wire spec the engine enforces (it once carried booleans: E_FIELD_TYPE).
    from tailguard.wire import PROTOCOL_VERSION, validate_header

    validate_header({"type": "ack", "version": list(PROTOCOL_VERSION), "run_id": "r", "rank": 0, **client.acks[0]})
    assert client.acks[0]["changes"] == [{"knob": "should_training_stop", "old": 0, "new": 1}]


def test_duplicate_and_noop_directives_are_ignored(tmp_path):
    d = {"id": "w", "action": "warn", "apply_at_step": 1, "reason": "exceedance", "params": {}}
    noop = {"id": "n", "action": "noop", "apply_at_step": 1, "params": {}}
    _, _, client = _run(tmp_path, {1: [d, noop, None], 2: [{"directive": d}]}, max_steps=3)
    assert [a["directive_id"] for a in client.acks] == ["w"] and client.acks[0]["applied"]


def test_curriculum_exposes_alpha_ceiling(tmp_path, monkeypatch):
    monkeypatch.delenv(ALPHA_CEILING_ENV, raising=False)
    d = {"id": "c", "action": "curriculum", "apply_at_step": 2, "params": {"alpha_ceiling": 0.25}}
    tr, ap, _ = _run(tmp_path, {1: [d]}, max_steps=3)
    assert ap.alpha_ceiling == 0.25 and float(os.environ[ALPHA_CEILING_ENV]) == 0.25
    with open(os.path.join(tmp_path, ALPHA_CEILING_FILE)) as f:
        assert json.load(f) == {"alpha_ceiling": 0.25, "step": 2}


@pytest.mark.parametrize("mode,steps", [("fail_open", 6), ("fail_closed", 3)])
def test_engine_loss_fail_open_goes_on_fail_closed_stops(tmp_path, mode, steps):
    tr, ap, _ = _run(tmp_path, {}, lost_at=3, fail_mode=mode)
    assert tr.state.global_step == steps
    lost = [r for r in read_jsonl(ap.log_path) if r["event"] == "engine_lost"]
    assert len(lost) == 1 and lost[0]["step"] == 3 and lost[0]["stop"] is (mode == "fail_closed")


def test_tightened_knobs_persist_across_resume(tmp_path):
    d = {"id": "t", "action": "tighten", "apply_at_step": 2, "params": {"beta": 0.02, "epsilon_high": 0.12}}
    tr, _, _ = _run(tmp_path, {1: [d]}, beta=0.04, max_steps=4, save_steps=4)
    state = json.load(open(os.path.join(tmp_path, "checkpoint-4", "tailguard_state.json")))
    assert state["knobs"]["beta"] == 0.02 and state["step"] == 4 and state["applied"] == ["t"]
    os.remove(os.path.join(tmp_path, "tailguard_state.json"))  # the checkpoint's copy alone must suffice
    tr2 = build_grpo(tmp_path, beta=0.04, max_steps=5)
    ap2 = DirectiveApplier(tr2, None)
    drive(tr2, ap2)
    tr2.train(resume_from_checkpoint=os.path.join(tmp_path, "checkpoint-4"))
    assert ap2.resumed_from.endswith("checkpoint-4")
    assert tr2.beta == 0.02 and tr2.epsilon_high == 0.12 and tr2.state.global_step == 5
