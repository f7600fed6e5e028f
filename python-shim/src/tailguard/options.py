"""Callback options: one defaults literal, one validator, one error type.

Every option is documented in docs/trl.md (name, type, default, one paragraph). Environment
variables are read here too, so the precedence (argument > environment > default) lives in one place.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .wire import PAIRS, RUN_ID_PATTERN

FAIL_MODES = ("fail_open", "fail_closed")
# sketch_per_rank=None: per-rank summaries up to this many ranks (≤ 8 KB a pair a step with the built-in slices).
SKETCH_PER_RANK_AUTO_MAX = 64
RUN_ID_RE = re.compile(RUN_ID_PATTERN)

# Environment variables the shim reads. Documented in docs/trl.md and in TailguardCallback's docstring.
ENV_ENDPOINT = "TAILGUARD_ENDPOINT"
ENV_RUN_ID = "TAILGUARD_RUN_ID"
ENV_DISABLE = "TAILGUARD_DISABLE"
ENV_ALLOW_UNTESTED_TRL = "TAILGUARD_ALLOW_UNTESTED_TRL"


@dataclass(frozen=True)
class Options:
    """Validated callback options. Build with `parse_options(**kwargs)`, never directly."""

    run_id: str | None = None
    pairs: tuple[str, ...] = PAIRS
    send_budget_s: float = 0.05
    queue_max_steps: int = 8
    connect_timeout_s: float = 5.0
    fail_mode: str = "fail_open"
    log_metrics: bool | str = True  # True: the curated headline set (logmetrics.py); "full": every measured metric
    log_wait_s: float = 1.0  # step N's metrics in step N's log when the engine answers within this
    metric_names: tuple[str, ...] | None = None
    send_token_ids: bool = False
    pin_memory: bool = True
    retain_captured: bool = False
    # control (directives.py / checkpoints.py)
    checkpoint_every: int = 0
    keep_certified: int = 2
    engine_lost_after_s: float = 3.0
    mode: str = "raw"  # "sketch": on-device histograms reduced over torch.distributed (docs/sketch.md)
    # sketch mode: also all-gather each rank's summary (rank_outlier); None = on up to SKETCH_PER_RANK_AUTO_MAX ranks
    sketch_per_rank: bool | None = None
    record_to: str | None = None  # recording of every raw step message, for `tailguard replay`
    # CURVE (docs/reliability.md): Z85 keys or zcert key files, handed to EngineClient as they are
    curve_server_key: str | None = None
    curve_public_key: str | None = None
    curve_secret_key: str | None = field(default=None, repr=False)  # a bare Z85 secret stays out of logs


DEFAULTS = Options()


class OptionsError(ValueError):
    """A bad option value. `code` is stable (`E_OPTION`), the message names the option and what it expects."""

    code = "E_OPTION"

    def __init__(self, name: str, expected: str, got: Any):
        super().__init__(f"tailguard option {name!r}: expected {expected}, got {got!r}")
        self.option = name


def _number(name: str, value: Any, *, minimum: float, integer: bool = False, inclusive: bool = True) -> Any:
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise OptionsError(name, kind, value)
    if value != value or (value < minimum if inclusive else value <= minimum):  # NaN fails both
        raise OptionsError(name, f"{kind} {'>=' if inclusive else '>'} {minimum}", value)
    return int(value) if integer else float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionsError(name, "a bool", value)
    return value


def _names(name: str, value: Any, allowed: tuple[str, ...] | None) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise OptionsError(name, "a list of str", value)
    out = tuple(value)
    for item in out:
        if not isinstance(item, str) or (allowed is not None and item not in allowed):
            raise OptionsError(name, f"a list drawn from {list(allowed) if allowed else 'str'}", value)
    return out


def parse_options(**kwargs: Any) -> Options:
    """Validate keyword options against `DEFAULTS`; environment fills what the caller left out."""
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise OptionsError(unknown[0], f"one of {sorted(known)}", kwargs[unknown[0]])
    values = {f.name: getattr(DEFAULTS, f.name) for f in fields(Options)}
    if kwargs.get("run_id") is None and os.environ.get(ENV_RUN_ID):
        kwargs["run_id"] = os.environ[ENV_RUN_ID]
    for name, value in kwargs.items():
        if name == "run_id":
            if value is not None and (not isinstance(value, str) or not RUN_ID_RE.fullmatch(value)):
                raise OptionsError(name, f"None or a str matching {RUN_ID_RE.pattern}", value)
        elif name == "pairs":
            value = _names(name, value, PAIRS)
        elif name == "metric_names":
            value = None if value is None else _names(name, value, None)
        elif name == "mode":
            if value not in ("raw", "sketch"):
                raise OptionsError(name, "one of ['raw', 'sketch']", value)
        elif name in ("record_to", "curve_server_key", "curve_public_key", "curve_secret_key"):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise OptionsError(name, "None or a file path" if name == "record_to" else "None, a Z85 key or a key file", value)
            value = None if value is None else os.fspath(value)
        elif name == "sketch_per_rank":
            if value is not None and not isinstance(value, bool):
                raise OptionsError(name, f"None (on up to {SKETCH_PER_RANK_AUTO_MAX} ranks), True or False", value)
        elif name == "log_metrics":
            if not (isinstance(value, bool) or value == "full"):  # not `in (True, False, ...)`: 1 == True
                raise OptionsError(name, "True (the headline set), False or 'full'", value)
        elif name == "fail_mode":
            if value not in FAIL_MODES:
                raise OptionsError(name, f"one of {list(FAIL_MODES)}", value)
        elif name in ("send_budget_s", "log_wait_s"):
            value = _number(name, value, minimum=0.0)
        elif name == "connect_timeout_s":
            value = _number(name, value, minimum=0.0, inclusive=False)
        elif name == "checkpoint_every":
            value = _number(name, value, minimum=0, integer=True)
        elif name == "keep_certified":
            value = _number(name, value, minimum=1, integer=True)
        elif name == "engine_lost_after_s":
            value = _number(name, value, minimum=0.0)
        elif name == "queue_max_steps":
            value = _number(name, value, minimum=1, integer=True)
        else:
            value = _bool(name, value)
        values[name] = value
    return Options(**values)


def resolve_endpoint(endpoint: str | None) -> str:
    """The engine endpoint: the argument, else `TAILGUARD_ENDPOINT`.

    Kept as the single place that decides, so the embedded engine (endpoint=None starts a private
    engine) can replace the error branch without touching the callback.
    """
    if endpoint is None:
        endpoint = os.environ.get(ENV_ENDPOINT) or None
    if endpoint is None:
        raise OptionsError(
            "endpoint",
            f"an engine endpoint such as 'tcp://127.0.0.1:5599' (argument or ${ENV_ENDPOINT}); "
            "start one with `npx tailguard serve`",
            None,
        )
    from .transport.keys import check_endpoint

    try:  # checked at attach: an http:// or inproc:// endpoint would fail only in the client's thread
        return check_endpoint(endpoint)
    except ValueError as e:
        raise OptionsError("endpoint", f"a tcp:// or ipc:// ZeroMQ endpoint ({e})", endpoint) from None


def default_run_id(args: Any) -> str:
    """The base every rank derives identically (no clocks, no randomness): the run name or output dir's name.
    guard.run_identity appends a time and a random tag on rank 0, so each training run gets its own id."""
    base = getattr(args, "run_name", None) or os.path.basename(os.path.normpath(getattr(args, "output_dir", "") or ""))
    rid = re.sub(r"[^A-Za-z0-9._-]+", "-", str(base)).strip("-._")[:128]
    return rid if rid and RUN_ID_RE.fullmatch(rid) else "run"


def disabled_by_env() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip().lower() in ("1", "true", "yes")
