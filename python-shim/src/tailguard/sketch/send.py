"""Sending a sketch: the step header fields, and the callback's sketch-mode step (compute, reduce, send on
rank 0 through the client's one step path)."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch

from .compute import compute_sketch, merge_sketches
from .layout import *  # noqa: F403
from .metrics import PER_RANK_FIELDS
from .reduce import collective_device, reduce_sketch

log = logging.getLogger("tailguard")

def step_header_fields(sk: Sketch) -> dict:
    """The sketch-specific fields of a `step` header (the client adds run_id, rank, step, ...)."""
    fields = {
        "sketch": True,
        "hist": {**HIST_LAYOUT, "coding": "runs"},  # Sketch.buffers()'s default coding
        "sums_fields": [name for name, _ in SUMS_FIELDS],
        "tokens": sk.tokens,
        "n_seqs": sk.n_seqs,
        "slice_counts": dict(sk.slice_counts),
    }
    if sk.slice_names:  # user slices: buffer `.../user/<id>/...` is slice `user:<slice_names[id]>`
        fields["slice_names"] = sk.slice_names
    if sk.per_rank is not None:
        fields["per_rank"] = {"ranks": int(sk.per_rank.shape[0]), "fields": list(PER_RANK_FIELDS),
                              "tokens": [int(t) for t in sk.rank_tokens]}
    return fields


def sketch_step_header(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> dict:
    """The full `step` header of a sketch step from rank 0, with the client's run identity."""
    from ..client import step_header

    return {**step_header(client, step, knobs, logs, implicit, checkpoint), "chunk": {"index": 0, "count": 1},
            **step_header_fields(sk)}


