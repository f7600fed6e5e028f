"""Two real processes (torchrun, gloo): only rank 0 receives directives, both apply them at the same step.

Also a rollback under DDP: both ranks load the same checkpoint and end bit-equal to it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from test_directives_tiny import read_jsonl

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = textwrap.dedent(
    """
    import json, os, sys, torch
    sys.path.insert(0, {here!r})
    from safetensors.torch import load_file
    from test_directives_tiny import ScriptedClient, build_grpo, drive
    from tailguard.control.directives import DirectiveApplier, read_knobs

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    tr = build_grpo(out, beta=0.04, max_steps=7, save_steps=2, ddp_backend="gloo")
    script = {{
        1: [{{"id": "t1", "action": "tighten", "apply_at_step": 3, "params": {{"beta": 0.09, "epsilon_low": 0.12}}}}],
        4: [{{"id": "rb", "action": "rollback", "apply_at_step": 5, "params": {{"checkpoint": {{"step": 4}}}}}}],
    }}
    client = ScriptedClient(tr, script if rank == 0 else {{}})  # rank 1 never hears from the engine
    ap = DirectiveApplier(tr, client, rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    seen = {{}}

    def observe(state):
        seen[state.global_step] = read_knobs(tr)
        if state.global_step == 5:
            saved = load_file(os.path.join(out, "checkpoint-4", "model.safetensors"))
            w = tr.model.state_dict()
            seen["rollback_equal"] = all(torch.equal(w[k], v) for k, v in saved.items())

    drive(tr, ap, observe)
    tr.train()
    with open(os.path.join(out, f"result.rank{{rank}}.json"), "w") as f:
        json.dump({{"seen": {{str(k): v for k, v in seen.items()}}, "acks": client.acks, "step": tr.state.global_step}}, f)
    torch.distributed.destroy_process_group()  # else gloo's threads can abort the exit (pytorch#190489)
    """
)


def test_two_ranks_apply_the_same_directive_at_the_same_step(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=HERE))
    out = tmp_path / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    proc = subprocess.run(
        [*torchrun, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.load(open(out / f"result.rank{r}.json")) for r in (0, 1)]
    logs = [read_jsonl(out / f"tailguard-directives.rank{r}.jsonl") for r in (0, 1)]
    for r, (res, log) in enumerate(zip(results, logs)):
        assert res["step"] == 7
        assert res["seen"]["2"]["beta"] == 0.04 and res["seen"]["3"]["beta"] == 0.09, r
        assert res["seen"]["3"]["epsilon_low"] == 0.12 and res["seen"]["rollback_equal"] is True, r
        applied = [(x["directive_id"], x["step"], x["applied"], x["rank"]) for x in log if x["event"] == "directive"]
        assert applied == [("t1", 3, True, r), ("rb", 5, True, r)]
        assert [(a["directive_id"], a["step"]) for a in res["acks"]] == [("t1", 3), ("rb", 5)]  # each rank acks
    strip = [[{k: v for k, v in x.items() if k not in ("rank", "t")} for x in log] for log in logs]
    assert strip[0] == strip[1]  # the same story on both ranks
