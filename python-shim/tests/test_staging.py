"""Raw mode's fused staging (capture/staging.py): the wire arrays equal a naive per-sequence flatten of the
padded micro-batches, and a reused buffer is never overwritten while a step still refers to it."""

import gc
import weakref

import numpy as np
import torch

from tailguard.capture.base import Capture
from tailguard.capture.staging import BufferPool, StepStager
from tailguard.options import parse_options


def micro_batch(g, B, T, holes=False):
    lens = torch.randint(0, T + 1, (B,), generator=g)
    cm = (torch.arange(T)[None, :] < lens[:, None]).to(torch.int64)
    if holes:  # DPO-style masks are not prefixes: prompt positions are 0 on the left
        cm[:, : T // 4] = 0
    tm = (torch.rand(B, T, generator=g) > 0.2).to(torch.int64)
    x = torch.randn(B, T, generator=g)
    x[0, :2] = torch.tensor([float("nan"), -float("inf")])
    return {"completion_mask": cm, "tool_mask": tm, "policy_vs_ref": x,
            "slice_ids": torch.randint(0, 3, (B, T), generator=g, dtype=torch.int32),
            "token_ids": torch.randint(0, 50000, (B, T), generator=g),
            "advantages": torch.randn(B, generator=g), "seq_ids": torch.arange(B)}


def naive(recs):
    """Row by row, the obvious way: completion tokens of each row in order."""
    out = {k: [] for k in ("policy_vs_ref", "tool_mask", "slice_ids", "token_ids")}
    lens, adv = [], []
    for r in recs:
        cm = r["completion_mask"].numpy().astype(bool)
        for i in range(cm.shape[0]):
            for k in out:
                out[k].append(r[k].numpy()[i][cm[i]])
            lens.append(int(cm[i].sum()))
        adv.append(r["advantages"].numpy())
    got = {k: np.concatenate(v) for k, v in out.items()}
    got["offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    got["advantages"] = np.concatenate(adv)
    return got


def test_stager_equals_naive_flatten_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    st = StepStager(BufferPool())
    for step in range(4):  # buffers grow on the first steps, then are reused
        recs = [micro_batch(g, 5 + step, 37 + 13 * i, holes=i == 1) for i in range(3)]
        for r in recs:
            st.add(r)
        arrays, implicit, n_seqs = st.take([])
        want = naive(recs)
        assert n_seqs == sum(r["completion_mask"].shape[0] for r in recs) and implicit == []
        np.testing.assert_array_equal(arrays["offsets"], want["offsets"])
        # bit-exact floats (NaN and -inf included): compare the bytes
        assert arrays["policy_vs_ref"].dtype == np.float32
        assert arrays["policy_vs_ref"].tobytes() == want["policy_vs_ref"].tobytes()
        assert arrays["tool_mask"].dtype == np.uint8 and arrays["slice_ids"].dtype == np.uint16
        assert arrays["token_ids"].dtype == np.int32
        for k in ("tool_mask", "slice_ids", "token_ids", "advantages"):
            np.testing.assert_array_equal(arrays[k], want[k])
        assert arrays["completion_mask"].all() and len(arrays["completion_mask"]) == want["offsets"][-1]


def test_missing_pairs_implicit_fill_and_absent_tool_mask():
    g = torch.Generator().manual_seed(1)
    a, b = micro_batch(g, 4, 20), micro_batch(g, 3, 20)
    for r in (a, b):
        del r["tool_mask"], r["slice_ids"], r["token_ids"]
    a["policy_vs_old"] = torch.zeros(4, 20)  # implicit pair staged in one micro-batch only
    a["old_vs_rollout"] = torch.ones(4, 20)  # a non-implicit pair missing from b: not sent
    st = StepStager()
    st.add(a)
    st.add(b)
    arrays, implicit, _ = st.take(["policy_vs_old"])
    assert implicit == ["policy_vs_old"] and "policy_vs_old" not in arrays and "old_vs_rollout" not in arrays
    assert arrays["tool_mask"].all() and len(arrays["tool_mask"]) == arrays["offsets"][-1]


def test_reused_buffer_is_never_overwritten_while_referenced():
    g = torch.Generator().manual_seed(2)
    st = StepStager(BufferPool())
    rec = micro_batch(g, 8, 64)
    st.add(rec)
    held, _, _ = st.take([])  # like a step queued in the client: its views stay alive
    kept = held["policy_vs_ref"].copy()
    bases = [weakref.ref(held["policy_vs_ref"].base)]  # weak: a test reference would itself keep it busy
    for _ in range(3):
        st.add(micro_batch(g, 8, 64))
        later, _, _ = st.take([])
        assert not np.shares_memory(later["policy_vs_ref"], held["policy_vs_ref"])
        bases.append(weakref.ref(later["policy_vs_ref"].base))
    assert held["policy_vs_ref"].tobytes() == kept.tobytes()
    del held, later
    gc.collect()
    st.add(micro_batch(g, 8, 64))
    again, _, _ = st.take([])
    assert any(again["policy_vs_ref"].base is b() for b in bases)  # released: reused, no fresh allocation


def test_capture_raw_and_retained_copy_match_and_discard_resets():
    g = torch.Generator().manual_seed(3)
    cap = Capture(object(), parse_options(retain_captured=True))
    recs = [micro_batch(g, 6, 30) for _ in range(2)]
    for r in recs:
        cap.stage_micro_batch(r["completion_mask"], {"policy_vs_ref": r["policy_vs_ref"], "tool_mask": r["tool_mask"]},
                              {"advantages": r["advantages"], "seq_ids": r["seq_ids"]})
    p = cap.take_step(1)
    want = naive(recs)
    assert p.tokens == want["offsets"][-1] and p.n_seqs == 12 and p.micro_batches == 2
    assert p.arrays["policy_vs_ref"].tobytes() == want["policy_vs_ref"].tobytes()
    assert cap.captured[0][1]["policy_vs_ref"].tobytes() == want["policy_vs_ref"].tobytes()
    cap.stage_micro_batch(recs[0]["completion_mask"], {"policy_vs_ref": recs[0]["policy_vs_ref"]}, {})
    assert cap.has_pending()
    cap.discard()
    assert not cap.has_pending() and cap.take_step(2) is None
