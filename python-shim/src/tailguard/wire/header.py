"""msgpack header frames (proto/README.md "msgpack rules"): options pinned for interop, stages B1 + B2."""

from __future__ import annotations

from typing import Any, Mapping

import msgpack

from .errors import ProtocolError, describe

MAX_HEADER_DEPTH = 64  # the header map is level 1; deeper is E_HEADER_DECODE (same as the engine)


def pack_header(header: Mapping[str, Any]) -> bytes:
    """One msgpack map: str as str, floats as float64 (never single), ints in their smallest form.

    >>> pack_header({"a": 1}).hex()
    '81a16101'
    """
    return msgpack.packb(header, use_bin_type=True, use_single_float=False, strict_types=False)


class _Pairs(list):
    """A decoded msgpack map before its keys are checked (keys may be unhashable or non-strings)."""


def unpack_header(frame: bytes | memoryview) -> dict:
    """Stages B1 + B2: one msgpack value → a map with string keys at every depth.

    >>> unpack_header(bytes.fromhex("81a16101"))
    {'a': 1}
    >>> unpack_header(b"\\x91\\x01")
    Traceback (most recent call last):
    ...
    tailguard.wire.errors.ProtocolError: E_HEADER_TYPE: frame 0 must be a msgpack map, got array
    """
    try:
        # Maps arrive as key/value pairs so that any key type reaches our own check (E_HEADER_TYPE);
        # raw=False decodes msgpack str as UTF-8; trailing bytes raise ExtraData.
        raw = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=False, use_list=True, object_pairs_hook=_Pairs)
    except Exception as e:  # noqa: BLE001 - any decoder failure is bad input, never a crash
        raise ProtocolError("E_HEADER_DECODE", f"frame 0 is not one valid msgpack object ({type(e).__name__}: {e})") from None
    if _too_deep(raw):
        raise ProtocolError("E_HEADER_DECODE", f"frame 0 nests arrays/maps deeper than {MAX_HEADER_DEPTH} levels")
    out = _plain(raw, "header")
    if not isinstance(out, dict):
        raise ProtocolError("E_HEADER_TYPE", f"frame 0 must be a msgpack map, got {describe(out)}")
    return out


def _too_deep(root: Any) -> bool:
    # Iterative: a recursive walk hit Python's recursion limit (E_INTERNAL) on ~1000-deep headers.
    stack = [(root, 1)]
    while stack:
        v, d = stack.pop()
        kids = [x for kv in v for x in kv] if isinstance(v, _Pairs) else v if isinstance(v, list) else None
        if kids is None:
            continue
        if d > MAX_HEADER_DEPTH:
            return True
        stack.extend((k, d + 1) for k in kids if isinstance(k, (list, _Pairs)))
    return False


def _plain(v: Any, path: str) -> Any:
    # Allowed: nil, bool, int, float, str, array, map. bin, ext and timestamps are not.
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, _Pairs):
        o: dict[str, Any] = {}
        for k, x in v:
            if not isinstance(k, str):
                key = "map" if isinstance(k, _Pairs) else describe(k)
                raise ProtocolError("E_HEADER_TYPE", f"{path} has a non-string key ({key}); keys must be msgpack str")
            if k == "__proto__":
                continue  # the engine drops it too (prototype safety); keep both sides equal
            o[k] = _plain(x, f"{path}.{k}")
        return o
    if isinstance(v, list):
        return [_plain(x, f"{path}[{i}]") for i, x in enumerate(v)]
    kind = "bin" if isinstance(v, (bytes, bytearray)) else "timestamp ext" if isinstance(v, msgpack.Timestamp) else "ext"
    raise ProtocolError("E_HEADER_DECODE", f"{path}: {kind} values are not allowed in a header")
