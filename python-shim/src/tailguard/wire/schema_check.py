"""The ordered walk over a proto/v1 schema that names the FIRST failure with its stable code
(proto/README.md "Validation order", B5/B6). Same walk as ts-core/src/protocol/schema-check.ts."""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any, NoReturn

from .errors import ProtocolError, describe

MAX_SAFE_INT = 2**53 - 1
Schema = dict


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v: Any) -> bool:
    # An integral float (7.0) counts as an integer (JavaScript cannot tell them apart); NaN and ±Inf do not.
    return _is_num(v) and (isinstance(v, int) or (math.isfinite(v) and v.is_integer()))


_IS = {
    "integer": is_int,
    "number": _is_num,
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}
_WORDS = {"string": "a string", "boolean": "a boolean", "null": "nil", "object": "a map", "array": "an array"}


def _fail(code: str, msg: str) -> NoReturn:
    raise ProtocolError(code, msg)


def wants(s: Schema) -> str:
    """What a schema wants, in words.

    >>> wants({"type": "integer", "minimum": 0, "maximum": 2**53 - 1})
    'a non-negative integer'
    >>> wants({"type": ["number", "null"]})
    'a number or nil'
    """
    t = s.get("type")
    types = [] if t is None else t if isinstance(t, list) else [t]

    def word(t: str) -> str:
        if t == "integer" and s.get("maximum") == MAX_SAFE_INT:
            return {0: "a non-negative integer", 1: "a positive integer"}.get(s.get("minimum"), "an integer")
        if t == "integer":
            return f"an integer in [{s.get('minimum', '-inf')}, {s['maximum']}]" if "maximum" in s else "an integer"
        if t == "number":
            return "a finite number" if "maximum" in s else "a number"
        return _WORDS.get(t, t)

    return " or ".join(word(t) for t in types)


@lru_cache(maxsize=None)
def _regex(p: str) -> re.Pattern:
    # JSON Schema patterns are ECMA-262: a final `$` is the end of the string; Python's also matches before "\n".
    return re.compile(p[:-1] + r"\Z" if p.endswith("$") and not p.endswith(r"\$") else p)


def check_value(s: Schema, v: Any, path: str) -> None:
    """Check one value against a schema; raises the first failure as a `ProtocolError`.

    >>> check_value({"type": "integer", "minimum": 1, "maximum": 2**53 - 1}, 0, "count")
    Traceback (most recent call last):
    ...
    tailguard.wire.errors.ProtocolError: E_FIELD_TYPE: count must be a positive integer, got int 0
    """
    alts = s.get("oneOf") or s.get("anyOf")
    if alts:
        # proto/v1 uses oneOf/anyOf only as "nil or X": nil passes the nil branch, anything else is checked against X.
        if v is None and any(b.get("type") == "null" for b in alts):
            return
        non_null = [b for b in alts if b.get("type") != "null"]
        if any(matches(b, v) for b in non_null[:-1]):
            return
        return check_value(non_null[-1], v, path)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_IS[t](v) for t in types):
            _fail("E_FIELD_TYPE", f"{path} must be {wants(s)}, got {describe(v)}")
        if v is None:
            return
    if "const" in s and json.dumps(s["const"]) != json.dumps(v):
        _fail("E_FIELD_TYPE", f"{path} must be {json.dumps(s['const'])}, got {describe(v)}")
    if "enum" in s and v not in s["enum"]:
        _fail("E_FIELD_TYPE", f"{path} must be one of {'|'.join(map(str, s['enum']))}, got {describe(v)}")
    if _is_num(v) and ("minimum" in s or "maximum" in s):  # the bounds exclude NaN (as in ajv)
        if math.isnan(v) or v < s.get("minimum", -math.inf) or v > s.get("maximum", math.inf):
            _fail("E_FIELD_TYPE", f"{path} must be {wants(s) or 'in range'}, got {describe(v)}")
    if isinstance(v, str) and "pattern" in s and not _regex(s["pattern"]).search(v):
        if path == "run_id":
            _fail("E_RUN_ID", f"run_id {v!r} does not match {s['pattern']}")
        _fail("E_FIELD_TYPE", f"{path} {v[:40]!r} does not match {s['pattern']}")
    if isinstance(v, list):
        _check_array(s, v, path)
    elif isinstance(v, dict) and ("properties" in s or "required" in s or "additionalProperties" in s):
        check_object(s, v, f"{path}.")


def _check_array(s: Schema, v: list, path: str) -> None:
    lo, hi = s.get("minItems", 0), s.get("maxItems")
    if len(v) < lo or (hi is not None and len(v) > hi):
        _fail("E_FIELD_TYPE", f"{path} must have {lo}..{'any' if hi is None else hi} items, got {len(v)}")
    items = s.get("items")
    if isinstance(items, list):
        for i, (it, x) in enumerate(zip(items, v)):
            check_value(it, x, f"{path}[{i}]")
    elif items is not None:
        for i, x in enumerate(v):
            check_value(items, x, f"{path}[{i}]")


def matches(s: Schema, v: Any) -> bool:
    """Does `v` satisfy `s`? (for `if` and for the non-last branches of oneOf)"""
    try:
        check_value(s, v, "")
    except ProtocolError:
        return False
    return True


def _field_order(base: Schema, branch: Schema | None) -> list[tuple[str, bool, Schema]]:
    """Fields in check order: the chosen if/then/else branch's `required`, then the schema's own
    `required`, then the other `properties`, each in file order."""
    props = {**base.get("properties", {}), **((branch or {}).get("properties", {}))}
    req = [*(branch or {}).get("required", []), *base.get("required", [])]
    names = list(dict.fromkeys([*req, *props]))
    return [(n, n in req, props.get(n, {})) for n in names]


def check_object(s: Schema, h: dict, prefix: str = "") -> None:
    """An object's fields in order: missing and required → E_MISSING_FIELD; else the field's own schema."""
    branch = (s.get("then") if matches(s["if"], h) else s.get("else")) if "if" in s else None
    for name, required, sub in _field_order(s, branch):
        if name not in h:
            if required:
                _fail("E_MISSING_FIELD", f"missing required field {prefix}{name}")
            continue
        check_value(sub, h[name], prefix + name)
    extra = s.get("additionalProperties")
    if isinstance(extra, dict):
        known = s.get("properties", {})
        for k, x in h.items():
            if k not in known:
                check_value(extra, x, prefix + k)
