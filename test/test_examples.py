"""The examples at reduced sizes (real TRL trainers, real embedded engine), and the embedded engine's life cycle:
start/stop with training, no orphan after SIGKILL of the trainer (`--parent-pid`), a clear message without Node.js."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PY = os.environ.get("TAILGUARD_PYTHON", sys.executable)

pytest.importorskip("trl")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purpose once its parent reaped it or it is Z
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _engine_pids_for(parent: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--parent-pid" in cmd and cmd[cmd.index(b"--parent-pid") + 1] == str(parent).encode():
                out.append(int(p.name))
    return out


def test_grpo_tool_agent_embedded_engine(tmp_path, monkeypatch):
    from common import read_jsonl
    from grpo_tool_agent import run

    monkeypatch.delenv("TAILGUARD_ENDPOINT", raising=False)
    s = run("observe", steps=6, run_dir=str(tmp_path), run_id="agent", quiet=True, stale_onset=0.3, stale_every=1,
            batch=8)
    assert s["steps_done"] == 6 and s["client"]["sent"] == 6 and s["client"]["dropped"] == 0
    assert not _engine_pids_for(os.getpid()), "the embedded engine must stop when training ends"
    m = read_jsonl(tmp_path / "agent" / "metrics.jsonl")
    assert {r["step"] for r in m} == set(range(1, 7))
    lags = {e["step"]: e["lag"] for e in s["env"]}
    rollout = {(r["slice"], r["step"]): r for r in m if r["pair"] == "old_vs_rollout" and r["n"]}
    # Honest perturbation: the rollout side runs in bfloat16 (as vLLM-style engines do), so every token carries a
    # small rounding mismatch, pre_tool included; post_tool adds the lagging worker's on top once it is behind.
    pre = [r for (sl, _), r in rollout.items() if sl == "pre_tool"]
    assert pre and all(0 < r["abs_mean"] and r["abs_max"] < 0.05 for r in pre)
    lagged = [r["abs_q99"] for (sl, st), r in rollout.items() if sl == "post_tool" and lags.get(st - 1, 0) > 0]
    assert lagged and max(lagged) > 10 * max(r["abs_q99"] for r in pre)
    assert any(k.startswith("tailguard/old_vs_rollout/post_tool/") for r in s["rows"] for k in r)
    # the agent decides: some episodes call the calculator, some answer directly
    assert 0 < sum(e["tool_episodes"] for e in s["env"]) < sum(e["episodes"] for e in s["env"])
    assert 0 <= s["eval_tool_rate"] <= 1 and s["eval_reward"] >= 0


def test_calculator_env_rollback_resyncs_worker():
    """A tailguard rollback (the callback's rollback count grows) resyncs the lagging worker; its lag restarts."""
    from calculator_env import CalculatorEnv, score

    lin = __import__("torch").nn.Linear(1, 1)
    env = CalculatorEnv(lin, _Tok(), 10, stale_onset=0.2, stale_every=1, stall_recurs=True)
    assert [env.lag(s) for s in (0, 1, 2, 5)] == [0, 0, 1, 4]
    env.history.append((4, {}))
    env.note_rollbacks(1, 6)
    assert not env.history and env.lag(6) == 1 and env.lag(9) == 4  # resynced at 6, then the stall resumes
    env.note_rollbacks(1, 8)  # the same count again: nothing changes
    assert env.resync_step == 6
    fixed = CalculatorEnv(lin, _Tok(), 10, stale_onset=0.2, stale_every=1)  # the default: the restart fixes it
    assert fixed.lag(5) == 4
    fixed.note_rollbacks(1, 6)
    assert fixed.lag(9) == 0
    assert score("3xx", 3) == 1 + 0.2 / 3 and score("12a", 3) == 0.2 * 2 / 3 and score("", 3) == 0


class _Tok:
    def __len__(self):
        return 10


def test_dpo_minimal(tmp_path, monkeypatch):
    from dpo_minimal import run

    monkeypatch.delenv("TAILGUARD_ENDPOINT", raising=False)
    r = run(steps=3, out=str(tmp_path))
    assert r["stats"]["sent"] == 3 and r["stats"]["dropped"] == 0
    assert any("tailguard/policy_vs_ref/all/abs_q99" in e for e in r["logged"])
    assert (r["run_dir"] / "metrics.jsonl").exists()


def test_replay_capture(tmp_path, monkeypatch, capsys):
    import replay_capture

    monkeypatch.delenv("TAILGUARD_ENDPOINT", raising=False)
    assert replay_capture.main(["--steps", "5", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "replayed 6/6 messages" in out or "replayed" in out
    live = [json.loads(x) for x in (tmp_path / "live" / "recorded" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "replayed" / "recorded" / "metrics.jsonl").read_text().splitlines()]
    key = lambda r: (r["step"], r["pair"], r["slice"])  # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, again))
    for a, b in zip(sorted(live, key=key), sorted(again, key=key)):
        assert a["abs_q99"] == b["abs_q99"] and a["n"] == b["n"]  # same bytes, same statistics


CHILD = """
import sys, time
from tailguard.engine import EmbeddedEngine
e = EmbeddedEngine(run_dir=sys.argv[1]).start(timeout=60)
print(e.proc.pid, flush=True)
time.sleep(600)
"""


def test_no_orphan_engine_after_sigkill(tmp_path):
    child = subprocess.Popen([PY, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        engine_pid = int(child.stdout.readline())
        assert _alive(engine_pid)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 30  # the engine polls its parent every second
        while _alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(engine_pid), "the engine outlived its SIGKILLed parent"
    finally:
        if child.poll() is None:
            child.kill()


def test_clear_message_without_node(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TAILGUARD_ENGINE_CMD", "TAILGUARD_ENDPOINT")}
    env["PATH"] = str(tmp_path)  # no node, no npx
    code = ("from tailguard.engine import EmbeddedEngine, EngineUnavailable\n"
            "try:\n    EmbeddedEngine(run_dir=%r).start()\nexcept EngineUnavailable as e:\n    print(e)\n") % str(tmp_path)
    r = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    # One line that names the cause and both fixes (install Node, or point at a running engine).
    msg = r.stdout.strip()
    assert "\n" not in msg and "Node.js >= 20" in msg and "no `node` on PATH" in msg, r.stdout + r.stderr
    assert "tailguard[node]" in msg and "endpoint=" in msg, msg


def test_ptt_rules_and_first_views():
    """PTT-style rules (examples/ptt_rules.py) at PTT's live cadence, and which view fired first."""
    from first_views import earliest, first_fired
    from ptt_rules import first_alarms

    flat = [{"step": s, "entropy": 5.0, "loss": 0.0, "reward_std": 0.3} for s in range(1, 97)]
    assert first_alarms(flat) == {"medium": None, "high": None}
    # entropy halves from step 31: medium (30-step means, from 30 steps) before high (the YAML rule, from 60 steps)
    drop = [dict(r, entropy=5.0 if r["step"] <= 30 else 1.0) for r in flat]
    fa = first_alarms(drop)
    assert fa["medium"][:2] == (50, "entropy_drop") and fa["high"][:2] == (60, "entropy_drop_yaml")
    kl = [dict(r, kl=0.31 if r["step"] == 13 else 0.01) for r in flat]
    assert first_alarms(kl)["high"][:2] == (20, "kl_hard_cap")  # evaluated every 10 steps only
    isr = [dict(r, importance_sampling_ratio=0.4) for r in flat]
    assert first_alarms(isr)["high"][:2] == (30, "importance_ratio_low")

    audit = [
        {"kind": "finding", "step": 12, "severity": "info", "detector": "alpha_ramp", "evidence": {}},
        {"kind": "finding", "step": 14, "severity": "warn", "detector": "d", "pair": "old_vs_rollout", "slice": "all", "evidence": {}},
        {"kind": "finding", "step": 15, "severity": "high", "detector": "d", "pair": "old_vs_rollout", "slice": "post_tool", "evidence": {}},
        {"kind": "finding", "step": 16, "severity": "info", "detector": "d", "pair": "old_vs_rollout", "slice": "all", "evidence": {"event": "clear"}},
    ]
    f = first_fired(audit, drop, {"loss (|change|)": None, "entropy (|change|)": 31, "post_tool q99": 10})
    assert f["all-token view"] == {"warn": (14, "d warn"), "high": None}
    assert f["post_tool slice"] == {"warn": (15, "d high"), "high": (15, "d high")}
    assert f["trainer metrics"]["warn"] == (31, "entropy") and f["other"] == {"warn": None, "high": None}
    assert earliest(f) == "all-token view (step 14)" and earliest(f, "high") == "post_tool slice (step 15)"
