"""`EngineClient`: the shim's connection to the engine (a ZeroMQ DEALER in a background thread).

The training loop only touches in-memory queues, so it can never hang on the engine:
`send_step` waits at most `send_budget_s` for room and otherwise drops the step (counted in
`stats["dropped"]`). The I/O thread owns the socket (ZeroMQ sockets are not thread-safe), does the
handshake, sends, reads directives and errors, and reconnects: when the connection drops
(socket monitor, ZMQ heartbeats), when the engine says `E_NO_SESSION`, or when a reply is overdue,
it opens a fresh socket, says `hello` again and resends the steps still unanswered.

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
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from . import __version__
from .wire import DEFAULT_LIMITS, PROTOCOL_VERSION, ProtocolError, decode_message, encode_message, encode_step

log = logging.getLogger("tailguard.client")


@dataclass
class _Step:
    step: int
    messages: list  # one frame list per chunk
    enqueued_at: float
    sent_at: float = 0.0
    attempts: int = 0


@dataclass
class _Io:
    """State only the I/O thread touches."""

    sock: Any = None
    monitor: Any = None
    hello_at: float = 0.0
    bye_sent: bool = False
    close_deadline: float = 0.0


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


def _curve_keys(server, public, secret) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) as Z85 bytes, from keys or key files; None without CURVE."""
    if server is None and public is None and secret is None:
        return None
    import os

    import zmq.auth

    def load(v, want: str) -> bytes | None:
        if v is None:
            return None
        if os.path.isfile(v):
            pub, sec = zmq.auth.load_certificate(v)
            return sec if want == "secret" else pub
        return v.encode() if isinstance(v, str) else bytes(v)

    srv, sec = load(server, "public"), load(secret, "secret")
    pub = load(public, "public") or (load(secret, "public") if secret is not None and os.path.isfile(secret) else None)
    if not (srv and pub and sec) or any(len(k) != 40 for k in (srv, pub, sec)):
        raise ValueError("CURVE needs curve_server_key, curve_public_key and curve_secret_key (40-char Z85 keys or key files)")
    return srv, pub, sec


