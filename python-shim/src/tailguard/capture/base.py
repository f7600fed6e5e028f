"""What every trainer capture shares: method wrapping, per-micro-batch staging, per-step flattening.

A capture wraps a few *instance* methods of a constructed trainer (the way TRL's own tests patch
them), stages the tensors it sees per micro-batch, and at the optimizer-step boundary hands back one
flat step: every array the protocol names, completion tokens only.

Flattening: only completion tokens are sent. Each sequence contributes `completion_mask.sum()` tokens
(TRL right-pads completions, so these are the first tokens of the row, in order); `offsets` holds the
running sum, so sequence i is `[offsets[i], offsets[i+1])`. A sequence whose completion was masked out
entirely (e.g. `mask_truncated_completions`) keeps an empty segment, so seq_ids/advantages stay aligned.
The sent `completion_mask` is therefore all ones; `tool_mask` marks tool-output tokens with 0.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..hostcopy import DeviceKeeper, HostCopier
from ..options import PAIRS, Options
from .staging import SEQ_DTYPES, TOKEN_DTYPES, BufferPool, StepStager

logger = logging.getLogger("tailguard")

# Per-token arrays (length T) and per-sequence arrays (length n_seqs): the torch dtype each leaves the device in,
# from the wire dtypes (staging.py). uint16 slice ids go as int32, narrowed on the host (torch has no uint16
# arithmetic on all devices).
_ON_DEVICE = {np.dtype(np.float32): torch.float32, np.dtype(np.uint8): torch.uint8, np.dtype(np.int32): torch.int32,
              np.dtype(np.uint16): torch.int32}
TOKEN_ARRAYS = {name: _ON_DEVICE[np.dtype(dt)] for name, dt in TOKEN_DTYPES.items()}
SEQ_ARRAYS = {name: _ON_DEVICE[np.dtype(dt)] for name, dt in SEQ_DTYPES.items()}


class Later:
    """One of a micro-batch's pair differences, computed when it is staged (on the staging thread, deferred)."""

    __slots__ = ("fn", "name")

    def __init__(self, fn: Callable[[], dict], name: str):
        self.fn, self.name = fn, name

    def __call__(self) -> Any:
        return self.fn()[self.name]


def _resolved(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v() if isinstance(v, Later) else v for k, v in rec.items()}


