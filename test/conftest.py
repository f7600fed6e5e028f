"""Shared fixtures for cross-language tests: a real engine process per test.

- `start_engine(*extra_args, run_dir=None, endpoint=None, log_level="warn") -> Engine`: start one more
  engine (extra `tailguard serve` options as strings); every engine is stopped at teardown.
- `engine`: one engine with default options. `engine.endpoint`, `engine.run_dir`, `engine.restart()`
  (same endpoint and run directory), `engine.log()`, `engine.alive`.

The engine's output is printed at teardown, so a failing test shows it.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_fixture import Engine  # noqa: E402


@pytest.fixture
def start_engine(tmp_path):
    engines: list[Engine] = []

    def start(*extra_args: str, run_dir=None, endpoint=None, log_level: str = "warn") -> Engine:
        e = Engine(tmp_path / f"engine{len(engines)}", *extra_args, endpoint=endpoint, run_dir=run_dir, log_level=log_level)
        engines.append(e)
        return e.start()

    yield start
    for e in engines:
        e.stop()
        out = e.log().strip()
        if out:
            print(f"--- engine {e.endpoint} output ---\n{out[-20000:]}")


@pytest.fixture
def engine(start_engine) -> Engine:
    return start_engine()
