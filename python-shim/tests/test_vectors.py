"""The Python vector runner: every case of every file in proto/v1/vectors (proto/README.md,
"How to write a vector runner"). The TypeScript runner reads the same files, so neither side drifts."""

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import msgpack_spec
from tailguard.wire import MAX_HEADER_DEPTH, ProtocolError, decode_message, pack_header

PROTO = Path(__file__).resolve().parents[2] / "proto" / "v1"
FILES = sorted((PROTO / "vectors").glob("*.json"))
N_CASES = sum(len(json.loads(f.read_text())["cases"]) for f in FILES)
IDS = [f.stem for f in FILES]
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def same(got, want) -> bool:
    """Meaning equality: numbers by value (1 == 1.0), {"$float": ...} for NaN/±Inf, maps and lists deeply."""
    if isinstance(want, dict) and set(want) == {"$float"}:
        w = SPECIAL[want["$float"]]
        return isinstance(got, float) and (math.isnan(got) if math.isnan(w) else got == w)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(same(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return type(got) is type(want) and got == want
    return isinstance(got, (int, float)) and not isinstance(got, bool) and got == want


def test_there_are_vectors():
    assert len(FILES) >= 5 and N_CASES >= 50


@pytest.mark.parametrize("f", FILES, ids=[f.stem for f in FILES])
def test_vector_file_matches_its_schema(f):
    schema = json.loads((PROTO / "vector-file.schema.json").read_text())
    jsonschema.validate(json.loads(f.read_text()), schema)


def run_case(case: dict) -> None:
    frames = [bytes.fromhex(h) for h in case["frames"]]
    if not case["valid"]:
        with pytest.raises(ProtocolError) as e:
            decode_message(frames)
        assert e.value.code == case["error"], f"got {e.value}"
        return
    header, buffers = decode_message(frames)
    want = case["meaning"]
    assert same(header, want["header"]), f"header {header} != {want['header']}"
    got_bufs = {k: [float(x) if v.dtype.kind == "f" else int(x) for x in v] for k, v in buffers.items()}
    assert same(got_bufs, want["buffers"]), f"buffers {got_bufs}"
    # Decoded buffers are views of the frames, not copies.
    for (name, arr), frame in zip(buffers.items(), frames[1:]):
        if arr.size:
            assert np.shares_memory(arr, np.frombuffer(frame, np.uint8)), name
    # Re-encoding the decoded header with our pinned options keeps its meaning.
    header2, buffers2 = decode_message([pack_header(header), *frames[1:]])
    assert same(header2, want["header"])
    assert all(np.array_equal(buffers2[k], buffers[k], equal_nan=buffers[k].dtype.kind == "f") for k in buffers)


def each_case(f: Path, check) -> None:
    """Run `check` on every case of a file and report every failure at once (one test per file)."""
    failures = []
    for i, case in enumerate(json.loads(f.read_text())["cases"]):
        try:
            check(case)
        except AssertionError as e:
            failures.append(f"{f.stem}#{i} {case['description']}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_vectors(f):
    each_case(f, run_case)


def read_independently(case: dict) -> None:
    """The header frame read by msgpack_spec (written from the msgpack spec, no msgpack package)."""
    frame0 = bytes.fromhex(case["frames"][0])
    code = case.get("error")
    try:
        header = msgpack_spec.decode(frame0)
    except msgpack_spec.Rejected as e:
        assert code in ("E_HEADER_DECODE", "E_HEADER_TYPE"), f"the spec reader rejects a header the shim accepts: {e}"
        return
    if code == "E_HEADER_DECODE":
        assert _depth(header) > MAX_HEADER_DEPTH, f"the spec reader accepts {header!r}, a decode error for the shim"
    elif code == "E_HEADER_TYPE":
        assert not isinstance(header, dict), f"the spec reader reads a map: {header!r}"
    elif case["valid"]:
        assert same(header, case["meaning"]["header"]), f"spec reader: {header} != {case['meaning']['header']}"


def _depth(v) -> int:
    kids = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
    return 0 if kids is None else 1 + max(map(_depth, kids), default=0)


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_vectors_read_by_an_independent_msgpack_reader(f):
    each_case(f, read_independently)


def _schema_for(header: dict) -> dict:
    return json.loads((PROTO / f"{header['type']}.schema.json").read_text())


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_valid_headers_match_the_json_schema(f):
    def check(case):
        if case["valid"]:
            header, _ = decode_message([bytes.fromhex(h) for h in case["frames"]])
            # JSON Schema has no NaN/Inf; the schemas describe those fields as numbers, so stand in a finite one.
            jsonschema.validate(_finite(header), _schema_for(header))

    each_case(f, check)


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return 0.0
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
