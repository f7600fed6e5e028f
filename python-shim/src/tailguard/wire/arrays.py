"""Buffers as wire arrays (zero-copy when possible) and the FNV-1a step checksum.

torch is never imported here; a CPU tensor is recognised by its `.numpy()` method.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .tables import DTYPE_BYTES

# Wire dtype name -> little-endian numpy dtype: the kind is the name's letter, the size from proto/v1.
DTYPES: dict[str, np.dtype] = {name: np.dtype(f"<{name[0]}{size}") for name, size in DTYPE_BYTES.items()}


def as_wire_array(x: Any, dtype: str) -> np.ndarray:
    """A C-contiguous little-endian numpy array of the wire dtype; a view of `x` whenever possible.

    Accepts numpy arrays, CPU torch tensors (shared memory via `.numpy()`), and sequences.

    >>> a = np.arange(3, dtype="<f4")
    >>> as_wire_array(a, "f32") is a or np.shares_memory(as_wire_array(a, "f32"), a)
    True
    >>> as_wire_array([True, False], "u8")
    array([1, 0], dtype=uint8)
    """
    want = DTYPES[dtype]
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # torch.Tensor, without importing torch
        t = x.detach()
        if getattr(t, "device", None) is not None and t.device.type != "cpu":
            t = t.cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16") and want.kind == "f":
            t = t.float()  # numpy has no bfloat16; this is the one conversion that must copy
        x = t.numpy()
    a = np.asarray(x)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.dtype == want:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_ and want.itemsize == 1:
        return np.ascontiguousarray(a).view(want)  # bool masks are bytes already
    if a.dtype.kind == want.kind and a.dtype.itemsize == want.itemsize:
        return np.ascontiguousarray(a).astype(want, copy=False)  # byte order only
    return np.ascontiguousarray(a, dtype=want)


def frame_view(a: np.ndarray) -> memoryview:
    """A byte view of a contiguous array, for `send_multipart(copy=False)`."""
    return memoryview(a).cast("B")


FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a32(data: bytes | memoryview | np.ndarray, h: int = FNV_OFFSET) -> int:
    """FNV-1a 32-bit, continuing from `h` so a checksum can run across frames and chunks.

    >>> hex(fnv1a32(b"a"))
    '0xe40c292c'
    """
    if isinstance(data, np.ndarray):
        data = frame_view(np.ascontiguousarray(data))
    for b in bytes(data):
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFF
    return h


def step_checksum(buffer_frames: Iterable[bytes | memoryview | np.ndarray]) -> int:
    """`received.checksum`: FNV-1a over every buffer frame of a step, in frame order across chunks."""
    h = FNV_OFFSET
    for f in buffer_frames:
        h = fnv1a32(f, h)
    return h
