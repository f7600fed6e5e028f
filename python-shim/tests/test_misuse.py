"""Misuse gets a clear refusal or works, never a silent failure (issue 14, item 4). Real tiny GRPO trainers,
a real engine process."""

import json
import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("trl")

import tailguard  # noqa: E402
from tailguard.capture import CaptureError  # noqa: E402
from tailguard.options import OptionsError  # noqa: E402
from test_attach import NOWHERE, grpo  # noqa: E402
from tiny import read_jsonl, start_engine  # noqa: E402


@pytest.fixture
def engine(tmp_path):
    e = start_engine(tmp_path / "runs")
    yield e
    e.stop()


def stored_steps(engine, run_id: str) -> list[int]:
    return [r["step"] for r in read_jsonl(Path(engine.run_dir) / run_id / "steps.jsonl")]


def test_a_second_attach_on_the_same_trainer_is_refused(tiny, tmp_path):
    trainer = grpo(tiny, tmp_path)
    first = tailguard.attach(trainer, endpoint=NOWHERE)
    with pytest.raises(CaptureError, match="already has a TailguardCallback") as e:  # before: a second session
        tailguard.attach(trainer, endpoint=NOWHERE)
    assert e.value.code == "E_ATTACHED"
    with pytest.raises(CaptureError, match="already attached"):
        first.attach(trainer)
    first.detach()
    tailguard.attach(trainer, endpoint=NOWHERE).detach()  # after detach() a new one may attach


@pytest.mark.parametrize("endpoint, hint", [("http://127.0.0.1:8765", "not HTTP"), ("inproc://tg", "another process")])
def test_endpoints_the_engine_cannot_be_reached_on_are_refused_at_attach(tiny, tmp_path, endpoint, hint):
    trainer = grpo(tiny, tmp_path)
    with pytest.raises(OptionsError, match=hint) as e:  # before: a traceback in the client thread, "keeps retrying"
        tailguard.attach(trainer, endpoint=endpoint)
    assert e.value.option == "endpoint" and "train" not in vars(trainer)


def test_callback_passed_in_callbacks_attaches_at_train_begin(tiny, tmp_path, engine, caplog):
    from trl import GRPOConfig, GRPOTrainer
    from tiny import length_reward, prompt_dataset

    model_dir, tok = tiny
    cb = tailguard.TailguardCallback(endpoint=engine.endpoint, run_id="via-callbacks")
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=4,
                      max_steps=2, max_completion_length=8, logging_steps=1, report_to="none", bf16=False,
                      save_strategy="no", seed=0, beta=0.1)
    trainer = GRPOTrainer(model=model_dir, processing_class=tok, reward_funcs=length_reward, args=args,
                          train_dataset=prompt_dataset(8), callbacks=[cb])
    with caplog.at_level(logging.WARNING, logger="tailguard"):
        trainer.train()  # before: trained with no monitoring and no warning
    assert cb.trainer is trainer and "attaching to GRPOTrainer" in caplog.text
    assert cb.last_client.stats["recorded"] == 2
    assert stored_steps(engine, "via-callbacks") == [1, 2]
    assert "tailguard/client/recorded" in trainer.state.log_history[-2]


def test_the_default_run_id_never_appends_to_an_earlier_run(tiny, tmp_path, engine, caplog):
    ids = []
    for _ in range(2):  # the same output_dir twice, as every README snippet does
        trainer = grpo(tiny, tmp_path)
        with caplog.at_level(logging.WARNING, logger="tailguard"):
            cb = tailguard.attach(trainer, endpoint=engine.endpoint)
            trainer.train()
        ids.append(cb.run_id)
        assert f"run id {cb.run_id}" in caplog.text  # printed
    assert ids[0] != ids[1] and all(i.startswith("out-") for i in ids), ids
    for rid in ids:  # before: one run "out" with the second run's steps appended after the first's
        assert stored_steps(engine, rid) == [1, 2]
    assert json.loads((tmp_path / "out" / "tailguard-run.json").read_text())["run_id"] == ids[1]


def test_an_explicit_run_id_reused_for_a_new_run_is_refused_loudly(tiny, tmp_path, engine, caplog):
    first = grpo(tiny, tmp_path)
    tailguard.attach(first, endpoint=engine.endpoint, run_id="reused")
    first.train()
    again = grpo(tiny, tmp_path / "again")  # a new training run under the same explicit id: never appended
    cb = tailguard.attach(again, endpoint=engine.endpoint, run_id="reused")
    with caplog.at_level(logging.ERROR, logger="tailguard"):
        again.train()  # fail_open: trains, says loudly that it is not monitored, counts every step dropped
    assert "E_RUN_EXISTS" in caplog.text and "NOT monitored" in caplog.text
    assert cb.last_client.stats["dropped"] == 2 and cb.last_client.stats["sent"] == 0
    assert stored_steps(engine, "reused") == [1, 2]
    closed = grpo(tiny, tmp_path / "closed")
    tailguard.attach(closed, endpoint=engine.endpoint, run_id="reused", fail_mode="fail_closed")
    with pytest.raises(tailguard.TailguardStopped, match="E_RUN_EXISTS") as e:
        closed.train()
    assert e.value.code == "E_REFUSED" and closed.state.global_step == 0
