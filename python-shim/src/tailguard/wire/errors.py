"""`ProtocolError` and how a value is described in its messages (the same words as the engine)."""

from __future__ import annotations

import math
from typing import Any


class ProtocolError(Exception):
    """A message that breaks the spec. `code` is the stable `E_*` code of proto/README.md.

    Example:

    >>> e = ProtocolError("E_RUN_ID", "run_id '.x' does not match")
    >>> e.code, str(e)
    ('E_RUN_ID', "E_RUN_ID: run_id '.x' does not match")
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def describe(v: Any) -> str:
    """What a value is, for error messages.

    >>> describe(None), describe(7), describe(7.5), describe(float("nan")), describe("ab")
    ('nil', 'int 7', 'float 7.5', 'NaN', "str 'ab'")
    """
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, list):
        return "array"
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    if isinstance(v, (int, float)):
        return f"{'int' if float(v).is_integer() else 'float'} {v}"
    if isinstance(v, str):
        return f"str {v[:40]!r}"
    return "bin" if isinstance(v, (bytes, bytearray)) else type(v).__name__
