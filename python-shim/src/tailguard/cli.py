"""`tailguard` console script: forwards to the engine's CLI (serve, report, replay, doctor, keygen).

pip-only users get the whole CLI: the engine bundled in the wheel runs under Node.js >= 20
(from PATH or the `tailguard[node]` extra). `TAILGUARD_ENGINE_CMD` overrides which CLI runs.
"""

from __future__ import annotations

import os
import subprocess
import sys

from .engine import EngineUnavailable, engine_command


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cmd = engine_command() + args
    except EngineUnavailable as e:
        print(f"tailguard: {e}", file=sys.stderr)
        return 2
    if argv is None and os.name == "posix":
        # Replace this process: signals (Ctrl-C, SIGTERM to `serve`) and the exit code go straight to the engine.
        os.execv(cmd[0], cmd)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
