"""A step send that raises never skips the step-end exchange; under fail_closed every rank stops together.

Before the fix, fail_closed re-raised out of `on_step_end` on the failing rank: it never reached the
directive exchange, and the other ranks waited there until the process group timed out. The stop's outcome
is `TailguardStopped` raised from `train()` on every rank, after training ended cleanly.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from fake_engine import FakeEngine
from test_directives_tiny import build_grpo, read_jsonl
from test_directives_tiny import one_torch_thread  # noqa: F401 - autouse fixture
from tiny import run_torchrun

import tailguard
from tailguard.client import EngineClient

HERE = os.path.dirname(os.path.abspath(__file__))
FAIL_AT = 3


def _raise_at(step_to_fail: int, ranks=(0,)):
    original = EngineClient.send_step

    def send_step(self, step, *a, **kw):
        if step == step_to_fail and self.rank in ranks:
            raise RuntimeError(f"injected send failure at step {step}")
        return original(self, step, *a, **kw)

    return send_step


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
def test_a_raising_send_still_joins_the_exchange(tmp_path, monkeypatch, mode):
    engine = FakeEngine().start()
    try:
        tr = build_grpo(tmp_path / "out", max_steps=6)
        monkeypatch.setattr(EngineClient, "send_step", _raise_at(FAIL_AT))
        cb = tailguard.attach(tr, endpoint=engine.endpoint, fail_mode=mode, connect_timeout_s=5.0)
        error = None
        try:
            tr.train()  # never raises mid-step: the monitor must not take the trainer down inside a step
        except tailguard.TailguardStopped as e:
            error = e
    finally:
        engine.stop()
    log = read_jsonl(cb.directives.log_path) if os.path.exists(cb.directives.log_path) else []
    stops = [r for r in log if r["event"] == "rank_stop"]
    if mode == "fail_closed":
        assert tr.state.global_step == FAIL_AT
        assert error is not None and error.code == "E_SEND_FAILED" and error.step == FAIL_AT, error
        (stop,) = stops
        assert stop["step"] == FAIL_AT and stop["reasons"]["0"].startswith("E_SEND_FAILED")
        assert "injected send failure" in stop["reasons"]["0"]
    else:
        assert tr.state.global_step == 6 and stops == [] and error is None
    assert {s for _, s, _, _ in engine.steps} >= {1, 2, 4, 5, 6} - ({4, 5, 6} if mode == "fail_closed" else set())
    assert FAIL_AT not in {s for _, s, _, _ in engine.steps}


WORKER = textwrap.dedent(
    """
    import json, os, sys, torch
    sys.path.insert(0, {here!r})
    from fake_engine import FakeEngine
    from test_directives_send_fail import _raise_at
    from test_directives_tiny import build_grpo
    import tailguard
    from tailguard.client import EngineClient

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    engine = FakeEngine().start()  # one per rank: this test is about the shim's collectives only
    tr = build_grpo(out, max_steps=6, ddp_backend="gloo", ddp_timeout=60)
    EngineClient.send_step = _raise_at({fail_at}, ranks=(1,))
    cb = tailguard.attach(tr, endpoint=engine.endpoint, fail_mode="fail_closed")
    error = None
    try:
        tr.train()
    except tailguard.TailguardStopped as e:
        error = e.code
    engine.stop()
    with open(os.path.join(out, f"result.rank{{rank}}.json"), "w") as f:
        json.dump({{"step": tr.state.global_step, "error": error}}, f)
    torch.distributed.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def test_two_ranks_stop_together_when_one_cannot_send(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=HERE, fail_at=FAIL_AT))
    out = tmp_path / "out"
    run_torchrun(script, out, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    for r in (0, 1):
        assert json.load(open(out / f"result.rank{r}.json")) == {"step": FAIL_AT, "error": "E_SEND_FAILED"}
        (stop,) = [x for x in read_jsonl(out / f"tailguard-directives.rank{r}.jsonl") if x["event"] == "rank_stop"]
        assert stop["step"] == FAIL_AT and list(stop["reasons"]) == ["1"], stop
        assert stop["reasons"]["1"].startswith("E_SEND_FAILED")
