"""The Python vector runner: every case of every file in proto/v1/vectors (proto/README.md,
"How to write a vector runner"). The TypeScript runner reads the same files, so neither side drifts."""

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from tailguard.wire import ProtocolError, decode_message, pack_header

PROTO = Path(__file__).resolve().parents[2] / "proto" / "v1"
FILES = sorted((PROTO / "vectors").glob("*.json"))
CASES = [
    pytest.param(f, i, id=f"{f.stem}#{i}")
    for f in FILES
    for i in range(len(json.loads(f.read_text())["cases"]))
]
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def load_case(f: Path, i: int) -> dict:
    return json.loads(f.read_text())["cases"][i]


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
    assert len(FILES) >= 5 and len(CASES) >= 50


@pytest.mark.parametrize("f", FILES, ids=[f.stem for f in FILES])
def test_vector_file_matches_its_schema(f):
    schema = json.loads((PROTO / "vector-file.schema.json").read_text())
    jsonschema.validate(json.loads(f.read_text()), schema)


@pytest.mark.parametrize("f,i", CASES)
def test_vector(f, i):
    case = load_case(f, i)
    frames = [bytes.fromhex(h) for h in case["frames"]]
    if not case["valid"]:
        with pytest.raises(ProtocolError) as e:
            decode_message(frames)
        assert e.value.code == case["error"], f"{case['description']}: got {e.value}"
        return
    header, buffers = decode_message(frames)
    want = case["meaning"]
    assert same(header, want["header"]), f"{case['description']}: header {header} != {want['header']}"
    got_bufs = {k: [float(x) if v.dtype.kind == "f" else int(x) for x in v] for k, v in buffers.items()}
    assert same(got_bufs, want["buffers"]), f"{case['description']}: buffers {got_bufs}"
    # Decoded buffers are views of the frames, not copies.
    for (name, arr), frame in zip(buffers.items(), frames[1:]):
        if arr.size:
            assert np.shares_memory(arr, np.frombuffer(frame, np.uint8)), name
    # Re-encoding the decoded header with our pinned options keeps its meaning.
    header2, buffers2 = decode_message([pack_header(header), *frames[1:]])
    assert same(header2, want["header"])
    assert all(np.array_equal(buffers2[k], buffers[k], equal_nan=buffers[k].dtype.kind == "f") for k in buffers)


def _schema_for(header: dict) -> dict:
    return json.loads((PROTO / f"{header['type']}.schema.json").read_text())


@pytest.mark.parametrize("f,i", [c for c in CASES if load_case(*c.values)["valid"]])
def test_valid_headers_match_the_json_schema(f, i):
    case = load_case(f, i)
    header, _ = decode_message([bytes.fromhex(h) for h in case["frames"]])
    # JSON Schema has no NaN/Inf; the schemas describe those fields as numbers, so stand in a finite one.
    jsonschema.validate(_finite(header), _schema_for(header))


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return 0.0
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v
