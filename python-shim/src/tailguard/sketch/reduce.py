"""Reducing a sketch across ranks with torch.distributed (one all-reduce per kind of merge)."""

from __future__ import annotations

import torch

from .compute import _merge_rows, _rescale
from .layout import *  # noqa: F403
from .layout import _LSE, _MAX_IDX
from .metrics import summarize

def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def reduce_sketch(sk: Sketch, group=None, per_rank: bool = False) -> Sketch:
    """Merge every rank's sketch with two collectives (MAX of maxima, then SUM of the rest).

    Every rank must call it (it is a collective). Afterwards every rank holds the merged sketch;
    only rank 0 sends it. With `per_rank=True` a small fixed-size summary per rank is all-gathered
    too (PER_RANK_FIELDS per pair × slice, and each rank's token count), so a tail can still be traced to one
    rank (the engine's rank_outlier reads it). It costs ranks × pairs × slices × 32 bytes on the wire.
    """
    dist = _dist()
    failed = sk.failed
    local = summarize(sk) if per_rank else None
    if dist is None or dist.get_world_size(group) == 1:
        if local is not None:
            sk.per_rank, sk.rank_tokens = local.unsqueeze(0), [sk.tokens]
        return sk
    # Only these small fixed-size vectors move, to where the backend reduces (gloo: CPU, NCCL: the GPU).
    dev = collective_device()
    sk = Sketch(sk.pairs, sk.slices, sk.hist.to(dev), sk.sums.to(dev), sk.tokens, sk.n_seqs, sk.slice_counts)
    local = None if local is None else local.to(dev)
    sums = sk.sums.clone()
    maxes = sums[..., _MAX_IDX].contiguous()
    dist.all_reduce(maxes, op=dist.ReduceOp.MAX, group=group)
    gmax = torch.empty_like(sums)
    gmax[..., _MAX_IDX] = maxes
    for i, mi, scale in _LSE:
        sums[..., i] = _rescale(sums[..., i], sums[..., mi], gmax[..., mi], scale)
    sums[..., _MAX_IDX] = 0.0
    counts = [sk.tokens, sk.n_seqs] + [sk.slice_counts[s] for s in BUILTIN_SLICES] + [failed]
    extra = torch.tensor(counts, dtype=torch.float64, device=sums.device)
    flat = torch.cat([sk.hist.reshape(-1), sums.reshape(-1), extra])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    nh = sk.hist.numel()
    hist = flat[:nh].view_as(sk.hist)
    sums = flat[nh:nh + sums.numel()].view_as(sums).clone()
    sums[..., _MAX_IDX] = maxes
    extra = flat[nh + sums.numel():].tolist()
    out = Sketch(sk.pairs, sk.slices, hist, sums, int(extra[0]), int(extra[1]),
                 {s: int(c) for s, c in zip(BUILTIN_SLICES, extra[2:])}, failed=int(extra[-1]))
    if local is not None:  # one gather: [tokens, summary...] per rank
        row = torch.cat([torch.tensor([float(sk.tokens)], dtype=torch.float64, device=dev), local.reshape(-1)])
        gathered = [torch.empty_like(row) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, row, group=group)
        out.per_rank = torch.stack([g[1:].view_as(local) for g in gathered])
        out.rank_tokens = [int(g[0]) for g in gathered]
    return out


def collective_device():
    """Where the reduce runs: the current CUDA device under NCCL, else the CPU (gloo)."""
    dist = _dist()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
