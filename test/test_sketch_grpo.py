"""Sketch mode end to end: a real tiny GRPO run on 2 gloo processes (torchrun), a real engine process.

Both ranks capture and sketch their own micro-batches; the sketches are reduced over gloo; only rank 0
holds an engine connection. The engine must see world_size 2, both ranks' tokens per slice (recomputed
here from each rank's captured masks), and rank 0's trainer logs must carry `tailguard/...` metrics.
The tiny GRPO here has no tool spans (every token is pre_tool); the tool slices in sketch mode are
covered by test_sketch_equivalence.py.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("trl")
HERE = Path(__file__).resolve().parent
SHIM_TESTS = HERE.parent / "python-shim" / "tests"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(SHIM_TESTS))
from engine_fixture import Engine  # noqa: E402
from tiny import read_jsonl, slice_counts  # noqa: E402  (tiny.py and test_directives_tiny.py: shim test helpers)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, {shim_tests!r})
    import tailguard
    from test_directives_tiny import build_grpo

    out, endpoint = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    trainer = build_grpo(os.path.join(out, "run"), beta=0.1, max_steps=4, num_iterations=2, ddp_backend="gloo",
                         save_steps=2)
    cb = tailguard.attach(trainer, endpoint=endpoint, run_id="sketch-grpo", mode="sketch", retain_captured=True,
                          log_wait_s=10.0)
    trainer.train()
    keys = sorted({{k for e in trainer.state.log_history for k in e if k.startswith("tailguard/")}})
    # What this rank captured, per step: tool masks split by sequence (the test recomputes slices itself).
    captured = {{
        str(step): [a["tool_mask"][a["offsets"][i]:a["offsets"][i + 1]].tolist() for i in range(len(a["offsets"]) - 1)]
        for step, a in cb.capture.captured
    }}
    with open(os.path.join(out, f"rank{{rank}}.json"), "w") as f:
        json.dump({{"captured": captured, "keys": keys}}, f)
    import torch.distributed as dist
    dist.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def test_grpo_sketch_mode_two_gloo_ranks(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(shim_tests=str(SHIM_TESTS)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               TRL_EXPERIMENTAL_SILENCE="1")
    with Engine(tmp_path / "engine") as eng:
        with socket.socket() as sock:  # a fixed free port: rendezvous on port 0 can stall
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               "--master_addr=127.0.0.1", f"--master_port={port}",
                               str(script), str(tmp_path), eng.endpoint], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    metrics = read_jsonl(eng.run_dir / "sketch-grpo" / "metrics.jsonl")
    by_key = {(m["step"], m["pair"], m["slice"]): m for m in metrics}
    steps = sorted({m["step"] for m in metrics})
    assert steps == [1, 2, 3, 4]
    for step in steps:
        expected = defaultdict(int)
        for r in ranks:  # both ranks' tokens, recomputed from each rank's own captured masks
            for mask in r["captured"][str(step)]:
                for k, v in slice_counts(mask).items():
                    expected[k] += v
        assert expected["all"] > 0
        for s in ("all", "pre_tool", "post_tool"):
            rec = by_key.get((step, "policy_vs_ref", s))
            got = 0 if rec is None else rec["n"] + rec["nonfinite"]
            assert got == expected[s], (step, s, got, expected[s])
    assert by_key[(4, "policy_vs_ref", "all")]["abs_max"] > 0  # beta > 0: the policy has moved off the reference
    steps_log = read_jsonl(eng.run_dir / "sketch-grpo" / "steps.jsonl") if (eng.run_dir / "sketch-grpo" / "steps.jsonl").exists() else []
    for s in steps_log:
        assert s.get("ranksMissing", s.get("ranks_missing", [])) == []
    assert any(k.startswith("tailguard/policy_vs_ref/") for k in ranks[0]["keys"]), ranks[0]["keys"]
    # only rank 0 talks to the engine (its client counters are logged; rank 1 has no client)
    assert "tailguard/client/sent" in ranks[0]["keys"] and "tailguard/client/sent" not in ranks[1]["keys"]
    assert not any(k.startswith("tailguard/policy_vs_ref/") for k in ranks[1]["keys"])
    # checkpoint notices ride on sketch steps too, so the engine can certify checkpoints in sketch mode
    notices = [r for r in read_jsonl(eng.run_dir / "sketch-grpo" / "directives.jsonl") if r.get("kind") == "checkpoint"]
    assert {r["step"] for r in notices if r.get("status") == "registered"} >= {2}, notices
