"""Recording writer: records the exact multipart messages the shim sends, for offline replay.

The format is shared with the engine's ``tailguard serve --record`` and read by
``tailguard replay`` (see docs/observability.md, "Recordings")::

    file   = b"TGCAP\\0" + u16 version (1) + record*
    record = u32 body_len + f64 sent_at_ms + u32 n_frames + (u32 len + bytes) * n_frames

All integers little-endian. Each record is written with a single ``write`` and flushed, so a crash
can only leave a torn last record, which the reader reports and skips.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Iterable, Iterator

MAGIC = b"TGCAP\x00"
VERSION = 1

__all__ = ["RecordingWriter", "StepRecorder", "read_recording", "encode_record", "MAGIC", "VERSION"]


def encode_record(frames: Iterable[bytes | bytearray | memoryview], at_ms: float | None = None) -> bytes:
    """One record for the given frames (frame 0 is the msgpack header)."""
    views = [memoryview(f).cast("B") for f in frames]
    body_len = 12 + sum(4 + v.nbytes for v in views)
    parts = [struct.pack("<IdI", body_len, time.time() * 1000.0 if at_ms is None else float(at_ms), len(views))]
    for v in views:
        parts.append(struct.pack("<I", v.nbytes))
        parts.append(v.tobytes())
    return b"".join(parts)


class RecordingWriter:
    """Append multipart messages to a recording.

    Args:
        path (`str` or `os.PathLike`):
            The recording. Created with the preamble when missing or empty; appended to otherwise.

    Example:

    ```python
    >>> import tempfile, os
    >>> from tailguard.record import RecordingWriter, read_recording
    >>> p = os.path.join(tempfile.mkdtemp(), "run.tgcap")
    >>> with RecordingWriter(p) as w:
    ...     w.write([b"\\x81\\xa4type\\xa4step", b"\\x00\\x01"])
    >>> [frames for _, frames in read_recording(p)]
    [[b'\\x81\\xa4type\\xa4step', b'\\x00\\x01']]

    ```
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._lock = threading.Lock()  # the client's sender thread and user code may both write
        self._f = open(self.path, "ab")
        if self._f.tell() == 0:
            self._f.write(MAGIC + struct.pack("<H", VERSION))
            self._f.flush()
        self.count = 0

    def write(self, frames: Iterable[bytes | bytearray | memoryview], at_ms: float | None = None) -> None:
        rec = encode_record(frames, at_ms)
        with self._lock:
            if self._f.closed:
                return
            self._f.write(rec)
            self._f.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_recording(path: str | os.PathLike[str]) -> Iterator[tuple[float, list[bytes]]]:
    """Yield ``(at_ms, frames)`` per record. A torn last record is skipped (a crash mid-write)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:6] != MAGIC:
        raise ValueError("E_RECORDING_MAGIC: not a tailguard recording")
    (version,) = struct.unpack_from("<H", data, 6)
    if version != VERSION:
        raise ValueError(f"E_RECORDING_VERSION: recording format version {version} is not supported")
    o = 8
    while len(data) - o >= 4:
        (body_len,) = struct.unpack_from("<I", data, o)
        if len(data) - o - 4 < body_len:
            return
        at_ms, n = struct.unpack_from("<dI", data, o + 4)
        p, end = o + 16, o + 4 + body_len
        frames = []
        for _ in range(n):
            (ln,) = struct.unpack_from("<I", data, p)
            frames.append(data[p + 4 : p + 4 + ln])
            p += 4 + ln
        if p != end:
            raise ValueError(f"E_RECORDING_RECORD: record at byte {o} is malformed")
        yield at_ms, frames
        o = end


class StepRecorder:
    """The recorder behind ``EngineClient(record_to=...)``: the client's ``hello`` once, then every
    message of every step exactly as encoded for the wire (all chunks, before any send).

    ``tailguard replay RECORDING`` needs the ``hello`` to know the run id, world size and trainer.
    A recording made by one rank of a multi-rank run holds only that rank's data; the replay then
    finalises each step with the other ranks missing, as the live engine does after its timeout.

    Args:
        path (`str` or `os.PathLike`): the recording (appended to when it exists).
        client: the `EngineClient` whose identity goes into the recorded ``hello``.
    """

    def __init__(self, path: str | os.PathLike[str], client: object):
        self._w = RecordingWriter(path)
        self._client = client
        self._hello_written = False

    @property
    def path(self) -> str:
        return self._w.path

    @property
    def count(self) -> int:
        return self._w.count

    def _hello(self) -> list:
        from . import __version__
        from .wire import PROTOCOL_VERSION, encode_message

        c = self._client
        return encode_message(
            {
                "type": "hello",
                "version": list(PROTOCOL_VERSION),
                "run_id": getattr(c, "run_id"),
                "rank": getattr(c, "rank", 0),
                "world_size": getattr(c, "world_size", 1),
                "trainer": getattr(c, "trainer", "synthetic"),
                "mode": getattr(c, "mode", "raw"),
                "config": getattr(c, "config", {}) or {},
                "client": {"name": "tailguard-python", "version": __version__, "recorder": True},
            }
        )

    def write_step(self, messages: Iterable[Iterable[bytes | bytearray | memoryview]]) -> None:
        """Record every chunk message of one step (``encode_step`` output)."""
        if not self._hello_written:
            self._w.write(self._hello())
            self._hello_written = True
        for frames in messages:
            self._w.write(frames)

    def close(self) -> None:
        self._w.close()
