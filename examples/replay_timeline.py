"""Replay the demo's capture through `tailguard replay` with the current detectors and print the timeline of
findings and directives (with each finding's top token). `--write` puts it into docs/detection.md (between the
`replay-timeline` markers).

    .venv/bin/python examples/replay_timeline.py [--capture runs/demo-seeds/capture.tgcap] [--mode observe] [--write]

The capture is the seed-0 stalled run that examples/demo_seeds.py records (every step message the engine
received, byte for byte); the replay re-runs statistics, detectors and policy on the capture's own clock, so
the same capture and code always give the same timeline, and a detector change can be judged without
re-training.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, read_jsonl, tailguard_cli  # noqa: E402
from first_views import view_of  # noqa: E402

DOC = ROOT / "docs" / "detection.md"
BEGIN, END = "<!-- replay-timeline:begin (examples/replay_timeline.py --write) -->", "<!-- replay-timeline:end -->"
DEMO_POLICY = ROOT / "examples" / "demo_policy.yaml"


def top_token(f: dict) -> str:
    tt = f.get("evidence", {}).get("top_tokens") or []
    if not tt:
        return ""
    t = tt[0]
    tok = repr(t["text"]) if "text" in t else f"id {t['token_id']}" if "token_id" in t else ""
    return f"ℓ {t['value']:+.3g} seq {t['seq']} pos {t['pos']} {tok}".strip()


def timeline(run_dir: Path, max_rows: int = 40) -> tuple[list[str], dict]:
    audit = read_jsonl(run_dir / "directives.jsonl")
    rows, counts = [], {"findings": 0, "directives": 0}
    for e in sorted(audit, key=lambda e: e["step"]):
        if e.get("kind") == "finding":
            if e.get("evidence", {}).get("event") == "clear":
                what = f"clear {e['detector']}"
            else:
                what = f"{e['severity']} {e['detector']}"
            counts["findings"] += 1
            where = "/".join(x for x in (e.get("pair"), e.get("slice"), f"rank {e['rank']}" if e.get("rank") is not None else None) if x)
            rows.append(f"| {e['step']} | finding | {what} | {where} ({view_of(e)}) | {e['message'][:90]} | {top_token(e)} |")
        elif e.get("kind") == "directive" and e.get("action") != "noop":
            counts["directives"] += 1
            rows.append(f"| {e['step']} | directive | {e['action']} → {e['apply_at_step']} | | {e.get('reason', '')[:90]} | |")
    if len(rows) > max_rows:
        rows = rows[:max_rows] + [f"| … | | {len(rows) - max_rows} more rows | | | |"]
    return rows, counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default=str(ROOT / "runs" / "demo-seeds" / "capture.tgcap"))
    ap.add_argument("--mode", choices=["observe", "control"], default="observe")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    cap = Path(args.capture).resolve()
    if not cap.exists():
        print(f"replay_timeline: no capture at {cap} (run examples/demo_seeds.py first)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tg-replay-"))
    policy = work / "policy.yaml"
    policy.write_text(f"mode: {args.mode}\n" + DEMO_POLICY.read_text())
    r = tailguard_cli("replay", str(cap), "--policy", str(policy), "--run-dir", str(work / "runs"), "--force", capture=True)
    print(r.stdout.strip())
    run_dirs = [d for d in (work / "runs").iterdir() if d.is_dir()]
    rows, counts = timeline(run_dirs[0])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, capture_output=True).stdout.strip()
    block = "\n".join([
        BEGIN, "",
        f"`examples/replay_timeline.py --write` at commit {commit}: `tailguard replay {cap.relative_to(ROOT) if cap.is_relative_to(ROOT) else cap} "
        f"--policy <demo policy, mode: {args.mode}>` ({counts['findings']} findings, {counts['directives']} directives). "
        "The stall starts at step 9; the first top token of each finding names where the tail sits.", "",
        "| step | kind | what | where (view) | message | top token |", "|---|---|---|---|---|---|", *rows, "", END])
    print(block)
    if args.write:
        text = DOC.read_text()
        if BEGIN in text and END in text:
            text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