class CaptureError(RuntimeError):
    """The trainer cannot be captured (wrong kind, unsupported TRL internals or settings). Stable `code`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class StepPayload:
    """One rank's flattened step, ready for `EngineClient.send_step`."""

    arrays: dict[str, np.ndarray]
    implicit: list[str]
    slice_names: list[str] | None
    tokens: int
    n_seqs: int
    micro_batches: int
    loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Capture:
    """Base class. Subclasses set `kind`, `required` and implement `install_hooks()`, `knobs()`, `config()`."""

    kind = "base"
    required: tuple[str, ...] = ()  # private trainer attributes the wrappers depend on
    slice_names: list[str] | None = None

    def __init__(self, trainer: Any, options: Options):
        self.trainer = trainer
        self.options = options
        # Sketch mode keeps the tensors on their device: it is sketched there (sketch.py), never copied out.
        # Raw mode writes host micro-batches straight into reused wire buffers (staging.py); device ones are
        # copied to pinned host memory first (hostcopy.py).
        sketch = options.mode == "sketch"
        self.copier = DeviceKeeper() if sketch else HostCopier(pin_memory=options.pin_memory)
        self.stager = None if sketch else StepStager(BufferPool())
        # Raw mode with a staging thread (callback.py): host micro-batches are kept by reference and staged
        # there, by its own stager (the two never share buffers).
        self.defer_host = False
        self._host: list[dict[str, Any]] = []
        self._bg_stager = None if sketch else StepStager(BufferPool())
        self._records: list[dict[str, int]] = []  # device micro-batches: copier handles
        self._implicit: set[str] = set()
        self._losses: list[float | torch.Tensor] = []
        self._wrapped: list[tuple[str, Any, bool]] = []
        # Test hook (retain_captured=True): every flushed step's arrays, and its implicit pairs.
        self.captured: list[tuple[int, dict[str, np.ndarray]]] = []
        self.captured_implicit: dict[int, list[str]] = {}

    # ---- installation -------------------------------------------------------------------------
    def check(self) -> None:
        missing = [name for name in self.required if not hasattr(self.trainer, name)]
        if missing:
            raise CaptureError(
                "E_TRL_INTERNALS",
                f"{type(self.trainer).__name__} lacks {missing}: this TRL version's internals differ from the "
                "ones tailguard wraps (see docs/trl.md for the supported range)",
            )

    def wrap(self, name: str, make: Callable[[Callable], Callable]) -> None:
        """Replace the instance attribute `name` with `make(original)`; `uninstall()` restores it."""
        had_own = name in vars(self.trainer)
        original = getattr(self.trainer, name)
        setattr(self.trainer, name, make(original))
        self._wrapped.append((name, original, had_own))

    def install(self) -> None:
        self.check()
        self.install_hooks()

    def uninstall(self) -> None:
        for name, original, had_own in reversed(self._wrapped):
            if had_own:
                setattr(self.trainer, name, original)
            else:
                vars(self.trainer).pop(name, None)
        self._wrapped.clear()

    def install_hooks(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def knobs(self) -> dict[str, float | None]:
        return {}

    def config(self) -> dict[str, Any]:
        return {}

    def step_logs(self) -> dict[str, float]:
        return {}

    # ---- staging ----------------------------------------------------------------------------------
    def pair_diffs(self, current: torch.Tensor, names: list[str], compute: Callable[[], dict]) -> dict:
        """`compute()`'s pair differences, now; or, for deferred host micro-batches, one `Later` per name in
        `names` (those compute() returns non-None), all computed once on the staging thread."""
        if not (self.defer_host and self.stager is not None and current.device.type == "cpu"):
            return compute()
        memo = functools.cache(compute)
        return {n: Later(memo, n) for n in names}

    def stage_micro_batch(
        self,
        completion_mask: torch.Tensor,
        token: dict[str, torch.Tensor | None],
        seq: dict[str, torch.Tensor | None],
        implicit: tuple[str, ...] = (),
        loss: torch.Tensor | float | None = None,
    ) -> None:
        """Stage one micro-batch's padded (B, T) tensors and per-sequence (B,) tensors."""
        rec: dict[str, Any] = {"completion_mask": completion_mask}
        for name, t in token.items():
            if t is not None and (name not in PAIRS or name in self.options.pairs):
                rec[name] = t
        for name, t in seq.items():
            if t is not None:
                rec[name] = t.reshape(-1)
        if self.stager is not None and completion_mask.device.type == "cpu" and self.defer_host:
            # References only, no copy: nothing here is written in place later. The pair differences are
            # computed there from this forward's fresh logps and the batch's logps/masks, which TRL only reads
            # after the loss (GRPO's buffered inputs are reused read-only across num_iterations).
            self._host.append(rec)
        elif self.stager is not None and completion_mask.device.type == "cpu":
            self.stager.add(rec)  # raw mode on host tensors: straight into the wire buffers (staging.py)
        else:  # device tensors: converted there and copied to the host (raw) or kept (sketch) until the boundary
            self._records.append({k: self.copier.stage(t, _stage_dtype(k, self.stager)) for k, t in rec.items()})
        self._implicit.update(p for p in implicit if p in self.options.pairs)
        if loss is not None:
            self._losses.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)

    def has_pending(self) -> bool:
        return bool(self._records or self._host) or bool(self.stager is not None and self.stager.micro_batches)

    def discard(self) -> None:
        self.copier.discard()
        if self.stager is not None:
            self.stager.reset()
        self._records.clear()
        self._host.clear()
        self._implicit.clear()
        self._losses.clear()

    # ---- step boundary --------------------------------------------------------------------------
    def take_pending(self, step: int) -> Callable[[], StepPayload] | None:
        """The step's flatten, to run on the staging thread; O(micro-batches) here. None when nothing was
        staged. Device micro-batches (and anything already in the synchronous stager) flatten here, now."""
        if not self._host:
            payload = self.take_step(step)
            return None if payload is None else (lambda: payload)
        host, self._host = self._host, []
        if self._records or self.stager.micro_batches:  # mixed devices in one step: synchronously, as before
            self._host = host
            payload = self.take_step(step)
            return lambda: payload
        implicit = sorted(self._implicit)
        loss = float(sum(float(x) for x in self._losses)) if self._losses else None
        self._losses = []
        self._implicit.clear()

        def build() -> StepPayload:
            for rec in host:
                self._bg_stager.add(_resolved(rec))
            return self._finish(step, self._bg_stager, implicit, loss)

        return build

    def take_step(self, step: int) -> StepPayload | None:
        """Flatten everything staged since the last call into one step; None when nothing was staged."""
        if not self.has_pending():
            return None
        implicit = sorted(self._implicit)
        loss = float(sum(float(x) for x in self._losses)) if self._losses else None
        for rec in self._host:  # kept by reference (defer_host) but flattened synchronously: in arrival order
            self.stager.add(_resolved(rec))
        self._host = []
        records = self._records
        self._records, self._losses = [], []
        self._implicit.clear()
        if self.stager is None:  # sketch mode: the step stays on its device
            host = self.copier.finish()
            records = [{k: host[h] for k, h in rec.items()} for rec in records]
            payload = flatten_device(records, implicit)
            payload.slice_names = self.slice_names
            if self.options.retain_captured:  # test hook: the raw-mode view of the same step (a host copy)
                self.captured.append((step, flatten([{k: v.cpu() for k, v in r.items()} for r in records],
                                                    implicit).arrays))
                self.captured_implicit[step] = list(payload.implicit)
            payload.loss = loss
            return payload
        if records:  # device micro-batches: their host copies land in the wire buffers now
            host = self.copier.finish(copy=False)
            for rec in records:
                self.stager.add({k: host[h] for k, h in rec.items()})
        return self._finish(step, self.stager, implicit, loss)

    def _finish(self, step: int, stager: StepStager, implicit: list[str], loss: float | None) -> StepPayload:
        mbs, tokens = stager.micro_batches, stager.tokens
        arrays, implicit, n_seqs = stager.take(implicit)
        payload = StepPayload(arrays, implicit, self.slice_names, tokens, n_seqs, mbs, loss)
        if self.options.retain_captured:
            self.captured.append((step, {k: v.copy() for k, v in payload.arrays.items()}))
            self.captured_implicit[step] = list(payload.implicit)
        return payload


