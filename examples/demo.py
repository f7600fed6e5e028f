"""`make demo`: the tool-agent GRPO run twice — tailguard observing only, then with control on — and a side-by-side.

    .venv/bin/python examples/demo.py [--steps 48] [--out runs/demo]

Each run is `examples/grpo_tool_agent.py` in its own process (progress lines stream through); the engine is
embedded (`attach()` with no endpoint starts `tailguard serve`). Then, from each run store:
- the step at which the sliced signal moved (post_tool abs_q99 and ESS of old_vs_rollout) against the step at
  which the aggregate views moved: the trainer's loss, reward and entropy, and the engine's all-token mean |ℓ|
  of old_vs_rollout (beta = 0, so TRL logs no KL), all with one rule (`onset` below);
- which view fired first: tailguard's findings on the post_tool slice vs its all-token view, the trainer's
  metrics, and PTT-style rules on them (first_views.py, ptt_rules.py);
- the directives the engine issued; final reward (training, and a fresh on-policy evaluation) and stability;
- `tailguard report` writes each run's HTML report, and `tailguard report A B` both runs overlaid.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, read_jsonl, tailguard_cli  # noqa: E402
from first_views import earliest, first_fired, fmt_cell  # noqa: E402

PAIR = "old_vs_rollout"  # where the perturbation acts (docs/demo.md)
BASE = (3, 9)  # baseline steps [first, last): after the first updates, before the worker stalls (step 9 of 96)


def onset(series: dict[int, float], lower_is_worse: bool = False, run: int = 3, both: bool = False) -> int | None:
    """First step (after the baseline) from which `run` consecutive steps sit outside the baseline band.

    Band: baseline median ± max(4·MAD, 25% of |median|, 0.01); only the worsening direction counts (`both`:
    either direction, for series with no "worse" side, like loss under GRPO).
    The same rule for every series, so the comparison is like for like.
    """
    base = [v for s, v in series.items() if BASE[0] <= s < BASE[1]]
    if len(base) < 3:
        return None
    med = statistics.median(base)
    mad = statistics.median(abs(v - med) for v in base)
    band = max(4 * mad, 0.25 * abs(med), 0.01)
    steps = sorted(s for s in series if s >= BASE[1])
    streak: list[int] = []
    for s in steps:
        v = series[s]
        out = abs(v - med) > band if both else (med - v > band) if lower_is_worse else (v - med > band)
        streak = streak + [s] if out else []
        if len(streak) >= run:
            return streak[0]
    return None


def load(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "example_summary.json").read_text())
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    sl = {(m["pair"], m["slice"], m["step"]): m for m in metrics}
    q99 = {s: m["abs_q99"] for (p, sc, s), m in sl.items() if p == PAIR and sc == "post_tool" and m.get("n")}
    ess = {s: m["ess"] for (p, sc, s), m in sl.items() if p == PAIR and sc == "post_tool" and m.get("n")}
    pre_q99 = {s: m["abs_q99"] for (p, sc, s), m in sl.items() if p == PAIR and sc == "pre_tool" and m.get("n")}
    all_mean = {s: m["abs_mean"] for (p, sc, s), m in sl.items() if p == PAIR and sc == "all" and m.get("n")}
    rows = summary["rows"]
    series = {k: {r["step"]: r[k] for r in rows if k in r} for k in ("loss", "reward", "entropy")}
    audit = read_jsonl(run_dir / "directives.jsonl")
    directives = [d for d in audit if d.get("kind") == "directive" and d.get("action") != "noop"]
    acks = {a["directive_id"]: a for a in audit if a.get("kind") == "ack"}
    rewards = [r["reward"] for r in rows]
    last = rows[-10:]
    onsets = {
        "post_tool q99": onset(q99), "post_tool ESS": onset(ess, lower_is_worse=True),
        "pre_tool q99": onset(pre_q99), "all-token mean |l|": onset(all_mean),
        "loss (|change|)": onset(series["loss"], both=True), "reward (drop)": onset(series["reward"], True),
        "entropy (|change|)": onset(series["entropy"], both=True),
    }
    return {
        "summary": summary, "q99": q99, "ess": ess, "pre_q99": pre_q99,
        "directives": directives, "acks": acks,
        "onsets": onsets, "fired": first_fired(audit, rows, onsets),
        "final_reward": statistics.mean(rewards[-5:]) if rewards else float("nan"),
        "reward_std_last10": statistics.pstdev([r["reward"] for r in last]) if len(last) > 1 else float("nan"),
        "tool_last10": statistics.mean([r["tool_share"] for r in last]) if last else float("nan"),
        "q99_last10": statistics.mean([q99[s] for s in sorted(q99)[-10:]]) if q99 else float("nan"),
        "ess_last10": statistics.mean([ess[s] for s in sorted(ess)[-10:]]) if ess else float("nan"),
    }


def fmt(v, spec=".3f") -> str:
    if v is None:
        return "-"
    return format(v, spec) if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from tailguard.engine import EngineUnavailable, engine_command

    try:
        engine_command()
    except EngineUnavailable as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("TAILGUARD_ENDPOINT", None)  # the demo shows the embedded engine
    t0 = time.monotonic()
    results = {}
    for mode in ("observe", "control"):
        run_id = f"demo-{mode}"
        for stale in (out / run_id).glob("*"):
            stale.unlink()  # a fresh run store each time
        print(f"\n=== run {run_id}: GRPO tool agent, {args.steps} steps, policy mode {mode} ===", flush=True)
        cmd = [sys.executable, str(ROOT / "examples" / "grpo_tool_agent.py"), "--policy-mode", mode, "--steps",
               str(args.steps), "--run-dir", str(out), "--run-id", run_id, "--seed", str(args.seed)]
        rc = subprocess.run(cmd, env=env, cwd=ROOT).returncode
        if rc != 0:
            print(f"demo: the {mode} run failed with exit code {rc}", file=sys.stderr)
            return rc
        results[mode] = load(out / run_id)
        report = out / run_id / "report.html"
        r = tailguard_cli("report", str(out / run_id), "--out", str(report), check=False, capture=True)
        results[mode]["report"] = str(report) if r.returncode == 0 else f"(report failed: {r.stderr.strip()[-200:]})"
    compare = out / "compare-observe-control.html"  # both runs overlaid (`tailguard report A B`)
    r = tailguard_cli("report", str(out / "demo-observe"), str(out / "demo-control"), "--out", str(compare), check=False, capture=True)
    results["control"]["compare"] = str(compare) if r.returncode == 0 else f"(compare failed: {r.stderr.strip()[-200:]})"
    print_summary(results, time.monotonic() - t0)
    (out / "demo_summary.json").write_text(json.dumps(
        {m: {k: v for k, v in r.items() if k not in ("summary", "acks", "q99", "ess", "pre_q99")}
         for m, r in results.items()}, indent=1, default=float))
    return 0


def print_summary(results: dict, seconds: float) -> None:
    obs, ctl = results["observe"], results["control"]
    print("\n" + "=" * 78)
    print(f"tailguard demo summary ({seconds / 60:.1f} min)   pair {PAIR}, baseline steps {BASE[0]}..{BASE[1] - 1}")
    print("=" * 78)
    print(f"{'first step that moved (3 steps outside band)':<46}{'observe':>14}{'control':>14}")
    for name in obs["onsets"]:
        print(f"  {name:<44}{fmt(obs['onsets'][name]):>14}{fmt(ctl['onsets'][name]):>14}")
    print(f"{'outcome':<46}{'observe':>14}{'control':>14}")
    rows = [
        ("steps trained", obs["summary"]["steps_done"], ctl["summary"]["steps_done"]),
        ("final reward (mean of last 5 steps)", obs["final_reward"], ctl["final_reward"]),
        ("on-policy eval reward of the final model", obs["summary"]["eval_reward"], ctl["summary"]["eval_reward"]),
        ("  its tool-call rate", obs["summary"]["eval_tool_rate"], ctl["summary"]["eval_tool_rate"]),
        ("tool-call share, mean of last 10 steps", obs["tool_last10"], ctl["tool_last10"]),
        ("reward std over last 10 steps", obs["reward_std_last10"], ctl["reward_std_last10"]),
        ("post_tool q99, mean of last 10 steps", obs["q99_last10"], ctl["q99_last10"]),
        ("post_tool ESS, mean of last 10 steps", obs["ess_last10"], ctl["ess_last10"]),
        ("alpha ceiling in force", obs["summary"].get("alpha_ceiling"), ctl["summary"].get("alpha_ceiling")),
    ]
    for name, a, b in rows:
        print(f"  {name:<44}{fmt(a):>14}{fmt(b):>14}")
    print("\nwhich view fired first: first step at warn or above | at high or above (detector)")
    for mode, r in results.items():
        for view, d in r["fired"].items():
            if view in ("pre_tool slice", "other") and not d["warn"]:
                continue
            print(f"  {mode:<8} {view:<18} {fmt_cell(d['warn']):>32} | {fmt_cell(d['high'])}")
        print(f"  {mode:<8} first at warn+: {earliest(r['fired'])};  at high+: {earliest(r['fired'], 'high')}")
    for mode, r in results.items():
        print(f"\ndirectives ({mode}): {len(r['directives'])}")
        for d in r["directives"]:
            ack = r["acks"].get(d["id"], {})
            how = ("partly applied, refused: " + ack["refused"][:40] if ack.get("refused") else "applied") if ack.get("applied") \
                else (f"refused: {ack['refused']}" if ack.get("refused") else "no ack")
            params = {k: v for k, v in d.get("params", {}).items() if k != "certified_checkpoints"}
            print(f"  step {d['step']:>3} -> {d['action']:<10} {json.dumps(params, default=str)[:60]:<60} [{how}]")
            print(f"            {d.get('reason', '')[:100]}")
        print(f"report: {r['report']}")
    print(f"\nobserve vs control overlaid: {results['control'].get('compare')}")


if __name__ == "__main__":
    sys.exit(main())
