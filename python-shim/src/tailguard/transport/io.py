"""The client's I/O thread: it alone owns the ZeroMQ socket (sockets are not thread-safe).

It does the handshake, sends queued steps and control messages, reads replies, and reconnects: when the
connection drops (socket monitor, ZMQ heartbeats), when the engine says `E_NO_SESSION`, or when a reply
is overdue, it opens a fresh socket, says `hello` again and resends the steps still unanswered. A
retryable refusal (`E_LIMIT`, or any error marked `retryable: true`) is retried with backoff.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire import ProtocolError, decode_message, encode_message

log = logging.getLogger("tailguard.client")

# Codes that say "not now" rather than "never": the hello (or step) is sent again after a backoff. Not
# E_BUDGET: a step resent after a later one completed would be an E_DUPLICATE, so it counts as dropped.
RETRYABLE = frozenset({"E_LIMIT"})
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.25, 10.0
MAX_STEP_REFUSALS = 5


def retryable(h: dict) -> bool:
    return h.get("retryable") is True or h.get("code") in RETRYABLE


@dataclass
class IoState:
    """State only the I/O thread touches."""

    sock: Any = None
    monitor: Any = None
    hello_at: float = 0.0
    retry_at: float = 0.0  # no new socket before this (hello backoff)
    backoff: float = 0.0
    bye_sent: bool = False
    close_deadline: float = 0.0


class IoThread:
    def __init__(self, client):
        self.c = client
        self.io = IoState()
        self.ctx: zmq.Context | None = None
        self.poller = zmq.Poller()

    def run(self) -> None:
        c = self.c
        self.ctx = zmq.Context()
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - the training job must never die of the monitor
            log.exception("tailguard client I/O thread failed; steps are dropped from now on")
        finally:
            self._close_socket()
            self.ctx.term()
            with c._cv:
                c._ledger.drop_all("was not answered before the client stopped")
                c.welcome = None
                c._closed = True
                c._cv.notify_all()

    def _loop(self) -> None:
        c, io = self.c, self.io
        self.poller.register(c._wake_r, zmq.POLLIN)
        while True:
            now = time.monotonic()
            with c._cv:
                closing, ready, refused = c._closing, c.welcome is not None, c._hello_error is not None
            if closing:
                # Say bye once (after pending acks, before nothing else), then wait briefly for its ack.
                io.close_deadline = io.close_deadline or now + c.close_timeout_s
                if not ready or io.sock is None or c._bye_acked or now > io.close_deadline:
                    return
                if not io.bye_sent:
                    self._send_pending(steps=False)
                    io.sock.send_multipart(encode_message(c._bye_header()), copy=False)
                    io.bye_sent = True
            elif io.sock is None and not refused and now >= io.retry_at:
                self._open_socket()
            elif io.sock is not None and not ready and not refused and now - io.hello_at > c.hello_retry_s:
                self._reset("no welcome yet", count=False)
            if ready and io.sock is not None and not closing:
                self._send_pending()
                self._check_overdue(now)

            events = dict(self.poller.poll(50))
            if c._wake_r in events or c._wake_r.fileno() in events:
                try:
                    while c._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            if io.monitor is not None and io.monitor in events:
                self._on_monitor()
            if io.sock is not None and io.sock in events:
                self._receive()

    # ---- socket ------------------------------------------------------------------------------------
    def _open_socket(self) -> None:
        c, io = self.c, self.io
        assert self.ctx is not None  # made in run()
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, c.linger_ms)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if c.heartbeat_ms > 0:
            s.setsockopt(zmq.HEARTBEAT_IVL, c.heartbeat_ms)
            s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * c.heartbeat_ms)
            s.setsockopt(zmq.HEARTBEAT_TTL, 3 * c.heartbeat_ms)
        if c._curve is not None:
            s.curve_serverkey, s.curve_publickey, s.curve_secretkey = c._curve
        mon = s.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        s.connect(c.endpoint)
        io.sock, io.monitor = s, mon
        self.poller.register(s, zmq.POLLIN)
        self.poller.register(mon, zmq.POLLIN)
        # Without ZMQ_IMMEDIATE the hello waits in the pipe until the engine is there.
        s.send_multipart(encode_message(c._hello_header()), copy=False)
        io.hello_at = time.monotonic()

    def _close_socket(self) -> None:
        io = self.io
        for s in (io.monitor, io.sock):
            if s is not None:
                try:
                    self.poller.unregister(s)
                except KeyError:
                    pass
        if io.sock is not None:
            try:
                io.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            io.sock.close(self.c.linger_ms if self.c._closing else 0)
        if io.monitor is not None:
            io.monitor.close(0)
        io.sock = io.monitor = None

    def _reset(self, why: str, count: bool = True, reopen: bool = True) -> None:
        """Drop the socket and session; unanswered steps go back to the front of the queue."""
        c = self.c
        with c._cv:
            had_session = c.welcome is not None
            c.welcome = None
            c._ledger.requeue_inflight()
            c._ledger.trim("beyond the resend budget after reconnect")
            if count and had_session:
                c._ledger.stats["reconnects"] += 1
            c._cv.notify_all()
        if had_session:
            log.warning("tailguard: lost the engine session at %s (%s); reconnecting", c.endpoint, why)
        self._close_socket()
        if reopen and not c._closing and time.monotonic() >= self.io.retry_at:
            self._open_socket()

    # ---- sending -----------------------------------------------------------------------------------
    def _send_pending(self, steps: bool = True) -> None:
        c, sock = self.c, self.io.sock
        while True:
            with c._cv:
                item = msg = None
                if c._control:
                    msg = c._control.popleft()
                elif steps:
                    item = c._ledger.next_due(time.monotonic())
                if msg is None and item is None:
                    return
            if msg is not None:
                sock.send_multipart(msg, copy=False)
                continue
            for frames in item.messages:
                sock.send_multipart(frames, copy=False)
            with c._cv:
                c._ledger.mark_sent(item)

    def _check_overdue(self, now: float) -> None:
        c = self.c
        with c._cv:
            oldest = next(iter(c._ledger.inflight.values()), None)
        if oldest is not None and now - oldest.sent_at > c.reply_timeout_s:
            self._reset(f"no reply to step {oldest.step} within {c.reply_timeout_s}s")

    def _on_monitor(self) -> None:
        try:
            ev = recv_monitor_message(self.io.monitor, zmq.NOBLOCK)
        except zmq.Again:
            return
        if ev["event"] == zmq.EVENT_DISCONNECTED:
            with self.c._cv:
                ready = self.c.welcome is not None
            if ready and not self.c._closing:
                self._reset("connection closed")

    # ---- receiving ---------------------------------------------------------------------------------
    def _receive(self) -> None:
        while self.io.sock is not None:
            try:
                frames = self.io.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header, _ = decode_message(frames)
            except ProtocolError as e:
                self.c._record_error({"code": e.code, "message": f"bad reply from engine: {e.message}", "local": True})
                self._settle_bad_reply(frames[0])
                continue
            self._handle(header)

    def _settle_bad_reply(self, frame0: Any) -> None:
        """A directive that breaks the spec still answers its step: settle it instead of waiting for the
        reply timeout and resending data the engine already has."""
        try:
            h = msgpack.unpackb(bytes(frame0.buffer if hasattr(frame0, "buffer") else frame0), strict_map_key=False)
        except Exception:  # noqa: BLE001 - unreadable: nothing to settle
            return
        if isinstance(h, dict) and h.get("type") == "directive" and isinstance(h.get("step"), int):
            with self.c._cv:
                if self.c._ledger.answer(h["step"], watermark=False):
                    self.c._cv.notify_all()

    def _handle(self, h: dict) -> None:
        c, t = self.c, h["type"]
        if t == "welcome":
            self.io.backoff = 0.0
            resume = h.get("resume") if isinstance(h.get("resume"), dict) else {}
            with c._cv:
                c.welcome = h
                c._last_hello_error = None
                c._hellos += 1
                # Steps sent before this welcome (if any) belong to no session: send them again, and so are
                # answered steps the store does not hold (an engine killed before it wrote them).
                c._ledger.requeue_inflight()
                c._ledger.resume_from(resume.get("last_step"))
                c._cv.notify_all()
        elif t == "directive":
            c._on_directive(h)
        elif t == "error":
            self._on_error(h)
        elif t == "ack":
            if h.get("of") == "bye":
                with c._cv:
                    c._ledger.confirm_through(h.get("recorded_through"))
                c._bye_acked = True
        else:
            log.debug("tailguard: ignoring %s from engine", t)

    def _backoff(self) -> float:
        self.io.backoff = min(max(2 * self.io.backoff, BACKOFF_MIN_S), BACKOFF_MAX_S)
        return self.io.backoff

    def _on_error(self, h: dict) -> None:
        c = self.c
        code = h.get("code")
        ref = h.get("ref") if isinstance(h.get("ref"), dict) else {}
        c._record_error({k: h.get(k) for k in ("code", "message", "ref", "fatal")})
        ref_type, step = ref.get("type"), ref.get("step")
        if ref_type == "hello":
            if retryable(h):  # e.g. E_LIMIT: the engine is full now; a fresh hello later may get in
                delay = self._backoff()
                with c._cv:
                    c._last_hello_error = h
                    c._ledger.stats["retries"] += 1
                self.io.retry_at = time.monotonic() + delay
                log.warning("tailguard: engine refused hello with %s (%s); retrying in %.2fs", code, h.get("message"), delay)
                self._reset(f"{code} on hello", count=False, reopen=False)
                return
            with c._cv:  # any other error on a hello will not change by retrying: stop here
                c._hello_error = h
                c._ledger.drop_all(f"dropped: the engine refused this client ({code}: {h.get('message')})")
                c._cv.notify_all()
            return
        with c._cv:
            if code == "E_STORE":  # the run store failed: what it had not made durable is lost
                c._ledger.lose_unconfirmed(f"dropped: the engine's run store failed ({h.get('message')})")
            if step in c._ledger.inflight and ref_type in (None, "step") and code != "E_NO_SESSION":
                if code == "E_DUPLICATE":  # the engine already has it (a resend after a lost reply)
                    c._ledger.answer(step, watermark=False)
                elif retryable(h):
                    c._ledger.retry_later(step, self._backoff(), MAX_STEP_REFUSALS, str(code))
                else:  # rejected (E_CHUNK, E_STORE, ...): sending the same bytes again would not help
                    c._ledger.reject(step, f"step {step} rejected by the engine ({code}: {h.get('message')})")
                c._cv.notify_all()
        if code == "E_SESSION":  # another client took this (run_id, rank) over: taking it back would ping-pong
            with c._cv:
                c._hello_error = h
                c._ledger.drop_all(f"dropped: this session was taken over by another client ({h.get('message')})")
                c.welcome = None
                c._cv.notify_all()
            log.error("tailguard: another client took over run %s rank %d (E_SESSION); this one stops sending",
                      c.run_id, c.rank)
            self._close_socket()
            return
        if code == "E_NO_SESSION" or h.get("fatal") is True:
            # The engine restarted or dropped the session: a fresh hello, then the unanswered steps again.
            self._reset(f"{code} from the engine")