def _stage_dtype(name: str, stager: StepStager | None) -> torch.dtype:
    """The dtype a device tensor is converted to before it leaves the device (its wire dtype; bool masks)."""
    if name == "completion_mask":
        return torch.bool if stager is not None else torch.uint8
    return TOKEN_ARRAYS.get(name) or SEQ_ARRAYS[name]


def flatten(records: list[dict[str, Any]], implicit: list[str]) -> StepPayload:
    """Concatenate micro-batches, keeping completion tokens only (see module docstring)."""
    st = StepStager()
    for r in records:
        st.add(r)
    mbs, tokens = st.micro_batches, st.tokens
    arrays, implicit, n_seqs = st.take(list(implicit))
    return StepPayload(arrays, implicit, None, tokens, n_seqs, mbs)


def flatten_device(records: list[dict[str, torch.Tensor]], implicit: list[str]) -> StepPayload:
    """Sketch mode's flatten: concatenate the padded (B, T) micro-batches on their device, padding included.

    No boolean selection (it would sync and copy): each row is a sequence, `offsets` are row boundaries,
    and padding keeps `completion_mask` 0, which `compute_sketch` leaves out of every slice. Per-sequence
    arrays are not needed by the sketch and are not flattened (`slice_ids` are). `arrays` holds device
    tensors; `tokens` is the count of completion tokens (what raw mode would send; one device sync at the
    step boundary).
    """
    pairs = [n for n in PAIRS if any(n in r for r in records)]
    for name in list(pairs):
        if not all(name in r for r in records):
            if name in implicit:
                for r in records:
                    if name not in r:
                        r[name] = torch.zeros(r["completion_mask"].shape, dtype=torch.float32,
                                              device=r["completion_mask"].device)
            else:
                logger.warning("tailguard: %s missing from some micro-batches of the step; not sent", name)
                pairs.remove(name)
    cms = [r["completion_mask"].reshape(r["completion_mask"].shape[0], -1) for r in records]
    dev = cms[0].device
    widths = torch.tensor([w for cm in cms for w in [cm.shape[1]] * cm.shape[0]], dtype=torch.int64)
    offsets = torch.zeros(len(widths) + 1, dtype=torch.int64)
    torch.cumsum(widths, 0, out=offsets[1:])
    arrays: dict[str, torch.Tensor] = {"completion_mask": torch.cat([cm.reshape(-1) for cm in cms])}
    arrays["tool_mask"] = torch.cat([r["tool_mask"].reshape(-1) if "tool_mask" in r else
                                     torch.ones(cm.numel(), dtype=torch.uint8, device=dev)
                                     for r, cm in zip(records, cms)])
    for name in pairs:
        arrays[name] = torch.cat([r[name].reshape(-1) for r in records])
    if any("slice_ids" in r for r in records):  # user slices; a micro-batch without ids is in none (-1)
        arrays["slice_ids"] = torch.cat([r["slice_ids"].reshape(-1) if "slice_ids" in r else
                                         torch.full((cm.numel(),), -1, dtype=torch.int32, device=dev)
                                         for r, cm in zip(records, cms)])
    arrays["offsets"] = offsets.to(dev)
    for p in implicit:  # implicit pairs carry no buffer: the engine knows they are identically 0
        if p in arrays and not bool(arrays[p].any()):
            del arrays[p]
    implicit = [p for p in implicit if p not in arrays]
    tokens = int(torch.count_nonzero(arrays["completion_mask"]))
    return StepPayload(arrays, implicit, None, tokens, len(widths), len(records))
