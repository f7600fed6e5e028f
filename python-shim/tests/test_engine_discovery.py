"""Engine discovery and start-up failures (engine.py): each failure is one line with its fix, start-up never
outlives its budget, and engine.log always holds the reason. Real processes; fake `node` scripts stand in
for a missing or too-old Node.js."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

import tailguard.engine as engine
from tailguard.engine import EmbeddedEngine, EngineUnavailable


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv("TAILGUARD_ENGINE_CMD", raising=False)
    engine._node_major.cache_clear()
    yield
    engine._node_major.cache_clear()


def _only_bundled(monkeypatch, tmp_path):
    """Pretend this install is a wheel: a bundled CLI exists, no checkout, no npm CLI."""
    cli = tmp_path / "_engine" / "cli.mjs"
    cli.parent.mkdir()
    cli.write_text("")
    monkeypatch.setattr(engine, "BUNDLED_CLI", cli)
    monkeypatch.setattr(engine, "_source_checkout_cli", lambda: None)
    monkeypatch.setattr(engine, "_wheel_node", lambda: None)
    return cli


def test_node_missing_is_one_line_with_the_fix(monkeypatch, tmp_path, no_override):
    _only_bundled(monkeypatch, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no node anywhere
    with pytest.raises(EngineUnavailable) as e:
        engine.engine_command()
    msg = str(e.value)
    assert "\n" not in msg and "Node.js >= 20" in msg and "no `node` on PATH" in msg
    assert "tailguard[node]" in msg and "endpoint=" in msg


def test_node_too_old_names_the_version(monkeypatch, tmp_path, no_override):
    _only_bundled(monkeypatch, tmp_path)
    _script(tmp_path / "node", "echo v18.19.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineUnavailable, match=r"needs Node.js >= 20 \(.*node is v18\)\. Fix: ") as e:
        engine.engine_command()
    assert "\n" not in str(e.value)


def test_bundled_engine_runs_under_a_new_enough_node(monkeypatch, tmp_path, no_override):
    cli = _only_bundled(monkeypatch, tmp_path)
    node = _script(tmp_path / "node", "echo v22.1.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert engine.engine_command() == [str(node), str(cli)]


def test_override_wins_and_keeps_working(monkeypatch, tmp_path, no_override):
    _only_bundled(monkeypatch, tmp_path)
    monkeypatch.setenv("TAILGUARD_ENGINE_CMD", "node /opt/x/cli.mjs --flag")
    assert engine.engine_command() == ["node", "/opt/x/cli.mjs", "--flag"]


def test_discovery_failure_is_written_to_engine_log(monkeypatch, tmp_path, no_override):
    _only_bundled(monkeypatch, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    runs = tmp_path / "runs"
    with pytest.raises(EngineUnavailable):
        EmbeddedEngine(run_dir=str(runs)).start(timeout=5)
    assert "needs Node.js >= 20" in (runs / "engine.log").read_text()


def test_early_exit_reports_the_engine_s_last_words(monkeypatch, tmp_path):
    fake = _script(tmp_path / "fake-engine", "echo 'E_BOOM: cannot bind the endpoint' >&2; exit 3")
    monkeypatch.setenv("TAILGUARD_ENGINE_CMD", str(fake))
    runs = tmp_path / "runs"
    with pytest.raises(EngineUnavailable, match=r"exited with code 3 before it was ready: E_BOOM: cannot bind"):
        EmbeddedEngine(run_dir=str(runs)).start(timeout=20)
    log = (runs / "engine.log").read_text()
    assert "E_BOOM" in log and "exited with code 3" in log


def test_never_ready_stops_within_the_budget(monkeypatch, tmp_path):
    # An engine that never writes its ready file (e.g. a launcher stuck on an unreachable registry).
    fake = _script(tmp_path / "stuck-engine", "exec sleep 60")
    monkeypatch.setenv("TAILGUARD_ENGINE_CMD", str(fake))
    runs = tmp_path / "runs"
    eng = EmbeddedEngine(run_dir=str(runs))
    started = []
    real_popen = engine.subprocess.Popen
    monkeypatch.setattr(engine.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    with pytest.raises(EngineUnavailable, match=r"not ready within 1s"):
        eng.start(timeout=1.0)
    # Killed at the deadline (no SIGTERM grace: it holds no run state yet), and the log says why.
    assert started and started[0].poll() is not None and started[0].returncode < 0
    assert not eng.running and "not ready within 1s" in (runs / "engine.log").read_text()


def test_console_script_forwards_to_the_engine_cli(tmp_path):
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "tailguard.cli", "--version"], capture_output=True, text=True, env=env,
                       timeout=120)
    import tailguard

    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == tailguard.__version__
