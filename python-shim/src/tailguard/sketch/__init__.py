"""Sketch mode: per-step histograms and exact sums computed on the tensors' own device,
reduced across ranks with ``torch.distributed``, so that rank 0 sends one small message
whose size depends on neither the token count nor the number of ranks.

The layout is the engine's (proto/README.md "Sketch payloads", docs/sketch.md):

- ``sketch/<pair>/<slice>/hist``: counts of finite |ℓ| per float32-bit bin (HIST_BINS = 16386). On the wire
  (``hist.coding: "runs"``) u8 LEB128 (gap, length, first count, zigzag differences...) per run of non-zero
  bins, and ``all``'s empty (it is pre_tool + post_tool), so a pair stays under 64 KB a step (docs/sketch.md);
  ``"varint"`` (gap, count per bin) and ``"dense"`` (f64[16386]) still decode.
- ``sketch/<pair>/<slice>/sums`` (f64, ``len(SUMS_FIELDS)``): the exact sums, in ``SUMS_FIELDS`` order.

Counts are held as f64 because a bin can exceed 2^32 at the scale this mode is for
(10^8 tokens per rank × 43 ranks); f64 counts are exact up to 2^53.

Example:

>>> import torch
>>> from tailguard.sketch import compute_sketch
>>> lr = torch.tensor([0.0, 0.5, -1.0, 2.0])
>>> sk = compute_sketch({"policy_vs_ref": lr}, torch.ones(4, dtype=torch.uint8),
...                     torch.tensor([1, 0, 1, 1], dtype=torch.uint8), torch.tensor([0, 4]))
>>> int(sk.field("policy_vs_ref", "post_tool", "n"))
2

Files: `layout.py` (bins, sums fields, `Sketch`), `compute.py` (one rank's sketch, merging), `reduce.py`
(across ranks), `metrics.py` (reading a sketch), `send.py` (header fields, the callback's sketch step).
"""

from .compute import *  # noqa: F403
from .compute import _K3_SERIES_MAX, _k3_terms, _merge_rows  # noqa: F401 - tests check these kernels directly
from .layout import *  # noqa: F403
from .metrics import *  # noqa: F403
from .reduce import *  # noqa: F403
from .send import *  # noqa: F403
