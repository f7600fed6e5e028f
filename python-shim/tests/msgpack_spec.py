"""A second, independent msgpack reader for the golden vectors, written from the msgpack spec
(https://github.com/msgpack/msgpack/blob/master/spec.md) and nothing else: no msgpack package, no
msgpackr. The vectors are produced by the engine's encoder; the shim decodes them with the `msgpack`
package; this reader checks both against the format itself.

Scope: the types a header may hold (nil, bool, int, float, str, array, map). bin/ext raise `Rejected`
(the spec allows them; proto/README.md does not), as do truncation and trailing bytes.
"""

from __future__ import annotations

import struct


class Rejected(ValueError):
    """Not one msgpack value of the header subset."""


def decode(data: bytes) -> object:
    """One msgpack value filling `data` exactly."""
    value, end = _read(data, 0)
    if end != len(data):
        raise Rejected(f"{len(data) - end} trailing bytes")
    return value


def _take(data: bytes, pos: int, n: int) -> tuple[bytes, int]:
    if pos + n > len(data):
        raise Rejected(f"truncated: need {n} bytes at {pos}")
    return data[pos : pos + n], pos + n


def _uint(data: bytes, pos: int, n: int) -> tuple[int, int]:
    raw, pos = _take(data, pos, n)
    return int.from_bytes(raw, "big"), pos


def _read(data: bytes, pos: int) -> tuple[object, int]:
    b, pos = _uint(data, pos, 1)
    if b <= 0x7F:  # positive fixint
        return b, pos
    if b >= 0xE0:  # negative fixint
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F:
        return _map(data, pos, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _array(data, pos, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        return _str(data, pos, b & 0x1F)
    if b == 0xC0:
        return None, pos
    if b in (0xC2, 0xC3):
        return b == 0xC3, pos
    if b in (0xCA, 0xCB):  # float 32 / float 64, big-endian IEEE 754
        raw, pos = _take(data, pos, 4 if b == 0xCA else 8)
        return struct.unpack(">f" if b == 0xCA else ">d", raw)[0], pos
    if 0xCC <= b <= 0xCF:  # uint 8/16/32/64
        return _uint(data, pos, 1 << (b - 0xCC))
    if 0xD0 <= b <= 0xD3:  # int 8/16/32/64, two's complement
        n = 1 << (b - 0xD0)
        raw, pos = _take(data, pos, n)
        return int.from_bytes(raw, "big", signed=True), pos
    if 0xD9 <= b <= 0xDB:  # str 8/16/32
        n, pos = _uint(data, pos, 1 << (b - 0xD9))
        return _str(data, pos, n)
    if b in (0xDC, 0xDD):  # array 16/32
        n, pos = _uint(data, pos, 2 if b == 0xDC else 4)
        return _array(data, pos, n)
    if b in (0xDE, 0xDF):  # map 16/32
        n, pos = _uint(data, pos, 2 if b == 0xDE else 4)
        return _map(data, pos, n)
    raise Rejected(f"type byte 0x{b:02x} (bin, ext or never-used) is not allowed in a header")


def _str(data: bytes, pos: int, n: int) -> tuple[str, int]:
    raw, pos = _take(data, pos, n)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError as e:
        raise Rejected(f"str is not UTF-8: {e}") from None


def _array(data: bytes, pos: int, n: int) -> tuple[list, int]:
    out = []
    for _ in range(n):
        v, pos = _read(data, pos)
        out.append(v)
    return out, pos


def _map(data: bytes, pos: int, n: int) -> tuple[dict, int]:
    out: dict = {}
    for _ in range(n):
        k, pos = _read(data, pos)
        v, pos = _read(data, pos)
        if not isinstance(k, str):
            raise Rejected(f"map key {k!r} is not a str")
        out[k] = v
    return out, pos
