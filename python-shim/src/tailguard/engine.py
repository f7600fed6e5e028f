"""The embedded engine: start `tailguard serve` as a child process when no endpoint is given.

The child gets `--parent-pid` so it exits by itself if the trainer dies (even by SIGKILL),
and `--ready-file` so we know the endpoint it really bound before the first send.

Environment variables:
    TAILGUARD_ENGINE_CMD: the command that runs the CLI (e.g. `node /opt/tailguard/ts-core/bin/tailguard.mjs`
        or `npx tailguard`). Overrides discovery.
    TAILGUARD_ENGINE_READY_TIMEOUT: seconds to wait for the engine to be ready (default 30).
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("tailguard.engine")

NODE_HINT = (
    "tailguard's engine needs Node.js >= 20. Install it (https://nodejs.org, or `apt install nodejs npm`, "
    "or `conda install -c conda-forge nodejs`) and then `npm install -g tailguard`, or point the callback "
    "at a running engine with `endpoint=` / TAILGUARD_ENDPOINT (start one with `npx tailguard serve`)."
)


class EngineUnavailable(RuntimeError):
    """The embedded engine could not be started or did not become ready."""


def _source_checkout_cli() -> list[str] | None:
    # python-shim/src/tailguard/engine.py -> repository root, when running from a checkout.
    root = Path(__file__).resolve().parents[3]
    entry = root / "ts-core" / "bin" / "tailguard.mjs"
    if entry.is_file() and (root / "node_modules" / "zeromq").is_dir():
        node = shutil.which("node")
        return [node, str(entry)] if node else None
    return None


def engine_command() -> list[str]:
    """The command prefix that runs the `tailguard` CLI, or raise EngineUnavailable with an install hint."""
    explicit = os.environ.get("TAILGUARD_ENGINE_CMD")
    if explicit:
        return shlex.split(explicit)
    checkout = _source_checkout_cli()
    if checkout:
        return checkout
    if shutil.which("node") is None:
        raise EngineUnavailable("Node.js was not found on PATH. " + NODE_HINT)
    installed = shutil.which("tailguard")
    if installed:
        return [installed]
    npx = shutil.which("npx")
    if npx:
        return [npx, "--no-install", "tailguard"]
    raise EngineUnavailable("The tailguard CLI was not found. " + NODE_HINT)


class EmbeddedEngine:
    """A `tailguard serve` child process on a private ipc endpoint.

    Args:
        run_dir (`str`, *optional*, defaults to `"runs"`):
            Root directory of the run stores.
        extra_args (`list[str]`, *optional*):
            More `tailguard serve` arguments, e.g. `["--policy", "policy.yaml"]`.
        log_file (`str`, *optional*):
            Where the engine's log goes (default: `<run_dir>/engine.log`).

    Example:
        ```python
        >>> from tailguard.engine import EmbeddedEngine
        >>> eng = EmbeddedEngine(run_dir="/tmp/tg-runs").start()  # doctest: +SKIP
        >>> eng.endpoint  # doctest: +SKIP
        'ipc:///tmp/tailguard-.../engine.sock'
        >>> eng.stop()  # doctest: +SKIP
        ```
    """

    def __init__(self, run_dir: str = "runs", extra_args: list[str] | None = None, log_file: str | None = None):
        self.run_dir = str(run_dir)
        self.extra_args = list(extra_args or [])
        self.log_file = log_file
        self.endpoint: str | None = None
        self.proc: subprocess.Popen | None = None
        self._tmp: str | None = None

    def start(self, timeout: float | None = None) -> "EmbeddedEngine":
        timeout = float(timeout or os.environ.get("TAILGUARD_ENGINE_READY_TIMEOUT", 30))
        cmd = engine_command()
        self._tmp = tempfile.mkdtemp(prefix="tailguard-")  # 0700: the socket is private to this user
        endpoint = f"ipc://{self._tmp}/engine.sock"
        ready = os.path.join(self._tmp, "ready")
        os.makedirs(self.run_dir, exist_ok=True)
        log_path = self.log_file or os.path.join(self.run_dir, "engine.log")
        args = cmd + [
            "serve", "--endpoint", endpoint, "--run-dir", self.run_dir,
            "--ready-file", ready, "--parent-pid", str(os.getpid()), *self.extra_args,
        ]
        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            raise EngineUnavailable(f"could not start the engine ({' '.join(args[:3])}...): {e}. " + NODE_HINT) from e
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                self.endpoint = Path(ready).read_text().strip() or endpoint
                atexit.register(self.stop)
                logger.info("tailguard engine ready at %s (pid %d, log %s)", self.endpoint, self.proc.pid, log_path)
                return self
            if self.proc.poll() is not None:
                raise EngineUnavailable(f"the engine exited with code {self.proc.returncode} before it was ready; "
                                        f"see {log_path}")
            time.sleep(0.05)
        self.stop()
        raise EngineUnavailable(f"the engine was not ready within {timeout:.0f}s; see {log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: the engine flushes its run store), then SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _broadcast_endpoint(endpoint: str | None) -> str | None:
    """Rank 0's endpoint to every rank (a no-op without an initialised process group)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is an extra
        return endpoint
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return endpoint
    box = [endpoint]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def attach_embedded(callback, trainer) -> EmbeddedEngine | None:
    """Start a private engine on rank 0 for a callback with no endpoint; stop it when `train()` returns or raises.

    Sets `callback.endpoint` on every rank and `callback.embedded_engine` on rank 0. `on_train_end` stops it
    too (callback.py), and so does atexit; the engine itself exits when this process dies (`--parent-pid`).
    Extra `serve` arguments come from `TAILGUARD_ENGINE_ARGS` (e.g. `--policy observe.yaml`), the run store
    root from `TAILGUARD_RUN_DIR` (default `runs`).
    """
    rank = int(getattr(getattr(trainer, "accelerator", None), "process_index", 0))
    engine = None
    endpoint = None
    error = None
    if rank == 0:
        try:
            engine = EmbeddedEngine(run_dir=os.environ.get("TAILGUARD_RUN_DIR", "runs"),
                                    extra_args=shlex.split(os.environ.get("TAILGUARD_ENGINE_ARGS", ""))).start()
            endpoint = engine.endpoint
        except EngineUnavailable as e:
            error = e
    endpoint = _broadcast_endpoint(endpoint)  # every rank joins, even when rank 0 failed (None)
    if error is not None:
        raise error
    if endpoint is None:
        raise EngineUnavailable("rank 0 could not start the embedded engine (see its log). " + NODE_HINT)
    callback.endpoint = endpoint
    callback.embedded_engine = engine
    if engine is not None:
        original = trainer.train

        def train(*args, **kwargs):
            if not engine.running:  # a second train() after the first one stopped it
                engine.start()
                callback.endpoint = engine.endpoint
            try:
                return original(*args, **kwargs)
            finally:  # normal end (after on_train_end) and the exception path
                engine.stop()

        trainer.train = train
    return engine
