"""What the engine should echo in `received`, computed independently with numpy (proto/README.md)."""

from __future__ import annotations

import numpy as np

from tailguard.wire import FNV_OFFSET, FNV_PRIME


def expected_slices(completion_mask, tool_mask, offsets) -> dict[str, int]:
    """Counts over completion tokens: model = tool_mask≠0; pre_tool = model token with no tool-output
    token before it in its sequence; post_tool = the other model tokens; tool_output = the rest."""
    cm = np.asarray(completion_mask) != 0
    tm = np.asarray(tool_mask) != 0
    offsets = np.asarray(offsets, np.int64)
    tool = cm & ~tm
    model = cm & tm
    lengths = np.diff(offsets)
    seq = np.repeat(np.arange(len(lengths)), lengths)
    tool_before = np.cumsum(tool) - tool  # tool tokens strictly before t, counted from the step start
    at_start = (np.cumsum(tool) - tool)[offsets[:-1][lengths > 0]] if tool.size else np.zeros(0, np.int64)
    start_of = np.zeros(len(lengths), np.int64)
    start_of[lengths > 0] = at_start
    post = model & (tool_before - start_of[seq] > 0)
    return {"all": int(model.sum()), "pre_tool": int((model & ~post).sum()), "post_tool": int(post.sum()),
            "tool_output": int(tool.sum())}


def fnv1a32_bytes(chunks) -> int:
    """FNV-1a 32 over byte strings in order (a second implementation, byte-wise with numpy ints)."""
    h = FNV_OFFSET
    for c in chunks:
        for b in memoryview(c).cast("B").tobytes():
            h = ((h ^ b) * FNV_PRIME) % 2**32
    return h


def expected_received(messages) -> dict:
    """`received` for a step from the encoded chunk messages the client sent (frame lists)."""
    import msgpack

    tokens = n_seqs = 0
    parts = {"completion_mask": [], "tool_mask": [], "offsets": []}
    raw = []
    for frames in messages:
        h = msgpack.unpackb(bytes(frames[0]))
        names = [b["name"] for b in h["buffers"]]
        for name, f in zip(names, frames[1:]):
            raw.append(bytes(f))
            if name in parts:
                dt = {"offsets": "<i4"}.get(name, "u1")
                a = np.frombuffer(bytes(f), dt)
                parts[name].append(a[1:] + tokens if name == "offsets" else a)
        tokens += h["tokens"]
        n_seqs += h["n_seqs"]
    offsets = np.concatenate([[0], *parts["offsets"]])
    slices = expected_slices(np.concatenate(parts["completion_mask"]), np.concatenate(parts["tool_mask"]), offsets)
    return {"tokens": tokens, "n_seqs": n_seqs, "slices": slices, "checksum": fnv1a32_bytes(raw)}
