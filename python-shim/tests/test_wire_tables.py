"""One definition of the wire: wire/tables.py is generated from proto/v1 and must be current, and the
shim's ordered schema walk agrees with an independent JSON Schema validator (`jsonschema`)."""

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tailguard.wire import SCHEMAS, ProtocolError
from tailguard.wire.validate import _PREPARED
from tailguard.wire.schema_check import check_object, check_value

ROOT = Path(__file__).resolve().parents[2]


def test_generated_tables_are_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "proto" / "gen_wire_tables.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


STEP = {
    "type": "step", "version": [1, 0], "run_id": "r1", "rank": 0, "world_size": 2, "step": 3,
    "chunk": {"index": 0, "count": 1}, "tokens": 4, "n_seqs": 1,
    "buffers": [{"name": "completion_mask", "dtype": "u8", "length": 4}], "implicit": ["policy_vs_old"],
    "knobs": {"epsilon": 0.2}, "logs": {"loss": 1.0}, "slice_names": ["a"], "sent_at": 1.5, "sketch": False,
}  # fmt: skip
DIRECTIVE = {
    "type": "directive", "version": [1, 0], "run_id": "r1", "rank": 0, "step": 3, "metrics": {"abs_q99": 1},
    "metrics_step": None,
    "directive": {"id": "d1", "action": "warn", "step": 3, "apply_at_step": 4, "params": {}, "reason": "x", "evidence": {}},
    "received": {"tokens": 4, "n_seqs": 1, "slices": {"all": 4, "pre_tool": 4, "post_tool": 0, "tool_output": 0}, "checksum": 7},
}  # fmt: skip
ACK = {"type": "ack", "version": [1, 0], "run_id": "r1", "rank": 0, "directive_id": "d1", "step": 3, "applied": True,
       "changes": [{"knob": "epsilon", "old": 0.2, "new": 0.1}]}  # fmt: skip
DELETE = object()
BAD = [DELETE, None, "x", -1, 1.5, 2**53, {}, [], True]  # JSON values only: jsonschema has no NaN/Inf


def _paths(o, path=()):
    for k, v in o.items():
        if not path and k in ("type", "version", "sketch"):  # B3/B4; sketch: true switches to stage D
            continue
        yield (*path, k)
        if isinstance(v, dict):
            yield from _paths(v, (*path, k))


def _mutants(h):
    for path in _paths(h):
        for bad in BAD:
            m = copy.deepcopy(h)
            o = m
            for k in path[:-1]:
                o = o[k]
            if bad is DELETE:
                del o[path[-1]]
            else:
                o[path[-1]] = bad
            yield m


def _walk_passes(h) -> bool:
    fields, item, dtypes = _PREPARED[h["type"]]
    try:
        check_object(fields, h)
        for b in h.get("buffers") or []:
            check_value(item, b, "buffers[]")
            if b["dtype"] not in dtypes:
                return False
    except ProtocolError:
        return False
    return True


@pytest.mark.parametrize("base", [STEP, DIRECTIVE, ACK], ids=["step", "directive", "ack"])
def test_schema_walk_agrees_with_jsonschema(base):
    validator = jsonschema.Draft7Validator(SCHEMAS[base["type"]])
    n = 0
    for m in _mutants(base):
        assert _walk_passes(m) == validator.is_valid(m), m
        n += 1
    assert n > 50
