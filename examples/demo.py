"""Temporary demo (issue 2): start an engine, send a few synthetic steps from Python, print what the engine saw.

    .venv/bin/python examples/demo.py [--steps 5] [--endpoint tcp://127.0.0.1:5599]

Without --endpoint it starts its own `tailguard serve` on a free loopback port and stops it at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "test")]

from engine_fixture import Engine  # noqa: E402
from synthetic_steps import synthetic_step  # noqa: E402
from tailguard.client import EngineClient  # noqa: E402
from tailguard.protocol import step_checksum  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--endpoint", help="use a running engine instead of starting one")
    args = ap.parse_args()

    engine = None
    with tempfile.TemporaryDirectory(prefix="tailguard-demo-") as tmp:
        endpoint = args.endpoint
        if endpoint is None:
            print("starting engine: node ts-core/bin/tailguard.mjs serve ...", flush=True)
            engine = Engine(Path(tmp)).start()
            endpoint = engine.endpoint
        try:
            rng = np.random.default_rng(0)
            with EngineClient(endpoint, "demo", trainer="synthetic", config={"beta": 0.04}) as client:
                w = client.connect(timeout=30)
                print(f"connected to {w['engine']['name']} {w['engine']['version']} at {endpoint} (session {w['session']})")
                print(f"limits: {w['limits']}\n")
                sent = {}
                for step in range(args.steps):
                    sent[step] = synthetic_step(rng, n_seqs=8, mean_len=48)
                    client.send_step(step, sent[step], knobs={"beta": 0.04, "epsilon_low": 0.2, "epsilon_high": 0.28},
                                     logs={"loss": 0.1 * step})
                if not client.flush(30):
                    print(f"not every step was answered: {client.stats}")
                print(f"{'step':>4} {'tokens':>6} {'seqs':>4} {'pre_tool':>8} {'post_tool':>9} {'tool_out':>8}  checksum    directive")
                for step, arrays in sent.items():
                    r = client.reply_for(step)
                    if r is None:
                        print(f"{step:>4}  (no reply)")
                        continue
                    rc = r["received"]
                    ok = "ok" if rc["checksum"] == step_checksum(arrays.values()) else "MISMATCH"
                    d = r["directive"]
                    print(f"{step:>4} {rc['tokens']:>6} {rc['n_seqs']:>4} {rc['slices']['pre_tool']:>8} "
                          f"{rc['slices']['post_tool']:>9} {rc['slices']['tool_output']:>8}  {rc['checksum']:08x} {ok:<3} "
                          f"{d['action']} @ step {d['apply_at_step']}")
                metrics_step, metrics = client.latest_metrics()
                if metrics:
                    print(f"\nheadline metrics of step {metrics_step}:")
                    for k in sorted(metrics)[:12]:
                        print(f"  {k} = {metrics[k]}")
                print(f"\nclient stats: {client.stats}")
        finally:
            if engine is not None:
                engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
