"""`EngineClient`: the shim's connection to the engine (a ZeroMQ DEALER in a background thread).

The training loop only touches in-memory queues, so it can never hang on the engine:
`send_step` waits at most `send_budget_s` for room and otherwise drops the step. Every step ends
recorded or dropped, never both and never neither (transport/ledger.py: `stats`). The I/O thread
(transport/io.py) owns the socket, reconnects, resends unanswered steps and retries `E_LIMIT`; the send path
is transport/sending.py, the reply side transport/replies.py (mixins of this class).

Example:

```python
import numpy as np
from tailguard.client import EngineClient

with EngineClient("tcp://127.0.0.1:5599", run_id="demo") as client:
    client.connect()
    client.send_step(0, {
        "policy_vs_ref": np.zeros(6, np.float32),
        "completion_mask": np.ones(6, np.uint8),
        "tool_mask": np.array([1, 1, 0, 0, 1, 1], np.uint8),
        "offsets": np.array([0, 3, 6], np.int32),
    })
    client.flush(5.0)
    print(client.poll_directives(), client.stats)
```
"""

from __future__ import annotations

import collections
import logging
import socket as pysocket
import threading
import time
from typing import Any, Mapping

from . import __version__
from .wire import DEFAULT_LIMITS, ProtocolError
from .transport import IoThread, Ledger, check_endpoint, curve_keys
from .transport.headers import _plain, bye_header, hello_header, step_header
from .transport.replies import Replies
from .transport.sending import Sending

__all__ = ["EngineClient", "step_header"]

log = logging.getLogger("tailguard.client")


