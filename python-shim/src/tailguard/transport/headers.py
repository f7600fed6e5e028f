"""Headers of the messages the client builds (`hello`, `step`, `ack`, `bye`; proto/README.md), and the
conversions that keep knob, log and config values msgpack-safe."""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

from ..wire import PROTOCOL_VERSION, encode_message, encode_step


def _plain(v: Any) -> Any:
    """msgpack-safe copies of knob/log/config values (numpy and torch scalars become Python numbers)."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _numbers(m: Mapping[str, Any] | None) -> dict:
    """Knobs and logs on the wire are numbers or nil: convert scalars, drop anything else."""
    out = {}
    for k, v in (m or {}).items():
        v = _plain(v)
        if isinstance(v, bool):
            v = int(v)
        if v is None or isinstance(v, (int, float)):
            out[str(k)] = v
    return out


def step_header(sender: Any, step: int, knobs=None, logs=None, implicit: Iterable[str] = (), checkpoint=None) -> dict:
    """The `step` header fields shared by raw and sketch steps; `sender` gives run_id, rank and world_size."""
    header = {
        "type": "step",
        "version": list(PROTOCOL_VERSION),
        "run_id": sender.run_id,
        "rank": sender.rank,
        "world_size": sender.world_size,
        "step": int(step),
        "implicit": list(implicit),
        "knobs": _numbers(knobs),
        "logs": _numbers(logs),
        "sent_at": time.time(),
    }
    if checkpoint is not None:
        # A checkpoint saved at this step: the engine certifies it once later windows are healthy.
        header["checkpoint"] = {"step": int(checkpoint["step"]), "path": str(checkpoint["path"])}
    return header


def hello_header(c: Any, client_version: str, resume: bool | None) -> dict:
    """`resume` (v1.1): False = a new training run (the engine refuses a run id that has steps with
    `E_RUN_EXISTS`), True = continue the run's steps; None leaves it out (v1.0: continue silently)."""
    h = {
        "type": "hello",
        "version": list(PROTOCOL_VERSION),
        "run_id": c.run_id,
        "rank": c.rank,
        "world_size": c.world_size,
        "trainer": c.trainer,
        "mode": c.mode,
        "config": c.config,
        "client": {"name": "tailguard-python", "version": client_version},
        "checksum": c.checksum,
    }
    if resume is not None:
        h["resume"] = bool(resume)
    return h


def ack_header(c: Any, directive_id: str, step: int, applied: bool, changes: Iterable[Mapping[str, Any]] = (),
               refused: str | None = None) -> dict:
    return {
        "type": "ack",
        "version": list(PROTOCOL_VERSION),
        "run_id": c.run_id,
        "rank": c.rank,
        "directive_id": directive_id,
        "step": int(step),
        "applied": bool(applied),
        "changes": _plain(list(changes)),
        "refused": refused,
    }


def bye_header(c: Any, last_step: int | None, stats: Mapping[str, int]) -> dict:
    return {
        "type": "bye",
        "version": list(PROTOCOL_VERSION),
        "run_id": c.run_id,
        "rank": c.rank,
        "last_step": last_step,
        "stats": {"sent": stats["sent"], "dropped": stats["dropped"], "reconnects": stats["reconnects"]},
    }


def step_messages(sender: Any, step: int, arrays: Mapping[str, Any], limits: Mapping[str, int], knobs=None, logs=None,
                  implicit: Iterable[str] = (), slice_names=None, checkpoint=None, sketch=None) -> list:
    """One step's frame lists (one per chunk), raw or sketch: the only encoder of either (ProtocolError if not
    encodable). A sketch step (`sketch` = its header fields) is one message: its size is fixed by pairs × slices."""
    header = step_header(sender, step, knobs, logs, implicit, checkpoint)
    if slice_names is not None:
        header["slice_names"] = list(slice_names)
    if sketch is not None:
        return [encode_message({**header, "chunk": {"index": 0, "count": 1}, **sketch}, arrays)]
    return encode_step(header, arrays, limits)
