"""Closed loop end to end: a real tiny GRPO trainer on CPU, `tailguard.attach`, a real engine process.

The rollout_func returns honest rollout logprobs (the policy's own, plus small stationary noise) so the
`old_vs_rollout` pair carries signal. In the injected failure, the post-tool tokens' rollout logprobs
drift progressively off-policy from step ONSET on while the pre-tool tokens stay as they were.

Both runs use the same test policy (`TEST_POLICY`): the shipped ladder with checkpoint certification
sized for a 30-step run. Torch runs on one thread: on a shared 2-core box, intra-op threads make this
tiny model ~5x slower, not faster.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python-shim" / "tests"))
sys.path.insert(0, str(HERE))

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import tailguard  # noqa: E402
from tiny import build_tiny_lm, prompt_dataset, read_jsonl, start_engine  # noqa: E402

PRE, TOOL, POST = 8, 4, 8
SAVE_STEPS = 5
ONSET = 14  # after the mismatch baseline (10 steps) and the tail trend window (10 steps) have data
DRIFT_RATE = 0.25  # sigma of the post-tool shift grows by this per step from ONSET
DRIFT_STEPS = 34
# Each step's log waits for the engine's reply to that step (ms when idle), so a directive is due at
# the next step end; the cap only matters on a starved machine.
LOG_WAIT_S = 10.0

# The shipped default (ts-core/policy/default.yaml) with two changes for a run this short:
# - one tighten before rollback (the default allows two), so the whole ladder fits in ~10 steps;
# - checkpoint certification over the 5 steps up to a checkpoint and the 4 after it (the default
#   20/10 is sized for checkpoints hundreds of steps apart; here they are SAVE_STEPS apart).
# Detector thresholds, windows, hysteresis and directive spacing are the shipped ones.
TEST_POLICY = {"tighten": {"max_tightens": 1}, "checkpoints": {"window": 5, "certify_after": 4}}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class DriftingToolRollout:
    """Completions `PRE` model tokens, a `TOOL`-token tool span, `POST` model tokens.

    Rollout logprobs = the policy's logprob + N(0, 0.05); with `drift`, post-tool tokens get an extra
    shift |N(0, sigma(step))| with sigma growing linearly from ONSET: an inference engine serving stale
    post-tool logprobs. A full weight reload clears it: the shim's rollback requests one the way TRL's
    vLLM path reads it (`trainer._last_loaded_step = -1`), so after a rollback the rollouts are honest again.
    """

    def __init__(self, tokenizer, drift: bool, seed: int = 0):
        self.tok, self.drift = tokenizer, drift
        self.gen = torch.Generator().manual_seed(seed)
        self.reloads: list[int] = []  # steps at which a weight reload was requested

    def sigma(self, step: int) -> float:
        if not self.drift or step < ONSET or self.reloads:
            return 0.0
        return DRIFT_RATE * (step - ONSET + 1)

    def __call__(self, prompts, trainer):
        model = trainer.accelerator.unwrap_model(trainer.model)
        step = int(trainer.state.global_step)
        if getattr(trainer, "_last_loaded_step", None) == -1:
            self.reloads.append(step)
            trainer._last_loaded_step = step
        n, L = len(prompts), PRE + TOOL + POST + 1
        pids = [self.tok(p if isinstance(p, str) else p[-1]["content"])["input_ids"] for p in prompts]
        cids = torch.randint(65, 122, (n, L), generator=self.gen)
        cids[:, -1] = self.tok.eos_token_id
        width = max(map(len, pids))
        ids = torch.tensor([[self.tok.pad_token_id] * (width - len(p)) + p for p in pids])  # left padding
        ids = torch.cat([ids, cids], 1)
        attn = (torch.arange(ids.shape[1]) >= (width - torch.tensor([len(p) for p in pids]))[:, None]).long()
        with torch.no_grad():
            logits = model(ids, attention_mask=attn).logits[:, width - 1 : -1].float() / trainer.temperature
            lp = torch.log_softmax(logits, -1).gather(-1, cids[..., None])[..., 0]
        noise = 0.05 * torch.randn(n, L, generator=self.gen)
        post = torch.tensor([0.0] * (PRE + TOOL) + [1.0] * (POST + 1))
        noise += post * self.sigma(step) * torch.randn(n, L, generator=self.gen).abs()
        mask = [1] * PRE + [0] * TOOL + [1] * (POST + 1)
        return {
            "prompt_ids": pids,
            "completion_ids": cids.tolist(),
            "logprobs": (lp - noise).tolist(),  # old - rollout = +noise: the rollout is "colder"
            "env_mask": [mask] * n,
        }


def _trainer(tmp_path, *, drift, max_steps, beta=0.0, save_steps=SAVE_STEPS, seed=0):
    from trl import GRPOConfig, GRPOTrainer

    model_dir = tmp_path / "model"
    _, tok = build_tiny_lm(model_dir)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=4, max_steps=max_steps,
        beta=beta, max_completion_length=PRE + TOOL + POST + 1, logging_steps=1, report_to="none",
        learning_rate=5e-3, bf16=False, save_strategy="steps", save_steps=save_steps, save_total_limit=2,
        seed=seed, use_cpu=True, disable_tqdm=True, gradient_checkpointing=False,
    )  # fmt: skip
    tr = GRPOTrainer(
        model=str(model_dir), processing_class=tok, args=args, train_dataset=prompt_dataset(64),
        reward_funcs=lambda completions, **kw: [float(sum(map(ord, str(c))) % 7) for c in completions],
        rollout_func=DriftingToolRollout(tok, drift=drift, seed=seed),
    )  # fmt: skip
    tr._last_loaded_step = 0  # an inference engine whose weights can be reloaded (see DriftingToolRollout)
    return tr


def _policy(tmp_path) -> str:
    p = tmp_path / "policy.json"
    p.write_text(json.dumps(TEST_POLICY))
    return str(p)


def _shim_log(trainer, rank=0) -> list[dict]:
    path = Path(trainer.args.output_dir) / f"tailguard-directives.rank{rank}.jsonl"
    return read_jsonl(path) if path.exists() else []


def _engine_log(engine_run_dir, run_id, name="directives.jsonl") -> list[dict]:
    path = Path(engine_run_dir) / run_id / name
    return read_jsonl(path) if path.exists() else []


def _q99(metrics, pair, slice_, steps) -> list[float]:
    by_step = {m["step"]: m["abs_q99"] for m in metrics if m["pair"] == pair and m["slice"] == slice_}
    return [by_step[s] for s in steps if s in by_step]


def test_healthy_run_issues_nothing_beyond_warn(tmp_path):
    tr = _trainer(tmp_path, drift=False, max_steps=30)
    engine = start_engine(tmp_path / "runs", ["--policy", _policy(tmp_path)])
    try:
        cb = tailguard.attach(tr, endpoint=engine.endpoint, run_id="healthy", log_wait_s=LOG_WAIT_S)
        tr.train()
    finally:
        engine.stop()
    assert tr.state.global_step == 30
    assert cb.last_client.stats["sent"] >= 30
    shim = [r for r in _shim_log(tr) if r["event"] == "directive"]
    assert all(r["action"] == "warn" for r in shim), shim
    story = _engine_log(tmp_path / "runs", "healthy")
    directives = [r for r in story if r.get("kind") == "directive"]
    assert all(r["action"] in ("warn", "noop") for r in directives), directives
    # The same policy that rolls the drifting run back certifies this run's checkpoints.
    certified = [r["step"] for r in story if r.get("kind") == "checkpoint" and r["status"] == "certified"]
    assert certified and set(certified) <= set(range(SAVE_STEPS, 31, SAVE_STEPS)), story
    # The engine saw every step's post_tool slice, with the signal it needs.
    assert any(k.startswith("tailguard/old_vs_rollout/post_tool/") for e in tr.state.log_history for k in e)


def test_injected_post_tool_drift_tightens_then_rolls_back(tmp_path, caplog):
    tr = _trainer(tmp_path, drift=True, max_steps=DRIFT_STEPS)
    engine = start_engine(tmp_path / "runs", ["--policy", _policy(tmp_path)])
    weights = {}

    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class AfterRollback(TrainerCallback):  # added after tailguard's callback: sees the restored weights
        def on_step_end(self, args, state, control, **kw):
            for r in _shim_log(tr)[-3:]:
                if r.get("action") == "rollback" and r["applied"] and r["step"] == state.global_step:
                    saved = load_file(os.path.join(r["changes"][0]["path"], "model.safetensors"))
                    w = tr.model.state_dict()
                    weights["equal"] = all(torch.equal(w[k], v) for k, v in saved.items())
                    weights["saved"] = {k: v.clone() for k, v in saved.items()}

    try:
        cb = tailguard.attach(tr, endpoint=engine.endpoint, run_id="drift", log_wait_s=LOG_WAIT_S)
        tr.add_callback(AfterRollback())
        tr.train()
    finally:
        engine.stop()
    runs = tmp_path / "runs"
    shim = [r for r in _shim_log(tr) if r["event"] == "directive"]
    story = _engine_log(runs, "drift")
    kinds = [(r["kind"], r.get("action") or r.get("detector") or r.get("status"), r.get("step")) for r in story]
    print("\n".join(map(str, kinds)))  # shown on failure
    actions = [r["action"] for r in shim if r["action"] != "warn"]
    assert actions == ["tighten", "rollback"], (actions, kinds)
    engine_directives = {r["id"]: r for r in story if r["kind"] == "directive"}
    acks = {r["directive_id"]: r for r in story if r["kind"] == "ack"}

    # 1. Detection: the post_tool tail grew after ONSET while pre_tool stayed in its band.
    growth = [r for r in story if r["kind"] == "finding" and r["detector"] == "post_tool_tail_growth"]
    first = growth[0]
    assert first["slice"] == "post_tool" and first["pair"] == "old_vs_rollout" and first["step"] > ONSET
    assert first["severity"] in ("warn", "high") and "pre_tool within its band" in first["message"]
    assert not [r for r in story if r["kind"] == "finding" and r.get("slice") == "pre_tool"]
    metrics = _engine_log(runs, "drift", "metrics.jsonl")
    before, during = range(1, ONSET), range(ONSET, first["step"] + 1)
    pre_before, pre_during = _q99(metrics, "old_vs_rollout", "pre_tool", before), _q99(metrics, "old_vs_rollout", "pre_tool", during)
    post_before, post_during = _q99(metrics, "old_vs_rollout", "post_tool", before), _q99(metrics, "old_vs_rollout", "post_tool", during)
    assert max(pre_during) < 1.5 * max(pre_before), (pre_before, pre_during)
    assert max(post_during) > 3 * max(post_before), (post_before, post_during)

    # 2. tighten: applied on the shim at apply_at_step, beta refused (no reference model) on both sides.
    tighten = shim[[r["action"] for r in shim].index("tighten")]
    d = engine_directives[tighten["directive_id"]]
    # Applied at apply_at_step, or at the first step end after it when the reply came late (a loaded box).
    assert d["step"] >= first["step"] and tighten["step"] >= d["apply_at_step"] and tighten["applied"], (d, tighten)
    assert {c["knob"]: (c["old"], c["new"]) for c in tighten["changes"]} == {
        k: (d["evidence"]["knobs"][k], v) for k, v in d["params"].items() if k != "beta"
    }
    assert {"epsilon_low", "epsilon_high"} <= {c["knob"] for c in tighten["changes"]}
    assert tr.epsilon_low == d["params"]["epsilon_low"] and tr.beta == 0.0
    assert tighten["refused"].startswith("E_NO_REF_MODEL") and "E_NO_REF_MODEL" in acks[d["id"]]["refused"]
    assert any(f"refused tighten {d['id']}" in m and "E_NO_REF_MODEL" in m for m in caplog.messages)  # the trainer's log
    assert acks[d["id"]]["applied"] is True and acks[d["id"]]["changes"] == [
        {k: c[k] for k in ("knob", "old", "new")} for c in tighten["changes"]
    ]

    # 3. rollback to the newest checkpoint the engine certified; weights bit for bit; training went on.
    rb = shim[[r["action"] for r in shim].index("rollback")]
    d = engine_directives[rb["directive_id"]]
    target = d["params"]["checkpoint"]
    # The tighten took effect (epsilons), so it got min_steps_between_directives (default 5) to act.
    assert d["step"] - engine_directives[tighten["directive_id"]]["step"] >= 5, (d, tighten)
    assert rb["step"] >= d["apply_at_step"] and rb["applied"], (d, rb)
    certified = [r for r in story[: story.index(d)] if r["kind"] == "checkpoint" and r["status"] == "certified"]
    assert certified and target == {"step": certified[-1]["step"], "path": certified[-1]["path"]}
    assert target["step"] < ONSET  # certified on healthy steps only
    assert any(r["kind"] == "checkpoint" and r["status"] == "rejected" and r["step"] >= ONSET for r in story)
    assert rb["changes"][0]["new"] == target["step"] and os.path.samefile(rb["changes"][0]["path"], target["path"])
    assert acks[d["id"]]["applied"] is True and acks[d["id"]]["refused"] is None
    assert weights.get("equal") is True, weights.keys()
    assert tr.rollout_func.reloads == [rb["step"]], tr.rollout_func.reloads  # the next generation: restored policy
    assert tr.state.global_step == DRIFT_STEPS > rb["step"] + 3, (tr.state.global_step, rb)
    w = tr.model.state_dict()
    assert not all(torch.equal(w[k], v) for k, v in weights["saved"].items())  # it kept training
    steps = {r["step"] for r in _engine_log(runs, "drift", "steps.jsonl")}
    assert set(range(rb["step"], DRIFT_STEPS + 1)) <= steps
    # After the rollback the loop settles: no further control directive.
    assert [r["action"] for r in engine_directives.values() if r["action"] != "warn"] == ["tighten", "rollback"]
    assert not cb.last_client.errors, cb.last_client.errors
    # 4. The findings and directives are events in the trainer's own logs (W&B, TensorBoard see them).
    events = {k: v for e in tr.state.log_history for k, v in e.items() if k.startswith("tailguard/event/")}
    assert events.get("tailguard/event/directive/tighten") == 0.5, events  # partly applied: beta refused
    assert events.get("tailguard/event/directive/rollback") == 1.0, events
    assert events.get("tailguard/event/post_tool_tail_growth", 0) >= 1, events


def test_fail_closed_stops_training_when_the_engine_is_killed(tmp_path):
    """No clock in the verdict: the kill callback waits (hang guard only) until the client has seen the
    session go, and the very next tailguard boundary stops every rank and `train()` raises."""
    from transformers import TrainerCallback

    tr = _trainer(tmp_path, drift=False, max_steps=40, save_steps=100)
    engine = start_engine(tmp_path / "runs")
    attached = {}

    class Kill(TrainerCallback):  # runs before tailguard's callback at each step end
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                engine.stop()  # the monitor dies mid-run
                client, deadline = attached["cb"].client, time.monotonic() + 60
                while client.connected and time.monotonic() < deadline:  # hang guard, not a timing assertion
                    time.sleep(0.02)

    try:
        tr.add_callback(Kill())
        attached["cb"] = cb = tailguard.attach(tr, endpoint=engine.endpoint, run_id="closed", fail_mode="fail_closed",
                                               engine_lost_after_s=3600)  # the time rule cannot be what stops it
        with pytest.raises(tailguard.TailguardStopped) as stopped:
            tr.train()
    finally:
        engine.stop()
    assert stopped.value.code == "E_ENGINE_LOST" and stopped.value.step == 5, stopped.value
    assert tr.state.global_step == 5
    (stop,) = [r for r in _shim_log(tr) if r["event"] == "rank_stop"]
    assert stop["step"] == 5 and stop["reasons"]["0"].startswith("E_ENGINE_LOST"), stop
    st = cb.last_client.stats  # after close: every step is recorded or dropped, none both, none neither
    assert st["recorded"] + st["dropped"] + st["unconfirmed"] == 5 and st["queued"] == 0 and st["dropped"] >= 1, st


def test_fail_open_keeps_training_when_the_engine_is_killed(tmp_path):
    from transformers import TrainerCallback

    tr = _trainer(tmp_path, drift=False, max_steps=12, save_steps=100)
    engine = start_engine(tmp_path / "runs")

    attached = {}

    class Kill(TrainerCallback):  # runs before tailguard's callback at each step end
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                engine.stop()
            elif state.global_step == 4:
                # However loaded the machine: let the client notice the engine is gone (heartbeat/monitor)
                # before tailguard's check of this step starts the 0.2 s grace...
                client, deadline = attached["cb"].last_client, time.monotonic() + 15
                while client is not None and client.connected and time.monotonic() < deadline:
                    time.sleep(0.05)
            elif state.global_step == 5:
                time.sleep(0.5)  # ...and let the grace run out before the next check.

    try:
        tr.add_callback(Kill())
        attached["cb"] = tailguard.attach(tr, endpoint=engine.endpoint, run_id="open", engine_lost_after_s=0.2)
        tr.train()
    finally:
        engine.stop()
    assert tr.state.global_step == 12
    lost = [r for r in _shim_log(tr) if r["event"] == "engine_lost"]
    assert len(lost) == 1 and lost[0]["stop"] is False
