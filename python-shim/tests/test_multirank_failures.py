"""A failure on one rank never leaves the other ranks waiting in a collective (2 gloo processes, real TRL).

- fail_closed, the engine unreachable from rank 1 only: `on_train_begin` gathers every rank's connect
  outcome, so both ranks raise the same error before the first step (before the fix rank 0 went on into
  DDP's first all-reduce and waited there for `ddp_timeout`).
- sketch mode, rank 1's sketch fails before the reduce: it joins the reduce with an empty part flagged
  `failed`, rank 0 sends nothing for that step, and training goes on (fail_open) or every rank stops at
  that step and `train()` raises `TailguardStopped` on both (fail_closed).
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from test_directives_tiny import read_jsonl
from tiny import run_torchrun

HERE = os.path.dirname(os.path.abspath(__file__))
FAIL_AT = 3

WORKER = textwrap.dedent(
    """
    import json, os, socket, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {here!r})
    from fake_engine import FakeEngine
    from test_directives_tiny import build_grpo
    import tailguard, tailguard.sketch.send

    case, fail_mode, out = sys.argv[1], sys.argv[2], sys.argv[3]
    rank = int(os.environ["RANK"])
    mode = "sketch" if case.endswith("sketch") else "raw"
    # Only rank 0's engine rejects: each rank has its own fake engine in raw mode, and two rejections would
    # race for which rank's drop is seen first at the boundary.
    engine = FakeEngine(reject_steps=frozenset({{{fail_at}}} if case.startswith("drop") and rank == 0 else ())).start()
    endpoint = engine.endpoint
    opts = dict(fail_mode=fail_mode, connect_timeout_s=1.0, mode=mode)
    if case == "absent-sketch":  # no engine at all
        engine.stop()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{{s.getsockname()[1]}}"
    if case == "connect" and rank == 1:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{{s.getsockname()[1]}}"
    if case == "sketch":
        if rank == 1:
            original = tailguard.sketch.send.sketch_payload
            def sketch_payload(arrays, names, knobs=None, device=None, **kw):
                if tr.state.global_step == {fail_at}:
                    raise RuntimeError("injected sketch failure")
                return original(arrays, names, knobs, device, **kw)
            tailguard.sketch.send.sketch_payload = sketch_payload  # where send_capture_step looks it up
    tr = build_grpo(out, max_steps=6, ddp_backend="gloo", ddp_timeout=30)
    cb = tailguard.attach(tr, endpoint=endpoint, **opts)
    error = None
    try:
        tr.train()
    except RuntimeError as e:
        error = str(e)
    engine.stop()
    drops = cb.last_client.stats["dropped"] if cb.last_client is not None else None
    with open(os.path.join(out, f"result.rank{{rank}}.json"), "w") as f:
        json.dump({{"step": tr.state.global_step, "error": error, "sent": sorted({{s for _, s, _, _ in engine.steps}}),
                   "dropped": drops}}, f)
    torch.distributed.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def run_two_ranks(tmp_path, case: str, fail_mode: str) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=HERE, fail_at=FAIL_AT))
    out = tmp_path / "out"
    out.mkdir()
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1"}
    run_torchrun(script, case, fail_mode, out, env=env, timeout=240)  # fails the test unless both exit 0
    return [json.load(open(out / f"result.rank{r}.json")) for r in (0, 1)], out


def test_fail_closed_connect_failure_on_one_rank_raises_on_every_rank(tmp_path):
    results, _ = run_two_ranks(tmp_path, "connect", "fail_closed")
    for r in results:
        assert r["step"] == 0, r  # nobody trained a step
        assert r["error"] is not None and r["error"].startswith("tailguard (fail_closed): rank 1: E_UNREACHABLE: engine unreachable"), r
        assert "rank 0" not in r["error"]
    assert results[0]["error"] == results[1]["error"]


@pytest.mark.parametrize("fail_mode", ["fail_open", "fail_closed"])
def test_sketch_failure_on_one_rank_still_joins_the_reduce(tmp_path, fail_mode):
    results, out = run_two_ranks(tmp_path, "sketch", fail_mode)
    if fail_mode == "fail_open":
        assert all(r["error"] is None for r in results), results
    else:  # the stop's outcome: TailguardStopped from train() on both ranks
        assert all(r["error"].startswith("tailguard (fail_closed): rank 1: E_SEND_FAILED") for r in results), results
    assert results[1]["sent"] == []  # sketch mode: only rank 0 talks to the engine
    if fail_mode == "fail_open":
        assert [r["step"] for r in results] == [6, 6]
        assert results[0]["sent"] == [1, 2, 4, 5, 6]  # the step with a failed part is not sent
    else:
        assert [r["step"] for r in results] == [FAIL_AT, FAIL_AT]
        assert results[0]["sent"] == [1, 2]
        for r in (0, 1):
            (stop,) = [x for x in read_jsonl(out / f"tailguard-directives.rank{r}.jsonl") if x["event"] == "rank_stop"]
            assert stop["step"] == FAIL_AT and list(stop["reasons"]) == ["1"], stop
            assert "injected sketch failure" in stop["reasons"]["1"]


@pytest.mark.parametrize("case", ["drop-raw", "drop-sketch"])
def test_fail_closed_a_step_the_engine_rejects_stops_every_rank_together(tmp_path, case):
    """The engine rejects step FAIL_AT from rank 0 (sketch mode: the only sender). The drop is seen
    asynchronously, so the stop comes at the first boundary after it is known, the same on both ranks, and
    `train()` raises on both. Before: sketch mode never noticed (the step was "queued"), and a drop seen at
    send time stopped rank 0 alone (a collective mismatch under gloo, a hang under NCCL)."""
    results, out = run_two_ranks(tmp_path, case, "fail_closed")
    steps = {r["step"] for r in results}
    assert len(steps) == 1 and FAIL_AT <= steps.pop() < 6, results
    for r in results:
        assert r["error"] is not None and "E_STEP_DROPPED" in r["error"] and "rank 0" in r["error"], r
    assert results[0]["dropped"] >= 1
    for r in (0, 1):
        (stop,) = [x for x in read_jsonl(out / f"tailguard-directives.rank{r}.jsonl") if x["event"] == "rank_stop"]
        assert "0" in stop["reasons"] and stop["reasons"]["0"].startswith("E_STEP_DROPPED"), stop


def test_sketch_mode_without_an_engine_trains_and_shuts_down_cleanly(tmp_path):
    """fail_open, no engine: rank 0 counts every step dropped while it closes its client; both ranks leave
    tailguard's shutdown together (a barrier), and both processes exit 0 (run_torchrun checks)."""
    results, _ = run_two_ranks(tmp_path, "absent-sketch", "fail_open")
    assert [r["step"] for r in results] == [6, 6] and all(r["error"] is None for r in results), results
    assert results[0]["dropped"] == 6 and results[1]["dropped"] is None  # rank 1 holds no client in sketch mode
