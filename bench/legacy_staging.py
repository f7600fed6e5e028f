"""The raw capture's staging as it was before issue 17's fused staging (commit d4a79db), kept for the
overhead bench's same-run baseline only: each micro-batch converted to wire dtypes (`HostCopier`: int64
masks → uint8 copies), then at the boundary a boolean selection per array and micro-batch and one
concatenate per array, into fresh arrays every step."""

from __future__ import annotations

import numpy as np
import torch

from tailguard.capture.base import SEQ_ARRAYS, TOKEN_ARRAYS, StepPayload
from tailguard.capture.grpo import GRPOCapture
from tailguard.hostcopy import HostCopier
from tailguard.options import PAIRS


class LegacyGRPOCapture(GRPOCapture):
    def __init__(self, trainer, options):
        super().__init__(trainer, options)
        self.copier = HostCopier(pin_memory=options.pin_memory)
        self.stager = None
        self._legacy: list[dict[str, int]] = []

    def stage_micro_batch(self, completion_mask, token, seq, implicit=(), loss=None):
        rec = {"completion_mask": self.copier.stage(completion_mask, torch.uint8)}
        for name, t in token.items():
            if t is not None and (name not in PAIRS or name in self.options.pairs):
                rec[name] = self.copier.stage(t, TOKEN_ARRAYS[name])
        for name, t in seq.items():
            if t is not None:
                rec[name] = self.copier.stage(t.reshape(-1), SEQ_ARRAYS[name])
        self._legacy.append(rec)
        self._implicit.update(p for p in implicit if p in self.options.pairs)

    def take_step(self, step):
        host = self.copier.finish()
        records = [{k: host[h] for k, h in rec.items()} for rec in self._legacy]
        self._legacy = []
        implicit = sorted(self._implicit)
        self._implicit.clear()
        token_names = [n for n in TOKEN_ARRAYS if any(n in r for r in records)]
        seq_names = [n for n in SEQ_ARRAYS if all(n in r for r in records)]
        parts: dict[str, list[np.ndarray]] = {n: [] for n in token_names + seq_names}
        lengths = []
        for r in records:
            sel = r["completion_mask"].astype(bool)
            lengths.append(sel.sum(axis=1))
            for n in token_names:
                parts[n].append(r[n][sel])
            for n in seq_names:
                parts[n].append(r[n])
        lens = np.concatenate(lengths).astype(np.int64)
        offsets = np.zeros(len(lens) + 1, np.int32)
        np.cumsum(lens, out=offsets[1:])
        tokens = int(offsets[-1])
        arrays = {n: np.concatenate(parts[n]) for n in token_names + seq_names}
        arrays["completion_mask"] = np.ones(tokens, np.uint8)
        arrays["offsets"] = offsets
        for p in implicit:
            if p in arrays and not np.any(arrays[p]):
                del arrays[p]
        implicit = [p for p in implicit if p not in arrays]
        return StepPayload(arrays, implicit, None, tokens, len(lens), len(records))
