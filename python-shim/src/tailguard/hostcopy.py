"""Device → host copies that do not stall the training step.

On CUDA each staged tensor is copied with `non_blocking=True` into a slice of a pinned host buffer that
is reused from step to step (a fresh pinned allocation per step costs more than the copy itself). The
copies are fenced by one CUDA event per step, waited on at the step boundary, by which time the
optimizer step has long since queued behind them. On CPU a staged tensor is simply converted (a view
when the dtype already matches).

Padded (B, T) tensors are copied as they are: selecting completion tokens on the device would need
a device sync (boolean indexing), so flattening happens on the host at the step boundary, straight from
the arena into the wire buffers (capture/staging.py). Host tensors skip this class in raw mode.

Sketch mode uses `DeviceKeeper` instead: nothing goes to the host but the sketch (docs/sketch.md).
"""

from __future__ import annotations

import numpy as np
import torch


class HostCopier:
    """Stage tensors for one step; `finish()` returns host numpy arrays that the caller may keep."""

    def __init__(self, pin_memory: bool = True):
        self.pin_memory = pin_memory
        self._pools: dict[torch.dtype, torch.Tensor] = {}  # one growable pinned arena per dtype
        self._used: dict[torch.dtype, int] = {}
        self._staged: list[tuple] = []
        self._event = None
        self.bytes_to_host = 0  # staged bytes, all steps (sketch mode's DeviceKeeper keeps this at 0)

    def stage(self, tensor: torch.Tensor, dtype: torch.dtype) -> int:
        """Queue a detached copy of `tensor` as `dtype`; returns a handle for `finish()`'s list."""
        t = tensor.detach()
        if t.dtype != dtype:
            t = t.to(dtype)
        self.bytes_to_host += t.numel() * t.element_size()
        if t.device.type != "cuda":
            self._staged.append(("host", t.cpu()))
            return len(self._staged) - 1
        n = t.numel()
        pool = self._reserve(dtype, n)
        start = self._used[dtype]
        pool[start : start + n].view(t.shape).copy_(t, non_blocking=True)
        self._used[dtype] = start + n
        self._staged.append(("pool", dtype, start, n, tuple(t.shape)))
        if self._event is None:
            self._event = torch.cuda.Event()
        self._event.record()
        return len(self._staged) - 1

    def _reserve(self, dtype: torch.dtype, n: int) -> torch.Tensor:
        pool = self._pools.get(dtype)
        used = self._used.setdefault(dtype, 0)
        if pool is None or used + n > pool.numel():
            if self._event is not None:
                self._event.synchronize()  # the old arena's pending copies must land before we copy it over
            grown = torch.empty(max(2 * (used + n), 1 << 16), dtype=dtype, pin_memory=self.pin_memory)
            if pool is not None and used:
                grown[:used].copy_(pool[:used])
            self._pools[dtype] = pool = grown
        return pool

    def finish(self, copy: bool = True) -> list[np.ndarray]:
        """Wait for this step's copies and return them as numpy arrays; resets for the next step. With
        `copy=False` pooled ones are views of the pinned arena, valid until the next `stage`."""
        if self._event is not None:
            self._event.synchronize()
        out = []
        for item in self._staged:
            if item[0] == "host":
                out.append(item[1].numpy())
            else:
                _, dtype, start, n, shape = item
                # Copied out of the arena unless the caller consumes them at once (the raw stager does).
                view = self._pools[dtype][start : start + n].numpy().reshape(shape)
                out.append(view.copy() if copy else view)
        self._staged.clear()
        for k in self._used:
            self._used[k] = 0
        return out

    def discard(self) -> None:
        if self._event is not None:
            self._event.synchronize()
        self._staged.clear()
        for k in self._used:
            self._used[k] = 0


class DeviceKeeper:
    """Sketch mode's stager: keeps each detached tensor where it lives (no host copy); `finish()` returns
    the step's tensors on their device, for `flatten_device` and `compute_sketch` to run there."""

    bytes_to_host = 0

    def __init__(self):
        self._staged: list[torch.Tensor] = []

    def stage(self, tensor: torch.Tensor, dtype: torch.dtype) -> int:
        t = tensor.detach()
        self._staged.append(t if t.dtype == dtype else t.to(dtype))
        return len(self._staged) - 1

    def finish(self) -> list[torch.Tensor]:
        out, self._staged = self._staged, []
        return out

    def discard(self) -> None:
        self._staged = []
