"""Raw mode's staging thread (capture/background.py, issue 17 item 6): the per-token staging runs off the
training thread, steps arrive in order and bit-identical, a failing staging is a counted drop with one
warning, and train end flushes what is staged. Real TRL trainer, real engine process; no timing asserts."""

import logging
import os
import sys
import threading

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(__file__))

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

import tailguard  # noqa: E402
from tailguard.capture import staging  # noqa: E402
from tailguard.capture.background import StagingThread  # noqa: E402
from tailguard.capture.base import Capture, flatten  # noqa: E402
from tailguard.options import parse_options  # noqa: E402
from test_capture_grpo import grpo  # noqa: E402
from tiny import ToolRollout, start_engine  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = start_engine(tmp_path_factory.mktemp("runs"))
    yield e
    e.stop()


def test_no_per_token_staging_on_the_training_thread(tiny, tmp_path, engine, monkeypatch):
    threads = []
    add = staging.StepStager.add
    monkeypatch.setattr(staging.StepStager, "add", lambda self, rec: (threads.append(threading.current_thread()),
                                                                      add(self, rec))[1])
    trainer = grpo(tiny, tmp_path, ToolRollout(tiny[1], seed=3), num_iterations=2, beta=0.1)
    cb = tailguard.attach(trainer, endpoint=engine.endpoint, run_id="staging-thread", retain_captured=True)
    trainer.train()
    # Every micro-batch was staged, none of them on the training thread.
    assert len(threads) == 4 * 2 and threading.main_thread() not in threads, threads
    st = cb.last_client.stats
    assert [s for s, _ in cb.capture.captured] == [1, 2, 3, 4]
    assert st["dropped"] == 0 and st["sent"] == 4 and st["queued"] == 0, st  # train end flushed all 4
    assert cb._staging is None and not any(t.name == "tailguard-staging" for t in threading.enumerate())


def test_deferred_step_is_bit_identical_to_synchronous_staging():
    g = torch.Generator().manual_seed(5)
    mbs = []
    for _ in range(3):
        cm = (torch.rand(6, 40, generator=g) < 0.7).long()
        mbs.append((cm, {"policy_vs_ref": torch.randn(6, 40, generator=g), "tool_mask": (torch.rand(6, 40, generator=g) < 0.9).long()},
                    {"advantages": torch.randn(6, generator=g), "seq_ids": torch.arange(6)}))
    caps = [Capture(object(), parse_options(pairs=["policy_vs_ref", "policy_vs_old"])) for _ in range(2)]
    caps[1].defer_host = True
    for cap in caps:
        for step in (1, 2):
            for cm, tok, seq in mbs:
                cap.stage_micro_batch(cm, tok, seq, implicit=("policy_vs_old",), loss=torch.tensor(0.25))
            out = cap.take_step(step) if cap is caps[0] else cap.take_pending(step)()
            ref = flatten([{"completion_mask": cm, **tok, **seq} for cm, tok, seq in mbs], ["policy_vs_old"])
            assert set(out.arrays) == set(ref.arrays) and out.implicit == ref.implicit == ["policy_vs_old"]
            for k, v in ref.arrays.items():
                assert out.arrays[k].dtype == v.dtype and out.arrays[k].tobytes() == v.tobytes(), k
            assert (out.tokens, out.n_seqs, out.micro_batches, out.loss) == (ref.tokens, 18, 3, 0.75)


def test_failing_staging_is_one_warning_and_a_counted_drop(caplog):
    drops = []
    st = StagingThread(8, lambda s, why: drops.append((s, why)))
    ran = []

    def boom():
        raise ValueError("bad tensor")

    with caplog.at_level(logging.WARNING, logger="tailguard"):
        for step, job in [(1, boom), (2, lambda: ran.append(2)), (3, boom)]:
            st.submit(step, job)
        assert st.close(30.0)
    assert ran == [2] and [s for s, _ in drops] == [1, 3] and "staging failed" in drops[0][1]
    assert (st.done, st.failed) == (1, 2) and not st.alive
    assert sum("staging step" in r.getMessage() for r in caplog.records) == 1


def test_bounded_oldest_dropped_and_close_drops_the_rest():
    gate, started, drops, ran = threading.Event(), threading.Event(), [], []
    blocker = lambda: (started.set(), gate.wait(60))  # noqa: E731
    # The client holds 2 steps: of queue_max_steps=8, 1 is being staged and 5 may wait.
    st = StagingThread(8, lambda s, why: drops.append(s), held=lambda: 2)
    st.submit(0, blocker)
    assert started.wait(60)
    for step in range(1, 9):
        st.submit(step, lambda step=step: ran.append(step))
    assert drops == [1, 2, 3]  # oldest waiting first; the running step is never dropped
    gate.set()
    assert st.wait_idle(60) and ran == [4, 5, 6, 7, 8]
    gate.clear(), started.clear()
    st.submit(9, blocker)
    assert started.wait(60)
    st.submit(10, lambda: ran.append(10))
    assert not st.close(0.05)  # step 9 holds the thread past the budget: 10 is dropped, never lost
    assert drops == [1, 2, 3, 10]
    gate.set()
    st._thread.join(60)
    assert not st.alive and ran == [4, 5, 6, 7, 8]
    st.submit(11, lambda: ran.append(11))  # after close: counted, not run
    assert drops[-1] == 11 and ran[-1] == 8
    np.testing.assert_equal(st.failed, 0)


def test_grpo_pair_differences_deferred_are_bit_identical():
    from types import SimpleNamespace

    from tailguard.capture.grpo import GRPOCapture

    g = torch.Generator().manual_seed(9)
    B, T = 5, 33
    mbs = [({"completion_mask": (torch.rand(B, T, generator=g) < 0.8).long(),
             "tool_mask": (torch.rand(B, T, generator=g) < 0.9).long(),
             "old_per_token_logps": -torch.rand(B, T, generator=g), "ref_per_token_logps": -torch.rand(B, T, generator=g),
             "sampling_per_token_logps": -torch.rand(B, T, generator=g), "advantages": torch.randn(B, generator=g)},
            -torch.rand(B, T, generator=g, dtype=torch.float64)) for _ in range(2)]  # f64: .float() is a real cast
    caps = [GRPOCapture(SimpleNamespace(num_generations=5), parse_options()) for _ in range(2)]
    caps[1].defer_host = True
    out = []
    for cap in caps:
        for inputs, cur in mbs:
            cap._stage(inputs, cur, loss=None)
        out.append(cap.take_step(1) if cap is caps[0] else cap.take_pending(1)())
    a, b = out[0].arrays, out[1].arrays
    assert list(a) == list(b) and {"policy_vs_old", "policy_vs_ref", "old_vs_rollout"} <= set(a)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
