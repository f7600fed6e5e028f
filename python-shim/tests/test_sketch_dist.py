"""Sketch merge across real gloo processes equals sketching the concatenated data in one process."""

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tailguard import sketch as S


def shard(seed: int, rank: int):
    rng = np.random.default_rng(seed * 100 + rank)
    n_seqs = 30 + rank * 7  # ranks hold different amounts of data
    lens = rng.integers(2, 50, n_seqs)
    T = int(lens.sum())
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    cm = (rng.random(T) > 0.05).astype(np.uint8)
    tm = (rng.random(T) > 0.15).astype(np.uint8)
    scale = 0.2 * (1 + 3 * rank)  # one rank with a heavier tail
    ref = (rng.standard_t(3, T) * scale).astype(np.float32)
    old = (rng.normal(0, 0.01, T)).astype(np.float32)
    if rank == 1:
        ref[5] = np.nan
        ref[9] = 60.0  # a large ratio on one rank only: LSE parts must rescale
    return {"policy_vs_ref": ref, "old_vs_rollout": old}, cm, tm, off


def _t(d):
    return {k: torch.from_numpy(v) for k, v in d.items()}


def worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    pairs, cm, tm, off = shard(7, rank)
    sk = S.compute_sketch(_t(pairs), torch.from_numpy(cm), torch.from_numpy(tm), torch.from_numpy(off),
                          knobs={"epsilon_low": 0.2, "epsilon_high": 0.28})
    red = S.reduce_sketch(sk, per_rank=True)
    torch.save({"hist": red.hist, "sums": red.sums, "tokens": red.tokens, "n_seqs": red.n_seqs,
                "slice_counts": red.slice_counts, "per_rank": red.per_rank,
                "local": S.summarize(sk)}, os.path.join(out_dir, f"r{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [1, 2, 4])
def test_gloo_reduce_equals_concatenated(world):
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(worker, args=(world, os.path.join(d, "init"), d), nprocs=world, join=True)
        got = [torch.load(os.path.join(d, f"r{r}.pt")) for r in range(world)]
    parts = [shard(7, r) for r in range(world)]
    pairs = {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}
    cm = np.concatenate([p[1] for p in parts])
    tm = np.concatenate([p[2] for p in parts])
    offs, base = [np.int32([0])], 0
    for p in parts:
        offs.append(p[3][1:] + base)
        base += int(p[3][-1])
    whole = S.compute_sketch(_t(pairs), torch.from_numpy(cm), torch.from_numpy(tm),
                             torch.from_numpy(np.concatenate(offs)), knobs={"epsilon_low": 0.2, "epsilon_high": 0.28})
    for g in got:  # every rank holds the merged result
        torch.testing.assert_close(g["hist"], whole.hist, rtol=0, atol=0)
        torch.testing.assert_close(g["sums"], whole.sums, rtol=1e-12, atol=1e-9)
        assert (g["tokens"], g["n_seqs"], g["slice_counts"]) == (whole.tokens, whole.n_seqs, whole.slice_counts)
        assert g["per_rank"].shape == (world, 2, 4, 4)
        for r in range(world):
            torch.testing.assert_close(g["per_rank"][r], got[r]["local"], equal_nan=True)
    # sanity: the metrics come out of the merged sums and are not trivial
    m = S.metrics_from_sums(whole.sums[0, 0])
    assert 0 < m["ess"] < 1 and m["nonfinite"] == (1 if world > 1 else 0)