class EngineClient(Sending, Replies):
    """Non-blocking client of a tailguard engine.

    Args:
        endpoint (`str`): engine ZeroMQ endpoint, e.g. `tcp://127.0.0.1:5599`.
        run_id (`str`): run id shared by every rank of the run.
        rank (`int`, *optional*, defaults to `0`) / world_size (`int`, *optional*, defaults to `1`).
        trainer (`str`, *optional*, defaults to `"synthetic"`): `grpo`, `rloo`, `dpo`, `synthetic`, ...
        config (`dict`, *optional*): the trainer's config knobs, sent in `hello`.
        mode (`str`, *optional*, defaults to `"raw"`): `raw` token buffers or `sketch`.
        send_budget_s (`float`, *optional*, defaults to `0.05`): the longest `send_step` waits for room.
        queue_max_steps (`int`, *optional*, defaults to `8`): steps held (queued + awaiting a reply);
            also the resend budget after a reconnect.
        connect_timeout_s (`float`, *optional*, defaults to `5.0`): how long `connect()` waits for `welcome`.
        reply_timeout_s (`float`, *optional*, defaults to `30.0`): a step unanswered this long means the
            engine is gone: reconnect and resend.
        hello_retry_s (`float`, *optional*, defaults to `2.0`): resend `hello` on a fresh socket this often
            while no `welcome` came.
        close_timeout_s (`float`, *optional*, defaults to `1.0`): how long `close()` waits for the engine
            to answer `bye`.
        heartbeat_ms (`int`, *optional*, defaults to `1000`): ZMQ heartbeat interval (timeout 3×).
        linger_ms (`int`, *optional*, defaults to `100`): socket linger, so closing never hangs.
        checksum (`bool`, *optional*, defaults to `False`): ask the engine to echo `received.checksum`
            (FNV-1a over every buffer byte, `wire.step_checksum`). A verification aid for tests and
            debugging: it costs the engine about 2 ns per byte (~12 ns per token), more than its statistics.
        curve_server_key (`str`, *optional*): the engine's CURVE public key (Z85), or a key file
            (`tailguard keygen` / zcert format). Set it to connect to an engine started with `--curve-secret`.
        curve_public_key / curve_secret_key (`str`, *optional*): this client's key pair (Z85 or key files);
            a `.key` file written by `tailguard keygen` holds both, so `curve_secret_key="client.key"` is enough.
        record_to (`str`, *optional*): append the `hello` and every step message, exactly as encoded, to
            this recording, for `tailguard replay`.
        resume (`bool`, *optional*, defaults to `None`): the first `hello`'s `resume` (proto v1.1): False for
            a new training run (an engine refuses a run id that already holds steps with `E_RUN_EXISTS`), True
            to continue one; None leaves it out. Every later hello (reconnects) says True.
    """

    def __init__(
        self,
        endpoint: str,
        run_id: str,
        rank: int = 0,
        world_size: int = 1,
        trainer: str = "synthetic",
        config: Mapping[str, Any] | None = None,
        mode: str = "raw",
        send_budget_s: float = 0.05,
        queue_max_steps: int = 8,
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 30.0,
        hello_retry_s: float = 2.0,
        close_timeout_s: float = 1.0,
        heartbeat_ms: int = 1000,
        linger_ms: int = 100,
        checksum: bool = False,
        curve_server_key: str | None = None,
        curve_public_key: str | None = None,
        curve_secret_key: str | None = None,
        record_to: str | None = None,
        resume: bool | None = None,
    ):
        if queue_max_steps < 1:
            raise ValueError(f"queue_max_steps must be ≥ 1, got {queue_max_steps}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.endpoint = check_endpoint(endpoint)
        self.run_id = run_id
        self.rank = rank
        self.world_size = world_size
        self.trainer = trainer
        self.config = _plain(dict(config or {}))
        self.mode = mode
        self.send_budget_s = send_budget_s
        self.queue_max_steps = queue_max_steps
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.hello_retry_s = hello_retry_s
        self.close_timeout_s = close_timeout_s
        self.heartbeat_ms = heartbeat_ms
        self.linger_ms = linger_ms
        self.checksum = checksum
        self.resume = resume
        self._curve = curve_keys(curve_server_key, curve_public_key, curve_secret_key)
        self._recorder = None
        if record_to:
            from .record import StepRecorder

            self._recorder = StepRecorder(record_to, self)

        self._cv = threading.Condition()
        self._ledger = Ledger(queue_max_steps)
        self._control: collections.deque[list] = collections.deque()
        self._directives: list[dict] = []
        self._replies: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self.errors: collections.deque[dict] = collections.deque(maxlen=256)
        self._metrics: tuple[int | None, dict] = (None, {})
        self.welcome: dict | None = None
        self._hellos = 0  # welcomes received: the first hello says resume=False (a new run), later ones True
        self._hello_error: dict | None = None  # a refusal that retrying cannot change: nothing is sent
        self._last_hello_error: dict | None = None  # the latest retryable refusal (E_LIMIT), for messages
        self._bye_acked = False
        self._closing = False
        self._closed = False
        self._last_step: int | None = None
        self._wake_r, self._wake_w = pysocket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ caller side

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while a `welcome` is in effect."""
        with self._cv:
            return self.welcome is not None

    @property
    def limits(self) -> dict:
        with self._cv:
            return {**DEFAULT_LIMITS, **((self.welcome or {}).get("limits") or {})}

    @property
    def stats(self) -> dict:
        """Counters (transport/ledger.py): sent, acked, recorded, dropped, errors, reconnects, resent,
        retries, and queued (held, fate still open). recorded + dropped + queued = steps offered."""
        with self._cv:
            return self._ledger.snapshot()

    @property
    def refused(self) -> dict | None:
        """The engine's non-retryable refusal of this client's `hello` (then every step is dropped), or None."""
        with self._cv:
            return self._hello_error

    def drops_since(self, index: int) -> list[tuple[int, str]]:
        """`(step, why)` of the drops after the first `index` ones (the newest 64 are kept)."""
        with self._cv:
            n = self._ledger.stats["dropped"]
            return self._ledger.drop_log[max(0, len(self._ledger.drop_log) - (n - index)):] if n > index else []

    def start(self) -> None:
        """Start the I/O thread (it connects and says `hello` in the background)."""
        with self._cv:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=IoThread(self).run, name=f"tailguard-client-r{self.rank}",
                                                daemon=True)
                self._thread.start()

    def connect(self, timeout: float | None = None) -> dict:
        """Handshake: return the engine's `welcome`.

        Raises `TimeoutError` when none came within `connect_timeout_s` (the thread keeps trying, so
        steps sent later still reach an engine that starts late), or `ProtocolError` when the engine
        refused the `hello`.
        """
        self.start()
        deadline = time.monotonic() + (self.connect_timeout_s if timeout is None else timeout)
        with self._cv:
            while self.welcome is None and self._hello_error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self._last_hello_error
                    why = f" (last refusal {last.get('code')}: {last.get('message')}; still retrying)" if last else ""
                    raise TimeoutError(f"no welcome from {self.endpoint} within {self.connect_timeout_s}s{why}")
                self._cv.wait(left)
            if self._hello_error is not None:
                e = self._hello_error
                raise ProtocolError(e.get("code", "E_INTERNAL"), f"engine refused hello: {e.get('message')}")
            return self.welcome

    def close(self, timeout: float | None = None) -> None:
        """Say `bye`, wait briefly for the engine's ack, and stop. Safe to call twice."""
        with self._cv:
            self._closing = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join((self.close_timeout_s if timeout is None else timeout) + 1.0)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    # ------------------------------------------------------------ helpers (caller side)

    def _bye_header(self) -> dict:
        with self._cv:
            return bye_header(self, self._last_step, self._ledger.stats)

    def _hello_header(self) -> dict:
        # After a welcome every hello continues this run (a reconnect or an engine restart).
        return hello_header(self, __version__, True if self._hellos else self.resume)
