"""A tiny Python ROUTER that speaks enough protocol v1 to unit-test the client (the real engine is
exercised by the cross-language tests in test/)."""

from __future__ import annotations

import threading
import time

import msgpack
import zmq

from tailguard.wire import DEFAULT_LIMITS, ProtocolError, decode_message, encode_message, step_checksum


class FakeEngine:
    def __init__(self, port: int | None = None, reply_steps: bool = True, delay_s: float = 0.0,
                 bad_directives: bool = False, watermark: bool = False, store_fault_at: int | None = None,
                 reject_steps: frozenset = frozenset(), warn_at: frozenset = frozenset()):
        self.ctx = zmq.Context()
        self.port = port
        self.reply_steps = reply_steps
        self.delay_s = delay_s
        self.bad_directives = bad_directives  # put an ext value (msgpackr's `undefined`) in the evidence
        # proto v1.1 emulation: the store commits a step when the next one arrives (`recorded_through` lags by
        # one), and at `store_fault_at` it fails: `E_STORE`, the uncommitted step is lost, the session closes.
        self.watermark = watermark or store_fault_at is not None
        self.store_fault_at = store_fault_at
        self.faulted = False
        self.reject_steps = set(reject_steps)  # answered with a non-retryable error: never recorded
        self.warn_at = set(warn_at)  # the reply to these steps carries a `warn` due at the next step
        self.sessions: dict[bytes, dict] = {}
        self.steps: list[tuple[int, int, int, int]] = []  # (rank, step, chunk index, tokens)
        self.acks: list[dict] = []
        self.byes: list[dict] = []
        self.hellos = 0
        self._partial: dict[tuple, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> "FakeEngine":
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if self.port is None:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            for _ in range(50):  # the old socket's port may take a moment to free
                try:
                    self.sock.bind(self.endpoint)
                    break
                except zmq.ZMQError:
                    time.sleep(0.05)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.sock.close(0)
        self.sessions.clear()
        self._partial.clear()

    def close(self) -> None:
        self.stop()
        self.ctx.term()

    def _send(self, ident: bytes, header: dict) -> None:
        if self.bad_directives and header["type"] == "directive":
            header["directive"]["evidence"] = {"rank": msgpack.ExtType(0, b"\x00")}
            header["version"] = [1, 0]
            self.sock.send_multipart([ident, msgpack.packb(header)])
            return
        self.sock.send_multipart([ident, *encode_message(header)])

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, *frames = self.sock.recv_multipart()
            try:
                h, arrays = decode_message(frames)
            except ProtocolError as e:
                try:
                    h = msgpack.unpackb(frames[0])
                    ref = {k: h[k] for k in ("type", "step", "rank") if k in h}
                except Exception:  # noqa: BLE001 - unreadable header: no ref
                    ref = {}
                self._send(ident, {"type": "error", "code": e.code, "message": e.message, "ref": ref, "fatal": False})
                continue
            t = h["type"]
            if t == "hello":
                self.hellos += 1
                self.sessions[ident] = h
                self._send(ident, {"type": "welcome", "run_id": h["run_id"], "rank": h["rank"],
                                   "session": ident.hex(), "engine": {"name": "fake", "version": "0"},
                                   "limits": dict(DEFAULT_LIMITS),
                                   "resume": {"last_step": self.store_fault_at - 2} if self.faulted else None})
            elif ident not in self.sessions:
                self._send(ident, {"type": "error", "code": "E_NO_SESSION", "message": "say hello first",
                                   "ref": {"type": t, "step": h.get("step"), "rank": h.get("rank")}, "fatal": False})
            elif t == "step" and h["step"] == self.store_fault_at and not self.faulted:
                self.faulted = True
                del self.sessions[ident]
                self._send(ident, {"type": "error", "code": "E_STORE", "message": "disk full", "fatal": True,
                                   "ref": {"type": "step", "step": h["step"], "rank": h["rank"]}})
            elif t == "step" and h["step"] in self.reject_steps:
                self._send(ident, {"type": "error", "code": "E_TOO_LARGE", "message": "rejected by the test",
                                   "fatal": False, "ref": {"type": "step", "step": h["step"], "rank": h["rank"]}})
            elif t == "step":
                self.steps.append((h["rank"], h["step"], h["chunk"]["index"], h["tokens"]))
                key = (h["run_id"], h["rank"], h["step"])
                p = self._partial.setdefault(key, {"tokens": 0, "n_seqs": 0, "frames": []})
                p["tokens"] += h["tokens"]
                p["n_seqs"] += h["n_seqs"]
                p["frames"] += [bytes(f) for f in frames[1:]]
                if h["chunk"]["index"] == h["chunk"]["count"] - 1 and self.reply_steps:
                    del self._partial[key]
                    time.sleep(self.delay_s)
                    self._send(ident, {
                        "type": "directive", "run_id": h["run_id"], "rank": h["rank"], "step": h["step"],
                        "directive": {"id": f"d{h['step']}", "step": h["step"],
                                      "action": "warn" if h["step"] in self.warn_at else "noop",
                                      "apply_at_step": h["step"] + 1, "params": {}, "reason": "", "evidence": {}},
                        "received": {"tokens": p["tokens"], "n_seqs": p["n_seqs"], "slices": dict.fromkeys(("all", "pre_tool", "post_tool", "tool_output"), 0),
                                     "checksum": step_checksum(p["frames"])},
                        "metrics": {"policy_vs_ref/all/n": float(p["tokens"])}, "metrics_step": h["step"],
                        **({"recorded_through": h["step"] - 1 if h["step"] else None} if self.watermark else {}),
                    })
            elif t == "ack":
                self.acks.append(h)
            elif t == "bye":
                self.byes.append(h)
                self._send(ident, {"type": "ack", "of": "bye", "run_id": h["run_id"], "rank": h["rank"],
                                   **({"recorded_through": h["last_step"]} if self.watermark else {})})
