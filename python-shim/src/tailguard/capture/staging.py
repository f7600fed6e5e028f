"""Raw mode's fused staging: each micro-batch's padded (B, T) arrays go straight into the step's wire buffers.

One selection pass per array writes only the completion tokens, already in the wire dtype, at the step's
running position; per-sequence arrays and lengths are small and kept per micro-batch. The wire buffers are
reused from step to step (`BufferPool`): a fresh multi-MB array per step costs more in page faults than the
copy itself. A buffer is reused only once nothing else refers to it (the client keeps a step's frames until
it is answered or dropped), so reuse can never overwrite bytes still queued for the engine.

Flattening rules (module docstring of base.py): completion tokens only, in row order; `offsets` is the running
sum of the per-row counts; the sent `completion_mask` is all ones; `tool_mask` is 1 where absent.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import torch

from ..options import PAIRS

logger = logging.getLogger("tailguard")

# Wire dtypes (numpy) of the per-token and per-sequence arrays a capture may stage.
TOKEN_DTYPES = {
    "policy_vs_old": np.float32,
    "policy_vs_ref": np.float32,
    "old_vs_rollout": np.float32,
    "tool_mask": np.uint8,
    "slice_ids": np.uint16,
    "token_ids": np.int32,
}
SEQ_DTYPES = {"advantages": np.float32, "rewards": np.float32, "seq_ids": np.int32, "group_ids": np.int32}
KEEP_FREE = 2  # free buffers kept per array name: enough for the step in flight plus the one being staged


def host_array(x: Any) -> np.ndarray:
    """A numpy view of a host tensor or array (bf16/f16 tensors widen to float32: numpy has no bf16)."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def mask_rows(cm: Any) -> np.ndarray:
    """The completion mask as a (B, T) numpy bool array (torch's cast is the cheapest pass from int64)."""
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().reshape(cm.shape[0], -1)
        return (cm if cm.dtype == torch.bool else cm.bool()).numpy()
    cm = np.asarray(cm)
    cm = cm.reshape(cm.shape[0], -1)
    return cm if cm.dtype == np.bool_ else cm != 0


class BufferPool:
    """Reused 1-D numpy buffers per name. A pooled buffer is free when only the pool refers to it: every view
    handed out (and every frame or slice made from one) holds a reference to its base array."""

    def __init__(self, keep: int = KEEP_FREE):
        self.keep = keep
        self._free: dict[str, list[np.ndarray]] = {}

    def acquire(self, name: str, dtype: Any, n: int) -> np.ndarray:
        bufs = self._free.setdefault(name, [])
        for i in range(len(bufs)):
            # 2 = the pool's list + getrefcount's argument: nobody else holds it (or a view of it).
            if bufs[i].dtype == dtype and bufs[i].shape[0] >= n and sys.getrefcount(bufs[i]) <= 2:
                return bufs.pop(i)
        return np.empty(max(n, 1024), dtype)

    def release(self, name: str, buf: np.ndarray) -> None:
        """Return a buffer that the caller hands out views of; it is reused only once those are gone."""
        bufs = self._free.setdefault(name, [])
        bufs.append(buf)
        if len(bufs) > self.keep + 1:  # forget the oldest (it is freed when its last view goes)
            bufs.pop(0)


