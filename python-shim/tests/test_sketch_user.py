"""User slices in sketch mode: each slice id is sketched over its model tokens as raw mode slices them,
chunked passes merge exactly, empty slices are not sent, and the bound is a coded error."""

import numpy as np
import pytest
import torch
from test_sketch import make_step, ref_bins, ref_slices

from tailguard import sketch as S
from tailguard.wire import SKETCH_MAX_USER_SLICES, ProtocolError, decode_message, encode_message

NAMES = ["turn_0", "turn_1", "never", "a/b"]


def user_step(seed=0):
    rng = np.random.default_rng(seed)
    x, cm, tm, off = make_step(rng, n_seqs=120)
    x[[5, 17]] = [np.nan, -np.inf]
    ids = rng.choice([0, 1, 3, 7], x.size, p=[0.5, 0.3, 0.15, 0.05]).astype(np.int32)  # 2 unused, 7 beyond
    return x, cm, tm, off, ids


def sketch(x, cm, tm, off, ids, **kw):
    t = torch.from_numpy
    return S.compute_sketch({"policy_vs_ref": t(x)}, t(cm), t(tm), t(off), slice_ids=t(ids), slice_names=NAMES, **kw)


def test_user_slices_equal_plain_numpy_over_their_model_tokens():
    x, cm, tm, off, ids = user_step()
    sk = sketch(x, cm, tm, off, ids)
    assert sk.slices == ["all", "pre_tool", "post_tool", "tool_output"] + [f"user:{n}" for n in NAMES]
    assert sk.slice_names == NAMES
    code = ref_slices(cm, tm, off)
    seq = np.repeat(np.arange(off.size - 1), np.diff(off))
    for k, name in enumerate(NAMES):
        sel = (code < 2) & (ids == k)
        v = x[sel].astype(np.float64)
        fin = np.isfinite(v)
        f = lambda field: sk.field("policy_vs_ref", f"user:{name}", field)  # noqa: E731
        assert (f("n"), f("nonfinite")) == (fin.sum(), (~fin).sum())
        assert f("sum") == pytest.approx(v[fin].sum(), rel=1e-12, abs=1e-12)
        assert f("sum_abs") == pytest.approx(np.abs(v[fin]).sum(), rel=1e-12, abs=1e-12)
        assert f("seq_n") == len(set(seq[sel][fin]))
        h = np.bincount(ref_bins(x[sel][fin]), minlength=S.HIST_BINS)
        assert np.array_equal(sk.hist[0, 4 + k].numpy(), h)
    assert sk.field("policy_vs_ref", "user:never", "n") == 0


def test_chunked_user_slices_equal_one_pass_and_empty_ones_are_not_sent():
    x, cm, tm, off, ids = user_step(1)
    one = sketch(x, cm, tm, off, ids, chunk_tokens=1 << 30)
    many = sketch(x, cm, tm, off, ids, chunk_tokens=100)
    torch.testing.assert_close(many.hist, one.hist, rtol=0, atol=0)
    torch.testing.assert_close(many.sums, one.sums, rtol=1e-12, atol=1e-12)
    bufs = S.merge_sketches([one], per_rank=True).buffers()
    assert "sketch/policy_vs_ref/user/0/sums" in bufs and "sketch/policy_vs_ref/user/3/hist" in bufs
    assert not any("/user/2/" in b for b in bufs)  # no token has id 2: raw mode reports no such slice either
    assert bufs["sketch/per_rank"].size == 7 * 4  # one row per sums buffer sent: 4 built-in + 3 user

    class Id:
        run_id, rank, world_size = "u", 0, 1

    header, decoded = decode_message(encode_message(S.sketch_step_header(Id, 1, S.merge_sketches([one], per_rank=True)), bufs))
    assert header["slice_names"] == NAMES and decoded.keys() == bufs.keys()


@pytest.mark.parametrize("names", [[f"s{i}" for i in range(SKETCH_MAX_USER_SLICES + 1)], ["a", "a"]])
def test_too_many_or_duplicate_user_slices_are_a_coded_error(names):
    x, cm, tm, off, ids = user_step()
    t = torch.from_numpy
    with pytest.raises(ProtocolError) as e:
        S.compute_sketch({"policy_vs_ref": t(x)}, t(cm), t(tm), t(off), slice_ids=t(ids), slice_names=names)
    assert e.value.code == "E_SKETCH_LAYOUT" and f"at most {SKETCH_MAX_USER_SLICES}" in str(e.value)


def test_capture_in_sketch_mode_sends_its_user_slices():
    """A capture with user slices (DPO's chosen/rejected): the padded device layout carries slice_ids, and the
    sketch step equals the one sketched from raw mode's compact host layout of the same step."""
    from types import SimpleNamespace

    from tailguard.capture.base import Capture
    from tailguard.options import parse_options
    from tailguard.transport.headers import step_messages
    from tailguard.wire import DEFAULT_LIMITS

    class Sink:
        run_id, rank, world_size = "u", 0, 1
        messages: list = []

        def send_step(self, step, arrays, **kw):
            self.messages.extend(step_messages(self, step, arrays, DEFAULT_LIMITS, **kw))
            return True

    cap = Capture(object(), parse_options(mode="sketch", retain_captured=True))
    cap.slice_names = ["chosen", "rejected"]
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        cm = (torch.arange(64)[None, :] < torch.randint(1, 65, (8, 1), generator=g)).to(torch.int64)
        ids = torch.zeros(8, 64, dtype=torch.int32)
        ids[4:] = 1  # DPO: the batch is [chosen; rejected]
        cap.stage_micro_batch(cm, {"policy_vs_ref": torch.randn(8, 64, generator=g), "slice_ids": ids}, {})
    sink = Sink()
    S.send_capture_step(SimpleNamespace(capture=cap, options=cap.options, client=sink), SimpleNamespace(global_step=1),
                        SimpleNamespace(should_training_stop=False))
    header, bufs = decode_message(sink.messages[0])
    assert header["slice_names"] == ["chosen", "rejected"]
    host = cap.captured[0][1]  # raw mode's view of the step
    ref = S.sketch_payload(host, ["policy_vs_ref"], slice_names=["chosen", "rejected"])
    for k, name in enumerate(["chosen", "rejected"]):
        np.testing.assert_allclose(bufs[f"sketch/policy_vs_ref/user/{k}/sums"], ref.sums[0, 4 + k].numpy(), rtol=1e-12)
        assert ref.field("policy_vs_ref", f"user:{name}", "n") > 100
