"""Two processes (torchrun, gloo) under a real engine apply the same directives at the same step.

Each rank runs a real tiny GRPO trainer with the drifting tool rollout of test_control_e2e.py (its own
shard and noise); the engine merges both ranks' steps, detects the post_tool tail growth and answers
rank 0 with `tighten` (beta refused: no reference model) and then `rollback`. Rank 0 broadcasts them;
both ranks must apply each one at the same step with the same old -> new values, both must ack it to
the engine, and after the rollback both hold the certified checkpoint's weights bit for bit.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "python-shim" / "tests"
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(HERE))

pytest.importorskip("trl")

from test_control_e2e import DRIFT_STEPS, ONSET, PRE, POST, SAVE_STEPS, TEST_POLICY, TOOL  # noqa: E402
from tiny import build_tiny_lm, read_jsonl, run_torchrun  # noqa: E402

# Rank 0 applies a directive at the first step end after it arrives. A tiny trainer (~50 ms a step) can
# run many steps ahead of an engine starved by a loaded box, so the worker paces rank 0 on the engine's
# replies (EnginePace) and the run leaves a few steps of room after the rollback.
STEPS = DRIFT_STEPS + 4

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path[:0] = [os.environ["TG_TESTS"], os.environ["TG_HERE"]]
    import torch
    import tailguard
    from safetensors.torch import load_file
    from test_control_e2e import DriftingToolRollout
    from tiny import prompt_dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model_dir, out, rank = os.environ["TG_MODEL"], os.environ["TG_OUT"], int(os.environ["RANK"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    length = {pre} + {tool} + {post} + 1
    args = GRPOConfig(
        output_dir=out, per_device_train_batch_size=8, num_generations=4, max_steps={steps}, beta=0.0,
        max_completion_length=length, logging_steps=1, report_to="none", learning_rate=5e-3, bf16=False,
        save_strategy="steps", save_steps={save_steps}, save_total_limit=2, seed=0, use_cpu=True,
        disable_tqdm=True, gradient_checkpointing=False, ddp_backend="gloo", ddp_timeout=120,
    )
    tr = GRPOTrainer(
        model=model_dir, processing_class=tok, args=args, train_dataset=prompt_dataset(64),
        reward_funcs=lambda completions, **kw: [float(sum(map(ord, str(c))) % 7) for c in completions],
        rollout_func=DriftingToolRollout(tok, drift=True, seed=10 + rank),
    )
    tr._last_loaded_step = 0
    restored = {{}}

    class AfterRollback(TrainerCallback):  # added after tailguard's callback: sees the restored weights
        def on_step_end(self, args, state, control, **kw):
            path = os.path.join(out, f"tailguard-directives.rank{{rank}}.jsonl")
            for r in open(path).read().splitlines()[-3:] if os.path.exists(path) else ():
                r = json.loads(r)
                if r.get("action") == "rollback" and r["applied"] and r["step"] == state.global_step:
                    saved = load_file(os.path.join(r["changes"][0]["path"], "model.safetensors"))
                    w = tr.accelerator.unwrap_model(tr.model).state_dict()
                    restored[state.global_step] = all(torch.equal(w[k], v) for k, v in saved.items())

    class EnginePace(TrainerCallback):  # after tailguard's: the trainer may not outrun the engine
        # Rank 0 waits (bounded) for the engine to have merged step - 2. Not log_wait_s (this step): rank 0's
        # reply can predate the step's merge (rank 1 not in yet), and the next reply only comes with rank 0's
        # next send. The directive decided at step N then lands by N + 3 however loaded the box is.
        def on_step_end(self, args, state, control, **kw):
            client = cb.client if rank == 0 else None
            deadline = time.monotonic() + 5.0
            while client is not None and time.monotonic() < deadline:
                done = client.latest_metrics()[0]
                if done is not None and done >= state.global_step - 2:
                    break
                time.sleep(0.005)

    cb = tailguard.attach(tr, endpoint=os.environ["TG_ENDPOINT"], run_id="ddp-control")
    tr.add_callback(AfterRollback())
    tr.add_callback(EnginePace())
    tr.train()
    with open(os.path.join(out, f"result.rank{{rank}}.json"), "w") as f:
        json.dump({{"step": tr.state.global_step, "restored": restored, "reloads": tr.rollout_func.reloads,
                   "errors": list(cb.last_client.errors), "epsilon_low": tr.epsilon_low, "beta": tr.beta}}, f)
    torch.distributed.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def _applied(log: list[dict]) -> list[tuple]:
    return [
        (r["directive_id"], r["action"], r["step"], r["applied"], json.dumps(r["changes"], sort_keys=True), r["refused"])
        for r in log
        if r["event"] == "directive"
    ]


def test_two_ranks_apply_the_engines_directives_at_the_same_step(tmp_path, start_engine):
    model_dir = tmp_path / "model"
    build_tiny_lm(model_dir)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(TEST_POLICY))
    engine = start_engine("--policy", str(policy))
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(pre=PRE, tool=TOOL, post=POST, steps=STEPS, save_steps=SAVE_STEPS))
    out = tmp_path / "out"
    env = {"TG_TESTS": str(TESTS), "TG_HERE": str(HERE), "TG_MODEL": str(model_dir), "TG_OUT": str(out),
           "TG_ENDPOINT": engine.endpoint, "HF_HUB_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    output = run_torchrun(script, env=env, nproc=2, timeout=300, launcher_args=["--standalone"])
    print(output[-6000:])  # shown on failure

    results = [json.loads((out / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    logs = [read_jsonl(out / f"tailguard-directives.rank{r}.jsonl") for r in (0, 1)]
    story = read_jsonl(engine.run_dir / "ddp-control" / "directives.jsonl")
    print("\n".join(str((r["kind"], r.get("action") or r.get("detector") or r.get("status"), r.get("step"), r.get("rank"))) for r in story))

    # The same directives, applied at the same steps with the same old -> new values, on both ranks.
    applied = [_applied(log) for log in logs]
    assert applied[0] == applied[1] and applied[0], applied
    by_action = {a: [x for x in applied[0] if x[1] == a] for a in ("tighten", "rollback")}
    assert len(by_action["tighten"]) == 1 and len(by_action["rollback"]) == 1, applied[0]
    (tid, _, tstep, tok, _, trefused), (rid, _, rstep, rok, _, _) = by_action["tighten"][0], by_action["rollback"][0]
    assert ONSET < tstep < rstep and tok and rok
    # beta 0 -> 0.04 is refused on both ranks (no reference model); the epsilons apply on both.
    assert trefused.startswith("E_NO_REF_MODEL")
    for res in results:
        assert res["beta"] == 0.0 and res["epsilon_low"] < 0.2 and res["step"] == STEPS and not res["errors"]
        assert res["restored"] == {str(rstep): True}  # the certified checkpoint's weights, bit for bit
        assert res["reloads"] == [rstep]  # both ranks regenerated from the restored policy

    # The engine's audit log has both ranks' acks of each directive, with what each applied or refused.
    directives = {r["id"]: r for r in story if r["kind"] == "directive"}
    for did, action, step, ok, changes, refused in applied[0]:
        assert directives[did]["action"] == action and directives[did]["apply_at_step"] <= step
        acks = sorted((r for r in story if r["kind"] == "ack" and r["directive_id"] == did), key=lambda r: r["rank"])
        assert [a["rank"] for a in acks] == [0, 1], (did, acks)
        for a in acks:
            assert a["step"] == step and a["applied"] == ok and a["refused"] == refused
            shim_changes = [{k: c[k] for k in ("knob", "old", "new")} for c in json.loads(changes)]
            assert sorted(a["changes"], key=str) == sorted(shim_changes, key=str)
    assert "E_NO_REF_MODEL" in [a for a in story if a["kind"] == "ack" and a["directive_id"] == tid][1]["refused"]
    assert directives[rid]["params"]["checkpoint"]["step"] < ONSET
    # The engine judged the merged step (both ranks) that led to the tighten.
    steps = {e["step"]: e for e in read_jsonl(engine.run_dir / "ddp-control" / "steps.jsonl")}
    assert steps[directives[tid]["step"]]["ranks_present"] == [0, 1]