class EngineClient:
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
            this capture file, for `tailguard replay`.
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
    ):
        if queue_max_steps < 1:
            raise ValueError(f"queue_max_steps must be ≥ 1, got {queue_max_steps}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.endpoint = endpoint
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
        self._curve = _curve_keys(curve_server_key, curve_public_key, curve_secret_key)
        self._recorder = None
        if record_to:
            from .record import StepRecorder

            self._recorder = StepRecorder(record_to, self)

        self._cv = threading.Condition()
        self._outbox: collections.deque[_Step] = collections.deque()
        self._inflight: collections.OrderedDict[int, _Step] = collections.OrderedDict()
        self._control: collections.deque[list] = collections.deque()
        self._directives: list[dict] = []
        self._replies: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self.errors: collections.deque[dict] = collections.deque(maxlen=256)
        self._metrics: tuple[int | None, dict] = (None, {})
        self._stats = dict(sent=0, acked=0, dropped=0, errors=0, reconnects=0, resent=0)
        self.welcome: dict | None = None
        self._welcome_seq = 0
        self._hello_error: dict | None = None
        self._bye_acked = False
        self._closing = False
        self._closed = False
        self._last_step: int | None = None
        self._last_drop_log = 0.0
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
        """Counters: sent, acked (answered by a directive), dropped, errors, reconnects, resent, queued."""
        with self._cv:
            return {**self._stats, "queued": len(self._outbox) + len(self._inflight)}

    def start(self) -> None:
        """Start the I/O thread (it connects and says `hello` in the background)."""
        with self._cv:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=f"tailguard-client-r{self.rank}", daemon=True)
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
                    raise TimeoutError(f"no welcome from {self.endpoint} within {self.connect_timeout_s}s")
                self._cv.wait(left)
            if self._hello_error is not None:
                e = self._hello_error
                raise ProtocolError(e.get("code", "E_INTERNAL"), f"engine refused hello: {e.get('message')}")
            return self.welcome

    def send_step(
        self,
        step: int,
        arrays: Mapping[str, Any],
        knobs: Mapping[str, Any] | None = None,
        logs: Mapping[str, Any] | None = None,
        implicit: Iterable[str] = (),
        slice_names: list[str] | None = None,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> bool:
        """Queue one rank's step. Returns False when it was dropped (counted, never raised).

        `arrays` maps step buffer names to numpy arrays or CPU torch tensors; they are sent without
        copying, so do not modify them until the step is answered (see `flush`).
        """
        self.start()
        try:
            header = step_header(self, step, knobs, logs, implicit, checkpoint)
            if slice_names is not None:
                header["slice_names"] = list(slice_names)
            messages = encode_step(header, arrays, self.limits)
        except ProtocolError as e:
            self._record_error({"code": e.code, "message": e.message, "ref": {"type": "step", "step": step}, "local": True})
            return self._drop(f"step {step} could not be encoded ({e})")
        self._last_step = int(step)
        # The one place a step's frames are final: the capture recorder (record_to=) sees them here.
        if self._recorder is not None:
            try:
                self._recorder.write_step(messages)
            except OSError as e:  # a full disk must not take training down
                log.warning("tailguard: capture recording failed: %s", e)
        return self._enqueue(_Step(int(step), messages, time.monotonic()))

    def send_encoded(self, step: int, messages: list[list]) -> bool:
        """Queue a step that is already encoded (one frame list per chunk), e.g. a sketch step or a
        replayed capture. Same budget, drop and resend rules as `send_step`."""
        self.start()
        with self._cv:
            self._last_step = int(step)
        return self._enqueue(_Step(int(step), list(messages), time.monotonic()))

    def _enqueue(self, item: _Step) -> bool:
        deadline = time.monotonic() + self.send_budget_s
        with self._cv:
            while True:
                if self._closing:
                    return self._drop_locked(f"step {item.step} sent after close()")
                held = len(self._outbox) + len(self._inflight)
                if held < self.queue_max_steps:
                    break
                if self.welcome is None and self._outbox:
                    # No engine to wait for: the newest data is worth more than the oldest.
                    old = self._outbox.popleft()
                    self._drop_locked(f"step {old.step} dropped while the engine is unreachable")
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._drop_locked(f"step {item.step} dropped: send queue full for {self.send_budget_s}s")
                self._cv.wait(left)
            self._outbox.append(item)
        self._wake()
        return True

    def send_ack(
        self,
        directive_id: str,
        step: int,
        applied: bool,
        changes: Iterable[Mapping[str, Any]] = (),
        refused: str | None = None,
    ) -> None:
        """Tell the engine a directive was applied (or refused, with a reason). Never blocks."""
        h = {
            "type": "ack",
            "version": list(PROTOCOL_VERSION),
            "run_id": self.run_id,
            "rank": self.rank,
            "directive_id": directive_id,
            "step": int(step),
            "applied": bool(applied),
            "changes": _plain(list(changes)),
            "refused": refused,
        }
        self.start()
        with self._cv:
            self._control.append(encode_message(h))
        self._wake()

    def poll_directives(self) -> list[dict]:
        """Directives received since the last call (no-ops included), oldest first. Never blocks."""
        with self._cv:
            out, self._directives = self._directives, []
            return out

    def latest_metrics(self) -> tuple[int | None, dict]:
        """`(metrics_step, metrics)` from the newest directive reply: `"<pair>/<slice>/<metric>" -> value`."""
        with self._cv:
            return self._metrics

    def reply_for(self, step: int) -> dict | None:
        """The full `directive` reply header for a step (the last 4096 steps are kept)."""
        with self._cv:
            return self._replies.get(step)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued step got its reply (or was dropped). True if all were answered."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._outbox or self._inflight:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return False
                self._cv.wait(left)
            return True

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

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending, or closed

    def _drop(self, why: str) -> bool:
        with self._cv:
            return self._drop_locked(why)

    def _drop_locked(self, why: str) -> bool:
        self._stats["dropped"] += 1
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:
            self._last_drop_log = now
            log.warning("tailguard: %s (dropped so far: %d)", why, self._stats["dropped"])
        self._cv.notify_all()
        return False

    def _record_error(self, err: dict) -> None:
        with self._cv:
            self._stats["errors"] += 1
            self.errors.append(err)
        log.warning("tailguard engine error %s: %s (ref %s)", err.get("code"), err.get("message"), err.get("ref"))

    def _bye_header(self) -> dict:
        with self._cv:
            s = self._stats
            return {
                "type": "bye",
                "version": list(PROTOCOL_VERSION),
                "run_id": self.run_id,
                "rank": self.rank,
                "last_step": self._last_step,
                "stats": {"sent": s["sent"], "dropped": s["dropped"], "reconnects": s["reconnects"]},
            }

    # ------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        ctx = zmq.Context()
        io = _Io()
        try:
            self._loop(ctx, io)
        except Exception:  # noqa: BLE001 - the training job must never die of the monitor
            log.exception("tailguard client I/O thread failed; steps are dropped from now on")
        finally:
            self._close_socket(io)
            ctx.term()
            with self._cv:
                dropped = len(self._outbox)
                self._outbox.clear()
                self._stats["dropped"] += dropped
                self._inflight.clear()
                self.welcome = None
                self._closed = True
                self._cv.notify_all()

    def _loop(self, ctx: zmq.Context, io: _Io) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            now = time.monotonic()
            with self._cv:
                closing = self._closing
                ready = self.welcome is not None
                refused = self._hello_error is not None
            if closing:
                # Say bye once (after pending acks, before nothing else), then wait briefly for its ack.
                io.close_deadline = io.close_deadline or now + self.close_timeout_s
                if not ready or io.sock is None or self._bye_acked or now > io.close_deadline:
                    return
                if not io.bye_sent:
                    self._send_pending(io, now, steps=False)
                    io.sock.send_multipart(encode_message(self._bye_header()), copy=False)
                    io.bye_sent = True
            elif io.sock is None and not refused:
                self._open_socket(ctx, io, poller)
            elif io.sock is not None and not ready and not refused and now - io.hello_at > self.hello_retry_s:
                self._reset(ctx, io, poller, "no welcome yet", count=False)
            if ready and io.sock is not None and not closing:
                self._send_pending(io, now)
                self._check_overdue(ctx, io, poller, now)

            events = dict(poller.poll(50))
            if self._wake_r in events or self._wake_r.fileno() in events:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            if io.monitor is not None and io.monitor in events:
                self._on_monitor(ctx, io, poller)
            if io.sock is not None and io.sock in events:
                self._receive(ctx, io, poller)

    def _open_socket(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller) -> None:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, self.linger_ms)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if self.heartbeat_ms > 0:
            s.setsockopt(zmq.HEARTBEAT_IVL, self.heartbeat_ms)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * self.heartbeat_ms)
            s.setsockopt(zmq.HEARTBEAT_TTL, 3 * self.heartbeat_ms)
        if self._curve is not None:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = self._curve
        mon = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(self.endpoint)
        io.sock, io.monitor = s, mon
        poller.register(s, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        hello = {
            "type": "hello",
            "version": list(PROTOCOL_VERSION),
            "run_id": self.run_id,
            "rank": self.rank,
            "world_size": self.world_size,
            "trainer": self.trainer,
            "mode": self.mode,
            "config": self.config,
            "client": {"name": "tailguard-python", "version": __version__},
            "checksum": self.checksum,
        }
        # Without ZMQ_IMMEDIATE the hello waits in the pipe until the engine is there.
        s.send_multipart(encode_message(hello), copy=False)
        io.hello_at = time.monotonic()

    def _close_socket(self, io: _Io, poller: zmq.Poller | None = None) -> None:
        for s in (io.monitor, io.sock):
            if s is None:
                continue
            if poller is not None:
                try:
                    poller.unregister(s)
                except KeyError:
                    pass
        if io.sock is not None:
            try:
                io.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            io.sock.close(0 if self._closing is False else self.linger_ms)
        if io.monitor is not None:
            io.monitor.close(0)
        io.sock = io.monitor = None

    def _reset(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller, why: str, count: bool = True) -> None:
        """Drop the socket and session; unanswered steps go back to the front of the queue."""
        with self._cv:
            had_session = self.welcome is not None
            self.welcome = None
            back = list(self._inflight.values())
            self._inflight.clear()
            for item in reversed(back):
                self._outbox.appendleft(item)
            while len(self._outbox) > self.queue_max_steps:
                old = self._outbox.popleft()
                self._drop_locked(f"step {old.step} dropped: beyond the resend budget after reconnect")
            if count and had_session:
                self._stats["reconnects"] += 1
            self._cv.notify_all()
        if had_session:
            log.warning("tailguard: lost the engine session at %s (%s); reconnecting", self.endpoint, why)
        self._close_socket(io, poller)
        if not self._closing:
            self._open_socket(ctx, io, poller)

    def _send_pending(self, io: _Io, now: float, steps: bool = True) -> None:
        while True:
            with self._cv:
                if self._control:
                    msg = self._control.popleft()
                    item = None
                elif self._outbox and steps:
                    item = self._outbox.popleft()
                    self._inflight[item.step] = item
                    msg = None
                else:
                    return
            if msg is not None:
                io.sock.send_multipart(msg, copy=False)
                continue
            for frames in item.messages:
                io.sock.send_multipart(frames, copy=False)
            with self._cv:
                item.attempts += 1
                item.sent_at = time.monotonic()
                if item.attempts == 1:
                    self._stats["sent"] += 1
                else:
                    self._stats["resent"] += 1

    def _check_overdue(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller, now: float) -> None:
        with self._cv:
            oldest = next(iter(self._inflight.values()), None)
        if oldest is not None and now - oldest.sent_at > self.reply_timeout_s:
            self._reset(ctx, io, poller, f"no reply to step {oldest.step} within {self.reply_timeout_s}s")

    def _on_monitor(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller) -> None:
        try:
            ev = recv_monitor_message(io.monitor, zmq.NOBLOCK)
        except zmq.Again:
            return
        if ev["event"] == zmq.EVENT_DISCONNECTED:
            with self._cv:
                ready = self.welcome is not None
            if ready and not self._closing:
                self._reset(ctx, io, poller, "connection closed")

    def _receive(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller) -> None:
        while io.sock is not None:
            try:
                frames = io.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header, _ = decode_message(frames)
            except ProtocolError as e:
                self._record_error({"code": e.code, "message": f"bad reply from engine: {e.message}", "local": True})
                self._settle_bad_reply(frames[0])
                continue
            self._handle(ctx, io, poller, header)

    def _settle_bad_reply(self, frame0: Any) -> None:
        """A directive that breaks the spec still answers its step: settle it instead of waiting for the
        reply timeout and resending data the engine already has."""
        try:
            h = msgpack.unpackb(bytes(frame0.buffer if hasattr(frame0, "buffer") else frame0), strict_map_key=False)
        except Exception:  # noqa: BLE001 - unreadable: nothing to settle
            return
        if isinstance(h, dict) and h.get("type") == "directive" and isinstance(h.get("step"), int):
            with self._cv:
                if self._inflight.pop(h["step"], None) is not None:
                    self._cv.notify_all()

    def _handle(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller, h: dict) -> None:
        t = h["type"]
        if t == "welcome":
            with self._cv:
                self.welcome = h
                self._welcome_seq += 1
                # Steps sent before this welcome (if any) belong to no session: send them again.
                back = list(self._inflight.values())
                self._inflight.clear()
                for item in reversed(back):
                    self._outbox.appendleft(item)
                self._cv.notify_all()
        elif t == "directive":
            step = h.get("step")
            with self._cv:
                item = self._inflight.pop(step, None)
                if item is not None:
                    self._stats["acked"] += 1
                self._replies[step] = h
                self._replies.move_to_end(step)
                while len(self._replies) > 4096:
                    self._replies.popitem(last=False)
                if isinstance(h.get("directive"), dict):
                    self._directives.append(h["directive"])
                if isinstance(h.get("metrics"), dict) and h.get("metrics"):
                    self._metrics = (h.get("metrics_step"), h["metrics"])
                self._cv.notify_all()
        elif t == "error":
            self._on_error(ctx, io, poller, h)
        elif t == "ack":
            if h.get("of") == "bye":
                self._bye_acked = True
        else:
            log.debug("tailguard: ignoring %s from engine", t)

    def _on_error(self, ctx: zmq.Context, io: _Io, poller: zmq.Poller, h: dict) -> None:
        code = h.get("code")
        ref = h.get("ref") if isinstance(h.get("ref"), dict) else {}
        self._record_error({k: h.get(k) for k in ("code", "message", "ref", "fatal")})
        ref_type, step = ref.get("type"), ref.get("step")
        with self._cv:
            if ref_type == "hello":
                # Every error on a hello is fatal and will not change by retrying: stop here.
                self._hello_error = h
                self._cv.notify_all()
                return
            if step in self._inflight and ref_type in (None, "step") and code != "E_NO_SESSION":
                # E_DUPLICATE: the engine already has it (a resend after a lost reply); anything else
                # (E_CHUNK included) rejects the step, and sending the same bytes again would not help.
                self._inflight.pop(step)
                if code == "E_DUPLICATE":
                    self._stats["acked"] += 1
                self._cv.notify_all()
        if code == "E_NO_SESSION" or h.get("fatal") is True:
            # The engine restarted or dropped the session: a fresh hello, then the unanswered steps again.
            self._reset(ctx, io, poller, f"{code} from the engine")