def encode_sketch_step(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> list:
    """Frames of one sketch step message (one message: its size is fixed by pairs × slices)."""
    from ..wire import encode_message

    return encode_message(sketch_step_header(client, step, sk, knobs, logs, implicit, checkpoint), sk.buffers())


def send_sketch_step(client, step: int, sk: Sketch, knobs=None, logs=None, implicit=(), checkpoint=None) -> bool:
    """Queue a merged sketch on rank 0's `EngineClient` through its one step path (`send_step`): False when
    dropped, and then counted like any dropped step (never raises, never blocks beyond the send budget)."""
    return client.send_step(int(step), sk.buffers(), knobs=knobs, logs=logs, implicit=implicit,
                            checkpoint=checkpoint, sketch=step_header_fields(sk))


def _with_pairs(sk: Sketch, names: Sequence[str]) -> Sketch:
    """The same sketch over a fixed pair list (absent pairs empty), so every rank reduces equal shapes."""
    if list(sk.pairs) == list(names):
        return sk
    P, S = len(names), len(sk.slices)
    hist = torch.zeros((P, S, HIST_BINS), dtype=torch.float64, device=sk.hist.device)
    sums = torch.zeros((P, S, N_FIELDS), dtype=torch.float64, device=sk.sums.device)
    sums[..., [FIELD_INDEX[k] for k in ("lse_max", "seq_max", "seqn_max")]] = -math.inf
    for p, name in enumerate(names):
        if name in sk.pairs:
            hist[p], sums[p] = sk.hist[sk.pairs.index(name)], sk.sums[sk.pairs.index(name)]
    return Sketch(list(names), sk.slices, hist, sums, sk.tokens, sk.n_seqs, dict(sk.slice_counts))


def _present(sk: Sketch) -> Sketch:
    """Drop pairs with no token anywhere (not captured on any rank)."""
    seen = (sk.sums[..., FIELD_INDEX["n"]] + sk.sums[..., FIELD_INDEX["nonfinite"]]).sum(-1) > 0
    keep = [i for i in range(len(sk.pairs)) if bool(seen[i])]
    per_rank = None if sk.per_rank is None else sk.per_rank[:, keep]
    return Sketch([sk.pairs[i] for i in keep], sk.slices, sk.hist[keep], sk.sums[keep], sk.tokens, sk.n_seqs,
                  sk.slice_counts, per_rank, sk.rank_tokens)


def sketch_payload(arrays: Mapping[str, object], names: Sequence[str], knobs=None, device=None,
                   slice_names: Sequence[str] | None = None) -> Sketch:
    """Sketch one rank's flattened step where its tensors live (the capture's device tensors in sketch mode;
    numpy arrays go to `collective_device()`). With `slice_names`, `arrays["slice_ids"]` (when there) gives
    the user slices; every rank must pass the same names (the reduce needs equal shapes)."""
    cm = arrays["completion_mask"]
    dev = device or (cm.device if isinstance(cm, torch.Tensor) else collective_device())
    t = lambda a: torch.as_tensor(a).to(dev)  # noqa: E731
    pairs = {p: t(arrays[p]) for p in names if arrays.get(p) is not None}
    ids = arrays.get("slice_ids") if slice_names else None
    if ids is not None and not isinstance(ids, torch.Tensor):
        ids = np.asarray(ids).astype(np.int32)  # wire u16: torch has few uint16 ops
    if slice_names and ids is None:  # no ids this step: the user slices are empty, the shapes still agree
        ids = torch.full((len(cm),), -1, dtype=torch.int32)
    sk = compute_sketch(pairs, t(arrays["completion_mask"]), t(arrays["tool_mask"]), t(arrays["offsets"]), knobs,
                        slice_ids=None if ids is None else t(ids), slice_names=slice_names)
    return _with_pairs(sk, names)


def _empty_sketch(names: Sequence[str], slice_names: Sequence[str] | None = None) -> Sketch:
    """No tokens, every pair empty: built directly (no kernel), so it cannot fail where a computed part did."""
    slices = list(BUILTIN_SLICES) + [f"user:{u}" for u in slice_names or ()]
    S = len(slices)
    none = Sketch([], slices, torch.zeros((0, S, HIST_BINS), dtype=torch.float64),
                  torch.zeros((0, S, N_FIELDS), dtype=torch.float64), 0, 0, dict.fromkeys(BUILTIN_SLICES, 0))
    return _with_pairs(none, names)


def per_rank_enabled(option: bool | None, world_size: int) -> bool:
    """The `sketch_per_rank` option for this world size: None = on up to SKETCH_PER_RANK_AUTO_MAX ranks, where
    the summary stays ≤ 8 KB a pair a step (ranks × 4 slices × 32 bytes); the same answer on every rank."""
    from ..options import SKETCH_PER_RANK_AUTO_MAX

    return option if option is not None else world_size <= SKETCH_PER_RANK_AUTO_MAX


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def send_capture_step(cb, state, control) -> bool:
    """The callback's step flush in sketch mode. Every rank calls it (the reduce is a collective);
    rank 0 alone holds a client and sends. Hook: `TailguardCallback._send_step`. Returns False when this
    rank's client dropped the step; fail_closed then stops every rank at the step-end exchange.

    A rank whose part fails before the reduce still joins it with an empty part flagged `failed` (else the
    other ranks would wait in the reduce until the DDP timeout); rank 0 then sends nothing for the step,
    and the failing rank re-raises after the reduce."""
    names = [p for p in PAIRS if p in cb.options.pairs]
    user = getattr(cb.capture, "slice_names", None)  # a property of the capture: the same on every rank
    payload, knobs, implicit, error = None, None, [], None
    try:
        payload = cb.capture.take_step(state.global_step)
        knobs = cb.capture.knobs()
        if payload is None:  # nothing staged here: join the collective with an empty sketch
            sk = _empty_sketch(names, user)
        else:
            sk = sketch_payload(payload.arrays, [p for p in names if p not in payload.implicit], knobs,
                                slice_names=user)
            sk = _with_pairs(sk, names)
            sk.tokens = payload.tokens  # completion tokens, as raw mode counts them (the device layout keeps padding)
            implicit = list(payload.implicit)
    except Exception as e:  # noqa: BLE001 - every rank must reach the reduce, or the others wait in it
        error, payload = e, None
        sk = _empty_sketch(names, user)
        sk.failed = 1
    reduced = reduce_sketch(sk, per_rank=per_rank_enabled(cb.options.sketch_per_rank, _world_size()))
    if error is not None:
        raise error  # after the collective: the callback counts it (fail_closed: every rank stops at the exchange)
    if reduced.failed:
        if cb.client is not None:  # a partial step would misstate the tail: send nothing for it
            log.warning("tailguard: sketch step %d not sent: %d rank(s) could not compute their part",
                        state.global_step, reduced.failed)
        return True  # the failing rank raised above: the exchange carries its reason
    sk = _present(reduced)
    if cb.client is None:
        return True
    logs = cb.capture.step_logs()
    if payload is not None and payload.loss is not None and math.isfinite(payload.loss):
        logs["loss"] = payload.loss
    directives = getattr(cb, "directives", None)
    extras = directives.step_extras(cb.client) if directives is not None else {}
    return send_sketch_step(cb.client, state.global_step, sk, knobs=knobs, logs=logs, implicit=implicit,
                            checkpoint=extras.get("checkpoint"))

