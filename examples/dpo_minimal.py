"""A small DPOTrainer run on CPU with tailguard attached (embedded engine, no endpoint needed).

    .venv/bin/python examples/dpo_minimal.py [--steps 8] [--out runs/dpo-example]

DPO has per-token log πθ − log π_ref on the chosen and rejected halves (`policy_vs_ref`, user slices
`chosen` / `rejected`); there is no old or rollout policy. The engine's metrics land in the trainer's own logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from common import ROOT, build_tiny_lm  # noqa: E402


def run(steps: int = 8, out: str | None = None) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    import tailguard

    out_dir = Path(out or ROOT / "runs" / "dpo-example").resolve()
    work = Path(tempfile.mkdtemp(prefix="tg-dpo-"))
    _, tok = build_tiny_lm(work / "model")
    n = steps * 4
    data = Dataset.from_dict({
        "prompt": [f"q{i}: is {i} even?" for i in range(n)],
        "chosen": [" yes" if i % 2 == 0 else " no" for i in range(n)],
        "rejected": [" no, it is odd" if i % 2 == 0 else " yes, it is even" for i in range(n)],
    })
    args = DPOConfig(output_dir=str(work / "out"), per_device_train_batch_size=4, max_steps=steps, logging_steps=1,
                     report_to="none", learning_rate=5e-3, save_strategy="no", beta=0.1, bf16=False,
                     use_cpu=True, disable_tqdm=True)
    trainer = DPOTrainer(model=str(work / "model"), processing_class=tok, args=args, train_dataset=data)
    os.environ["TAILGUARD_RUN_DIR"] = str(out_dir)
    os.environ.pop("TAILGUARD_ENGINE_ARGS", None)
    # Each run of the example is a new training run under a fixed id: clear the last one's store (the engine
    # refuses a fixed id it already holds steps for, E_RUN_EXISTS, rather than append to it).
    shutil.rmtree(Path(out_dir) / "dpo-minimal", ignore_errors=True)
    # metric_names: q99 and ESS for every slice, including the user:chosen / user:rejected halves
    cb = tailguard.attach(trainer, run_id="dpo-minimal", log_wait_s=1.0, metric_names=["abs_q99", "ess"])
    trainer.train()
    logged = [e for e in trainer.state.log_history if any(k.startswith("tailguard/") for k in e)]
    last = logged[-1] if logged else {}
    for k in ("loss", "tailguard/policy_vs_ref/user:chosen/abs_q99", "tailguard/policy_vs_ref/user:rejected/abs_q99",
              "tailguard/policy_vs_ref/all/ess"):
        if k in last:
            print(f"{k} = {last[k]:.4f}")
    assert cb.last_client is not None  # set once training connected
    print(f"client: {cb.last_client.stats}; run store: {out_dir / 'dpo-minimal'}")
    return {"stats": dict(cb.last_client.stats), "logged": logged, "run_dir": out_dir / "dpo-minimal"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out")
    a = ap.parse_args()
    r = run(a.steps, a.out)
    return 0 if r["stats"].get("sent", 0) == a.steps else 1


if __name__ == "__main__":
    sys.exit(main())
