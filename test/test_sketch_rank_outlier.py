"""Per-rank attribution in sketch mode, through a real engine process, on 2 gloo ranks.

Rank 1's tail is 6× wider than rank 0's. In raw mode every rank streams its tokens and the engine's
`rank_outlier` names rank 1. In sketch mode rank 0 alone sends the reduced sketch; with the per-rank
summary (`sketch_per_rank`, on by default at 2 ranks) the engine must raise the same finding for the same
rank, and its per-rank summaries must equal raw mode's (n and tokens exact, q99 and mean |ℓ| to 1e-12).
Without the summary (`sketch_per_rank=False`) sketch mode has nothing to attribute.
"""

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine_fixture import Engine  # noqa: E402

STEPS = 6
WORLD = 2
KNOBS = {"epsilon_low": 0.2, "epsilon_high": 0.28, "beta": 0.04}
RUNS = {"raw": ("raw", None), "sketch": ("sketch", None), "sketch-off": ("sketch", False)}


def shard(step: int, rank: int):
    rng = np.random.default_rng(100 * step + rank)
    lens = rng.integers(20, 80, 60)
    T = int(lens.sum())
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    tm = np.ones(T, np.uint8)
    for i in range(0, 60, 2):  # half the sequences have a tool call: post_tool tokens after it
        tm[off[i] + 5:off[i] + 8] = 0
    ref = (rng.standard_t(3, T) * 0.1).astype(np.float32)
    if rank == 1:  # the tail beyond the 90th percentile 6× wider
        tail = np.abs(ref) > np.quantile(np.abs(ref), 0.9)
        ref[tail] *= 6
    return {"policy_vs_ref": ref, "completion_mask": np.ones(T, np.uint8), "tool_mask": tm, "offsets": off}


def worker(rank, world, init_file, endpoint):
    import torch.distributed as dist

    from tailguard import sketch as S
    from tailguard.client import EngineClient

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    for run, (mode, option) in RUNS.items():
        client = None
        if mode == "raw" or rank == 0:
            client = EngineClient(endpoint, f"ro-{run}", rank=rank, world_size=world, mode=mode,
                                  send_budget_s=10.0, connect_timeout_s=60.0)
            client.connect()
        for step in range(1, STEPS + 1):
            arrays = shard(step, rank)
            if mode == "raw":
                client.send_step(step, arrays, knobs=KNOBS)
                continue
            sk = S.sketch_payload(arrays, ["policy_vs_ref"], KNOBS)
            sk = S.reduce_sketch(sk, per_rank=S.per_rank_enabled(option, dist.get_world_size()))
            if client is not None:
                assert S.send_sketch_step(client, step, sk, knobs=KNOBS)
        if client is not None:
            assert client.flush(60.0), client.stats
            assert client.stats["dropped"] == 0 and not client.errors, (client.stats, list(client.errors))
            client.close()
    dist.destroy_process_group()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with Engine(tmp_path_factory.mktemp("engine")) as eng:
        with tempfile.TemporaryDirectory() as d:
            mp.spawn(worker, args=(WORLD, os.path.join(d, "init"), eng.endpoint), nprocs=WORLD, join=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                any(e["step"] == STEPS for e in read_jsonl(eng.run_dir / f"ro-{r}" / "steps.jsonl")) for r in RUNS):
            time.sleep(0.1)
        yield {r: {k: read_jsonl(eng.run_dir / f"ro-{r}" / f"{k}.jsonl") for k in ("steps", "directives")}
               for r in RUNS}


def outliers(run: dict) -> list[dict]:
    return [e for e in run["directives"] if e.get("kind") == "finding" and e.get("detector") == "rank_outlier"]


def test_sketch_mode_raises_rank_outlier_for_the_same_rank_as_raw_mode(runs):
    raw, sk = outliers(runs["raw"]), outliers(runs["sketch"])
    assert raw and {f["rank"] for f in raw} == {1}
    assert sk and {f["rank"] for f in sk} == {1}
    assert [(f["step"], f["slice"], f["severity"]) for f in sk] == [(f["step"], f["slice"], f["severity"]) for f in raw]
    ratio = sk[0]["evidence"]["values"]["ratio"]
    assert ratio > 4, sk[0]["message"]  # the 6× tail, seen through the per-rank q99
    assert not outliers(runs["sketch-off"])  # no summary, no attribution
    assert all(e["per_rank"] == [] for e in runs["sketch-off"]["steps"])


def test_sketch_per_rank_summaries_equal_raw_modes(runs):
    raw = {e["step"]: e for e in runs["raw"]["steps"]}
    sk = {e["step"]: e for e in runs["sketch"]["steps"]}
    assert set(raw) == set(sk) == set(range(1, STEPS + 1))
    rows = 0
    for step, r in raw.items():
        s = sk[step]
        assert s["tokens_per_rank"] == r["tokens_per_rank"] and s["tokens"] == r["tokens"]
        for a, b in zip(r["per_rank"], s["per_rank"], strict=True):
            assert a["rank"] == b["rank"] and a["pairs"].keys() == b["pairs"].keys()
            for slice_, x in a["pairs"]["policy_vs_ref"].items():
                y = b["pairs"]["policy_vs_ref"][slice_]
                assert x["n"] == y["n"], (step, slice_)
                for f, tol in (("abs_q99", 1e-12), ("abs_mean", 1e-12), ("ess", 1e-9)):
                    assert math.isclose(x[f], y[f], rel_tol=tol), (step, a["rank"], slice_, f, x[f], y[f])
                rows += 1
    assert rows >= STEPS * WORLD * 3
