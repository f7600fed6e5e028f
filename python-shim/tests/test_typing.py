"""Typing for users: mypy passes on the examples, and an option typo in `attach` is a type error, not a run-time
surprise (`attach` has a typed keyword-only signature; `tailguard` ships py.typed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mypy(tmp_path: Path, *targets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python-shim" / "src")}
    return subprocess.run([sys.executable, "-m", "mypy", *targets],  # .mypy_cache in the checkout: cheap reruns
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_mypy_passes_on_the_examples_and_catches_an_option_typo(tmp_path):
    assert (ROOT / "python-shim" / "src" / "tailguard" / "py.typed").is_file()
    r = mypy(tmp_path, "examples")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "typo.py"
    bad.write_text("import tailguard\n\ndef f(trainer: object) -> None:\n"
                   "    cb = tailguard.attach(trainer, log_wiat_s=1.0)\n"
                   "    reveal_type(cb)\n"
                   "    tailguard.attach(trainer, fail_mode='fail_opne')\n")
    r = mypy(tmp_path, str(bad))
    assert r.returncode == 1
    assert 'Unexpected keyword argument "log_wiat_s"' in r.stdout, r.stdout
    assert "TailguardCallback" in r.stdout  # not Any
    assert '"fail_opne"' in r.stdout or "fail_opne" in r.stdout, r.stdout
