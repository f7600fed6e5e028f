"""Raw mode vs sketch mode on the same data, through a real engine process, on 1, 2 and 4 gloo ranks.

Each rank holds its own shard (heavy-tailed, one rank heavier, NaN/Inf and a ±60 ratio included). In raw
mode every rank streams its tokens; in sketch mode every rank sketches, the sketches are reduced with
torch.distributed over gloo, and rank 0 alone sends. Both carry the same user slices (`slice_ids`, NAMES).
The engine's metric records, user slices included, must agree: counts exactly; ESS and KL to 1e-12
relative; moments, χ² and fractions to 1e-9; quantiles within histogram accuracy:
inside the bins of the two exact order statistics around the quantile (one bin, 2^-6 relative, where they
share a bin; in a sparse tail raw mode interpolates between far-apart order statistics, the sketch cannot).
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
import torch
import torch.multiprocessing as mp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from engine_fixture import Engine  # noqa: E402

STEPS = 3
KNOBS = {"epsilon_low": 0.2, "epsilon_high": 0.28, "beta": 0.04}
EXACT = ("mean", "abs_mean", "std", "abs_max", "exceed_1_5", "exceed_2", "exceed_3", "ess", "ess_seq",
         "ess_seq_norm", "chi2", "kl_k1", "kl_k2", "kl_k3", "clip_frac", "alpha")
ESS_KL = ("ess", "ess_seq", "ess_seq_norm", "kl_k1", "kl_k2", "kl_k3")
QUANTILES = ("abs_q50", "abs_q90", "abs_q95", "abs_q99", "abs_q999")


def shard(step: int, rank: int):
    rng = np.random.default_rng(1000 * step + rank)
    n_seqs = 40 + 9 * rank
    lens = rng.integers(2, 120, n_seqs)
    T = int(lens.sum())
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    cm = (rng.random(T) > 0.03).astype(np.uint8)
    tm = np.ones(T, np.uint8)
    for i in range(n_seqs):
        if rng.random() < 0.6 and lens[i] > 6:
            s = off[i] + rng.integers(1, lens[i] - 4)
            tm[s:s + 3] = 0
    ref = (rng.standard_t(3, T) * (0.15 + 0.3 * rank)).astype(np.float32)
    mix = (rng.normal(0, 0.05, T) + (rng.random(T) < 0.02) * rng.normal(0, 2, T)).astype(np.float32)
    if rank == 1 and step == 1:
        ref[[3, 10]] = [np.nan, np.inf]
        ref[20] = 60.0
    ids = rng.choice(4, T, p=[0.5, 0.3, 0.15, 0.05]).astype(np.uint16)  # user slices; 3 is beyond NAMES: in none
    return {"policy_vs_ref": ref, "old_vs_rollout": mix, "completion_mask": cm, "tool_mask": tm, "offsets": off,
            "slice_ids": ids}


NAMES = ["turn_0", "turn_1", "tool:search"]


WORLDS = (1, 2, 4)


def worker(rank, world, init_file, endpoint):
    """One spawn of 4 processes serves every case: world w runs on the gloo subgroup of ranks 0..w-1."""
    import torch.distributed as dist

    from tailguard import sketch as S
    from tailguard.client import EngineClient

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    groups = {w: dist.new_group(list(range(w))) for w in WORLDS}  # every rank creates every group
    for w in WORLDS:
        if rank >= w:
            continue
        for mode in ("raw", "sketch"):
            client = None
            if mode == "raw" or rank == 0:
                client = EngineClient(endpoint, f"eq-{mode}-{w}", rank=rank, world_size=w, mode=mode,
                                      send_budget_s=10.0, connect_timeout_s=60.0)
                client.connect()
            for step in range(1, STEPS + 1):
                arrays = shard(step, rank)
                if mode == "raw":
                    client.send_step(step, arrays, knobs=KNOBS, slice_names=NAMES)
                else:
                    sk = S.sketch_payload(arrays, ["policy_vs_ref", "old_vs_rollout"], KNOBS, slice_names=NAMES)
                    sk = S.reduce_sketch(sk, group=groups[w])
                    if client is not None:
                        assert S.send_sketch_step(client, step, sk, knobs=KNOBS)
            if client is not None:
                assert client.flush(60.0), client.stats
                # Any error, the engine's or the client's own (an undecodable reply), fails the test.
                assert client.stats["dropped"] == 0 and not client.errors, (client.stats, list(client.errors))
                client.close()
    dist.destroy_process_group()


def read_metrics(path):
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            m = json.loads(line)
            out[(m["step"], m["pair"], m["slice"])] = m
    return out


def close(a, b, rel):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-300


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine and one spawn of 4 gloo processes for all three world sizes (the spawn dominates the cost)."""
    with Engine(tmp_path_factory.mktemp("engine")) as eng:
        with tempfile.TemporaryDirectory() as d:
            mp.spawn(worker, args=(max(WORLDS), os.path.join(d, "init"), eng.endpoint), nprocs=max(WORLDS), join=True)
        yield eng


