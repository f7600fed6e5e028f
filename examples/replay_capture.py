"""Record a capture of a real GRPO run, then replay it through the engine with a different policy.

    .venv/bin/python examples/replay_capture.py [--steps 16] [--out runs/replay-example]

1. `grpo_tool_agent.run(..., record_to=...)`: the embedded engine (`serve --record`) writes every step message
   it receives, byte for byte, to `capture.tgcap`, while observing only (`mode: observe`).
2. `tailguard replay capture.tgcap --policy strict.yaml`: the same statistics, detectors and policy code
   re-run over the recording on the capture's own clock, here with a stricter, controlling policy, so you
   can see which directives it would have issued — without re-training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, read_jsonl, tailguard_cli  # noqa: E402

STRICT = """# stricter than the default: control on, exceedance and ESS fire earlier
mode: control
min_steps_between_directives: 2
escalate_on: warn
detectors:
  exceedance:
    fraction: { warn: 0.005, high: 0.02 }
  ess_collapse:
    ess: { warn: 0.9, high: 0.8 }
"""


def actions(run_dir: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in read_jsonl(run_dir / "directives.jsonl"):
        if d.get("kind") == "directive":
            out[d["action"]] = out.get(d["action"], 0) + 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "runs" / "replay-example"))
    args = ap.parse_args(argv)
    from grpo_tool_agent import run

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    capture = out / "capture.tgcap"
    capture.unlink(missing_ok=True)
    print(f"1. recording a {args.steps}-step GRPO run (observe only) to {capture}", flush=True)
    run("observe", steps=args.steps, run_dir=str(out / "live"), run_id="recorded", record_to=str(capture),
        quiet=True, stale_onset=0.3, batch=16)
    policy = out / "strict.yaml"
    policy.write_text(STRICT)
    print(f"2. tailguard replay {capture.name} --policy {policy.name}", flush=True)
    r = tailguard_cli("replay", str(capture), "--policy", str(policy), "--run-dir", str(out / "replayed"),
                      "--force", check=False, capture=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        print(r.stderr.strip(), file=sys.stderr)
        return r.returncode
    live, replayed = actions(out / "live" / "recorded"), actions(out / "replayed" / "recorded")
    print(f"directives live (observe policy):   {live or 'none'}")
    print(f"directives replayed (strict policy): {replayed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