class StepStager:
    """Accumulates one step's micro-batches into wire buffers; `take()` returns the step's arrays (views)."""

    def __init__(self, pool: BufferPool | None = None):
        self.pool = pool
        self._hint = 0  # the last step's token count: the next step's first guess at its size
        self._ones = np.ones(0, np.uint8)  # the all-ones completion_mask, shared (never written after creation)
        self.bytes_staged = 0  # token bytes written into wire buffers, all steps
        self.reset()

    def reset(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}
        self._present: dict[str, list[int]] = {}  # token array name -> micro-batches that had it
        self._seq: dict[str, list[np.ndarray]] = {}
        self._lens: list[np.ndarray] = []
        self._ranges: list[tuple[int, int]] = []
        self.tokens = 0

    @property
    def micro_batches(self) -> int:
        return len(self._ranges)

    def _buffer(self, name: str, need: int) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is not None and buf.shape[0] >= need:
            return buf
        if buf is not None:  # a step larger than the last: keep what is staged (rare after the first steps)
            grown = np.empty(max(need, 2 * buf.shape[0]), buf.dtype)
            grown[: self.tokens] = buf[: self.tokens]
        else:
            want = max(need, self._hint + self._hint // 8)
            dtype = TOKEN_DTYPES[name]
            grown = self.pool.acquire(name, dtype, want) if self.pool is not None else np.empty(want, dtype)
        self._bufs[name] = grown
        return grown

    def add(self, rec: dict[str, Any]) -> None:
        """Stage one micro-batch: `completion_mask` (B, T), token arrays (B, T), per-sequence arrays (B,)."""
        m = mask_rows(rec["completion_mask"])
        lens = np.add.reduce(m.view(np.uint8), axis=1, dtype=np.int64)  # 2x count_nonzero's speed
        a = self.tokens
        b = a + int(lens.sum())
        for name, x in rec.items():
            if name in TOKEN_DTYPES:
                x = host_array(x)
                if x.shape != m.shape:
                    x = x.reshape(m.shape)
                # The one pass: select completion tokens, cast to the wire dtype, write in place.
                dst = self._buffer(name, b)[a:b]
                dst[...] = x[m]
                self.bytes_staged += dst.nbytes
                self._present.setdefault(name, []).append(len(self._ranges))
            elif name in SEQ_DTYPES:
                self._seq.setdefault(name, []).append(host_array(x).reshape(-1).astype(SEQ_DTYPES[name]))
        self._lens.append(lens)
        self._ranges.append((a, b))
        self.tokens = b

    def take(self, implicit: list[str]) -> tuple[dict[str, np.ndarray], list[str], int]:
        """The step's wire arrays (views of the buffers), the implicit pairs without a buffer, n_seqs; resets."""
        n, tokens = len(self._ranges), self.tokens
        arrays: dict[str, np.ndarray] = {}
        for name, buf in self._bufs.items():
            have = self._present[name]
            if len(have) < n:
                if name in PAIRS and name not in implicit:
                    logger.warning("tailguard: %s missing from some micro-batches of the step; not sent", name)
                    continue
                if name not in PAIRS and name != "tool_mask":
                    continue  # a partial token_ids/slice_ids array would not line up with the tokens
                fill = 0 if name in PAIRS else 1  # an implicit pair is 0; an absent tool_mask means model tokens
                for i in sorted(set(range(n)) - set(have)):
                    buf[self._ranges[i][0] : self._ranges[i][1]] = fill
            arrays[name] = buf[:tokens]
        for name, parts in self._seq.items():
            if len(parts) == n:
                arrays[name] = np.concatenate(parts)
        lens = np.concatenate(self._lens) if self._lens else np.zeros(0, np.int64)
        offsets = np.zeros(len(lens) + 1, np.int32)
        np.cumsum(lens, out=offsets[1:])
        if self._ones.shape[0] < tokens:
            self._ones = np.ones(max(tokens, 2 * self._ones.shape[0]), np.uint8)
        if "tool_mask" not in arrays:
            arrays["tool_mask"] = self._ones[:tokens]
        arrays["completion_mask"] = self._ones[:tokens]
        arrays["offsets"] = offsets
        # Implicit pairs carry no buffer: the engine knows they are identically 0.
        for p in implicit:
            if p in arrays and not np.any(arrays[p]):
                del arrays[p]
        implicit = [p for p in implicit if p not in arrays]
        if self.pool is not None:
            for name, buf in self._bufs.items():
                self.pool.release(name, buf)
        self._hint = tokens
        self.reset()
        return arrays, implicit, len(lens)
