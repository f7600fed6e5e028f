"""A real engine process for cross-language tests: `node ts-core/bin/tailguard.mjs serve ...`.

Used through the fixtures in test/conftest.py (`engine`, `start_engine`), or directly by scripts
(examples/demo.py, bench/rtt.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# TAILGUARD_TEST_CLI: run another checkout's CLI entry (e.g. to bisect an engine change).
CLI = Path(os.environ.get("TAILGUARD_TEST_CLI", ROOT / "ts-core" / "bin" / "tailguard.mjs"))


def free_tcp_endpoint() -> str:
    """A loopback endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Engine:
    """One `tailguard serve` child process with its own endpoint, run directory and logs.

    `restart()` stops it and starts a new process on the same endpoint and run directory.
    """

    def __init__(self, workdir: Path, *extra_args: str, endpoint: str | None = None, run_dir: Path | None = None,
                 log_level: str = "warn", ready_timeout_s: float = 90.0):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.endpoint = endpoint or free_tcp_endpoint()
        self.run_dir = Path(run_dir) if run_dir else self.workdir / "runs"
        self.ready_file = self.workdir / "ready"
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"engine.{self.starts}.log"

    def start(self) -> "Engine":
        if self.ready_file.exists():
            self.ready_file.unlink()
        self.starts += 1
        cmd = ["node", str(CLI), "serve", "--endpoint", self.endpoint, "--run-dir", str(self.run_dir),
               "--ready-file", str(self.ready_file), "--log-level", self.log_level, *self.extra_args]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
        log.close()
        deadline = time.monotonic() + self.ready_timeout_s
        while not (self.ready_file.exists() and self.ready_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode} before ready:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"engine not ready after {self.ready_timeout_s}s:\n{self.log()}")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop gracefully (SIGTERM), killing after `timeout`. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, sig: int = signal.SIGTERM) -> "Engine":
        self.stop(sig)
        return self.start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """Everything the engine wrote, over all starts."""
        parts = []
        for i in range(1, self.starts + 1):
            p = self.workdir / f"engine.{i}.log"
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
