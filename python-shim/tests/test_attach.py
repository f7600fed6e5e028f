"""`attach` against real tiny trainers and real engine processes: refusals start no engine, detach stops
the one it started, CURVE keys given as attach options reach a CURVE engine, and the Liger refusal
matches what TRL 1.16 really does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")

import tailguard  # noqa: E402
import tailguard.engine  # noqa: E402
from tailguard.capture import CaptureError  # noqa: E402
from tailguard.capture.grpo import uses_liger_loss  # noqa: E402
from tailguard.options import OptionsError  # noqa: E402
from tiny import length_reward, prompt_dataset, start_engine  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "ts-core" / "bin" / "tailguard.mjs"
NOWHERE = "tcp://127.0.0.1:9"


def grpo(tiny, tmp_path, **overrides):
    from trl import GRPOConfig, GRPOTrainer

    model_dir, tok = tiny
    cfg = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
        gradient_accumulation_steps=1, max_steps=2, max_completion_length=8, logging_steps=1,
        report_to="none", bf16=False, save_strategy="no", seed=0, beta=0.1,
    )
    cfg.update(overrides)
    return GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward,
                       args=GRPOConfig(**cfg), train_dataset=prompt_dataset(8))


@pytest.fixture
def engine_starts(monkeypatch, tmp_path):
    """Every EmbeddedEngine that `attach` starts (the real start, spied on); none may outlive the test."""
    monkeypatch.delenv("TAILGUARD_ENDPOINT", raising=False)
    monkeypatch.setenv("TAILGUARD_RUN_DIR", str(tmp_path / "runs"))
    started = []
    real_start = tailguard.engine.EmbeddedEngine.start

    def start(self, *args, **kwargs):
        started.append(self)
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(tailguard.engine.EmbeddedEngine, "start", start)
    yield started
    for eng in started:
        alive = eng.running
        eng.stop()
        assert not alive, "an embedded engine was left running"


def test_refusals_start_no_engine(tiny, tmp_path, engine_starts):
    with pytest.raises(CaptureError, match="supports TRL's GRPOTrainer") as e:  # was AttributeError
        tailguard.attach(object())
    assert e.value.code == "E_UNSUPPORTED"

    from datasets import Dataset
    from trl import GRPOTrainer, SFTConfig, SFTTrainer

    model_dir, tok = tiny
    sft = SFTTrainer(model=model_dir, processing_class=tok,
                     args=SFTConfig(output_dir=str(tmp_path / "sft"), report_to="none", max_steps=1, bf16=False),
                     train_dataset=Dataset.from_dict({"text": ["hello world"] * 4}))
    with pytest.raises(CaptureError) as e:
        tailguard.attach(sft)
    assert e.value.code == "E_UNSUPPORTED" and "train" not in vars(sft)

    class RenamedInternals(GRPOTrainer):  # a TRL whose private names moved
        _get_per_token_logps_and_entropies = property(lambda self: (_ for _ in ()).throw(AttributeError("gone")))

    with pytest.raises(CaptureError) as e:
        tailguard.attach(RenamedInternals.__new__(RenamedInternals))
    assert e.value.code == "E_TRL_INTERNALS"

    trainer = grpo(tiny, tmp_path)
    with pytest.raises(OptionsError) as e:  # a server key without the client's pair
        tailguard.attach(trainer, curve_server_key="x" * 40)
    assert e.value.code == "E_OPTION" and e.value.option == "curve_secret_key"
    trainer.liger_grpo_loss = object()  # what TRL < 1.16 builds for use_liger_kernel=True
    with pytest.raises(CaptureError, match="Liger") as e:
        tailguard.attach(trainer)
    assert e.value.code == "E_UNSUPPORTED"
    assert "train" not in vars(trainer) and "_compute_loss" not in vars(trainer)
    assert engine_starts == []  # every refusal came before the engine


def test_detach_stops_the_engine_attach_started(tiny, tmp_path, engine_starts):
    trainer = grpo(tiny, tmp_path)
    cb = tailguard.attach(trainer)
    assert len(engine_starts) == 1 and engine_starts[0].running
    assert cb.endpoint.startswith("ipc://") and "train" in vars(trainer)
    cb.detach()
    assert not engine_starts[0].running and cb.endpoint is None and "train" not in vars(trainer)


def test_liger_check_follows_trl_1_16(tiny, tmp_path):
    trainer = grpo(tiny, tmp_path)
    # TRL 1.16: use_liger_kernel only swaps in Liger's layer kernels; the per-token logps still exist.
    trainer.args.use_liger_kernel = True
    assert not hasattr(trainer.args, "use_liger_loss")  # the flag the old check read does not exist
    assert not uses_liger_loss(trainer)
    cb = tailguard.attach(trainer, endpoint=NOWHERE)
    assert "_get_per_token_logps_and_entropies" in vars(trainer)
    cb.detach()
    trainer.liger_grpo_loss = object()
    assert uses_liger_loss(trainer)


def keygen(prefix: Path) -> tuple[str, str]:
    out = subprocess.run(["node", str(CLI), "keygen", "--out", str(prefix)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return str(prefix) + ".key", str(prefix) + ".pub"


def test_curve_keys_as_attach_options(tiny, tmp_path):
    esec, epub = keygen(tmp_path / "engine")
    csec, cpub = keygen(tmp_path / "client")
    allow = tmp_path / "allow"
    allow.write_text(Path(cpub).read_text())
    engine = start_engine(tmp_path / "runs", ["--curve-secret", esec, "--curve-allow", str(allow), "--log-level", "info"])
    try:
        trainer = grpo(tiny, tmp_path)
        # No keys: the CURVE engine never answers, so fail_closed refuses to train.
        plain = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="curve-plain", fail_mode="fail_closed",
                                 connect_timeout_s=2)
        with pytest.raises(RuntimeError, match="engine unreachable"):
            trainer.train()
        plain.detach()

        cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="curve-run", fail_mode="fail_closed",
                              connect_timeout_s=30, curve_server_key=epub, curve_secret_key=csec)
        assert csec not in repr(cb.options)
        trainer.train()
        stats = cb.last_client.stats
        assert stats["sent"] == 2 and stats["dropped"] == 0, stats
        assert engine.running
        log = Path(engine.log_file or Path(engine.run_dir) / "engine.log").read_text()
        assert "client admitted (CURVE)" in log
        runs = {p.name for p in Path(engine.run_dir).iterdir()}
        assert "curve-run" in runs and "curve-plain" not in runs
    finally:
        engine.stop()