def exact_bracket(step: int, world: int, pair: str, slice_: str, p: float) -> tuple[float, float]:
    """[lower edge of the bin of x_⌊h⌋, upper edge of the bin of x_⌈h⌉], h = p·(n−1), over the exact sorted
    finite |ℓ| of the slice: where any histogram quantile must land (sparse tails included)."""
    from tailguard import sketch as S

    vals = []
    for r in range(world):
        a = shard(step, r)
        code = S.slice_codes(*(torch.from_numpy(a[k]).to(torch.int64 if k == "offsets" else torch.uint8)
                               for k in ("completion_mask", "tool_mask", "offsets"))).numpy()
        if slice_.startswith("user:"):
            sel = (code < 2) & (a["slice_ids"] == NAMES.index(slice_[5:]))
        else:
            sel = (code < 2) if slice_ == "all" else code == ["pre_tool", "post_tool", "tool_output"].index(slice_)
        x = a[pair][sel]
        vals.append(np.abs(x[np.isfinite(x)]))
    v = np.sort(np.concatenate(vals))
    h = p * (v.size - 1)
    lo_bin = int(S.hist_bins(torch.tensor([v[math.floor(h)]], dtype=torch.float32))[0])
    hi_bin = int(S.hist_bins(torch.tensor([v[math.ceil(h)]], dtype=torch.float32))[0])
    return S.bin_edges(lo_bin)[0], min(S.bin_edges(hi_bin)[1], float(v[-1]))


@pytest.mark.parametrize("world", WORLDS)
def test_raw_and_sketch_give_the_same_metrics(world, engine):
    eng = engine
    deadline = time.monotonic() + 30
    paths = [eng.run_dir / f"eq-{m}-{world}" / "metrics.jsonl" for m in ("raw", "sketch")]
    while time.monotonic() < deadline:
        if all(p.exists() and any(json.loads(x)["step"] == STEPS for x in p.read_text().splitlines() if x.strip())
               for p in paths):
            break
        time.sleep(0.1)
    raw = read_metrics(eng.run_dir / f"eq-raw-{world}" / "metrics.jsonl")
    sk = read_metrics(eng.run_dir / f"eq-sketch-{world}" / "metrics.jsonl")
    assert set(raw) == set(sk) and len(raw) >= STEPS * 2 * 3
    worst = {"exact": 0.0, "ess_kl": 0.0, "quantile": 0.0, "quantile_user": 0.0}
    for key, r in raw.items():
        s = sk[key]
        assert (r["n"], r["nonfinite"]) == (s["n"], s["nonfinite"]), key
        for f in EXACT:
            if f in r:
                assert close(r[f], s[f], 1e-9), (key, f, r[f], s[f])
                if r[f] and s[f] and math.isfinite(r[f]):
                    worst["exact"] = max(worst["exact"], abs(r[f] - s[f]) / abs(r[f]))
                    if f in ESS_KL:
                        assert close(r[f], s[f], 1e-12), (key, f, r[f], s[f])
                        worst["ess_kl"] = max(worst["ess_kl"], abs(r[f] - s[f]) / abs(r[f]))
        for f in QUANTILES:
            if r["n"] and r.get(f) is not None:
                p = {"abs_q50": 0.5, "abs_q90": 0.9, "abs_q95": 0.95, "abs_q99": 0.99, "abs_q999": 0.999}[f]
                lo, hi = exact_bracket(key[0], world, key[1], key[2], p)
                assert lo <= s[f] <= hi, (key, f, lo, s[f], hi, r[f])
                if r[f]:
                    w = "quantile_user" if key[2].startswith("user:") else "quantile"
                    worst[w] = max(worst[w], abs(r[f] - s[f]) / r[f])
    # the comparison ran on real data: the tails differ by slice and there are non-finite values
    assert sk[(1, "policy_vs_ref", "all")]["nonfinite"] == (2 if world > 1 else 0)
    assert sk[(2, "policy_vs_ref", "post_tool")]["n"] > 100
    users = {k[2] for k in sk if k[2].startswith("user:")}
    assert users == {f"user:{u}" for u in NAMES}  # user slices, compared above like the built-in ones
    assert sk[(1, "policy_vs_ref", "user:turn_0")]["nonfinite"] + sk[(1, "policy_vs_ref", "user:turn_1")]["nonfinite"] \
        + sk[(1, "policy_vs_ref", "user:tool:search")]["nonfinite"] <= sk[(1, "policy_vs_ref", "all")]["nonfinite"]
    print(f"world={world}: worst relative difference exact={worst['exact']:.2e} ess/kl={worst['ess_kl']:.2e} "
          f"quantile={worst['quantile']:.2e} (user slices {worst['quantile_user']:.2e})")
