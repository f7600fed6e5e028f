"""Sketch steps on the wire: the "runs" hist coding keeps a pair ≤ 64 KB per step (issue 17), per-rank summaries of
64 ranks included, and it and the "varint" coding are exact."""

import numpy as np
import pytest
import torch

from tailguard import sketch as S
from tailguard.wire import (ProtocolError, SKETCH_HIST_BINS, check_sketch_step, decode_hist_runs, decode_hist_varint,
                            decode_message, encode_hist_runs, encode_hist_varint)

PAIR_BUDGET = 64 * 1024
RANKS = 64  # sketch_per_rank's default is on up to here


class _Id:
    run_id, rank, world_size = "size", 0, RANKS


def _with_ranks(sk):
    """The sketch as rank 0 sends it from RANKS ranks with per-rank summaries (the rows' values do not change
    the size)."""
    sk.per_rank = S.summarize(sk).unsqueeze(0).repeat(RANKS, 1, 1, 1)
    sk.rank_tokens = [sk.tokens // RANKS] * RANKS
    return sk


def _heavy(T: int, seed: int):
    """Student-t(3) and Cauchy ℓ (wide in log space, so many bins are occupied), NaN/±inf sprinkled, tool spans."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, T), T // 1024 - 1, replace=False))
    offsets = torch.from_numpy(np.concatenate([[0], cuts, [T]]).astype(np.int32))
    pairs = {"policy_vs_ref": rng.standard_t(3, T) * 0.2, "policy_vs_old": rng.standard_cauchy(T) * 0.05}
    for x in pairs.values():
        bad = rng.random(T)
        x[bad < 1e-3] = np.nan
        x[(bad >= 1e-3) & (bad < 2e-3)] = np.inf
        x[(bad >= 2e-3) & (bad < 3e-3)] = -np.inf
    tm = (rng.random(T) >= 0.05).astype(np.uint8)
    cm = np.ones(T, np.uint8)
    return ({k: torch.from_numpy(v.astype(np.float32)) for k, v in pairs.items()}, torch.from_numpy(cm),
            torch.from_numpy(tm), offsets)


def test_a_pair_is_at_most_64_kb_per_step_on_heavy_tailed_data_with_nonfinite_values():
    T = 1_000_000
    pairs, cm, tm, offsets = _heavy(T, 0)
    sk = _with_ranks(S.compute_sketch(pairs, cm, tm, offsets))
    one = _with_ranks(S.compute_sketch({"policy_vs_ref": pairs["policy_vs_ref"]}, cm, tm, offsets))
    frames = S.encode_sketch_step(_Id, 0, sk)
    total = sum(len(memoryview(f).cast("B")) for f in frames)
    base = sum(len(memoryview(f).cast("B")) for f in S.encode_sketch_step(_Id, 0, one))
    assert base <= PAIR_BUDGET and total - base <= PAIR_BUDGET, (base, total - base)
    assert sk.field("policy_vs_old", "all", "nonfinite") > 0 and sk.field("policy_vs_ref", "all", "nonfinite") > 0
    dense = sk.hist.numpy().size * 8 // len(sk.pairs)
    assert total / len(sk.pairs) < dense / 8  # the dense coding is 526 KB a pair
    # Exact: what the frames carry decodes to the very histogram computed, `all` included.
    header, bufs = decode_message(frames)
    assert header["hist"]["coding"] == "runs" and header["per_rank"]["ranks"] == RANKS
    for p, pair in enumerate(sk.pairs):
        got = {sl: decode_hist_runs(bufs[f"sketch/{pair}/{sl}/hist"]) for sl in S.BUILTIN_SLICES if sl != "all"}
        got["all"] = got["pre_tool"] + got["post_tool"]
        for s, sl in enumerate(sk.slices):
            assert np.array_equal(got[sl], sk.hist[p, s].numpy()), (pair, sl)


def test_runs_round_trip_any_counts_exactly_and_cost_less_where_bins_are_contiguous():
    rng = np.random.default_rng(2)
    full = rng.integers(1, 2**53 - 1, SKETCH_HIST_BINS, dtype=np.int64).astype(np.float64)
    full[[0, -1]] = [2.0**53 - 1, 1]
    patchy = np.where(rng.random(SKETCH_HIST_BINS) < 0.6, rng.integers(0, 300, SKETCH_HIST_BINS), 0).astype(float)
    sparse = np.zeros(SKETCH_HIST_BINS)
    sparse[[3, 4, 700, SKETCH_HIST_BINS - 1]] = [1, 2, 127, 128]
    for h in (full, patchy, sparse, np.zeros(SKETCH_HIST_BINS)):
        assert np.array_equal(decode_hist_runs(encode_hist_runs(h)), h)
    for h in (full, patchy):  # contiguous occupied bins: no gap byte per bin (an isolated bin costs one more)
        assert encode_hist_runs(h).size < encode_hist_varint(h).size
    # runs: (gap 3, length 2: 1, 2), (gap 695, length 1: 127), (gap 15684, length 1: 128)
    assert encode_hist_runs(sparse).tolist() == [3, 2, 1, 2, 0x80 | 55, 5, 1, 127, 0x80 | 68, 122, 1, 0x80, 1]


@pytest.mark.parametrize("buf", [[0x80], [5], [5, 0], [5, 2, 1], [5, 1, 0], [0, 1, 1, 0, 1, 1], [0x82, 0x80, 1, 1, 1]])
def test_malformed_runs_hist_is_a_coded_error(buf):
    with pytest.raises(ProtocolError) as e:
        decode_hist_runs(np.array(buf, np.uint8))
    assert e.value.code == "E_SKETCH_LAYOUT"


def test_varint_round_trips_any_counts_exactly():
    rng = np.random.default_rng(1)
    full = rng.integers(1, 2**53 - 1, SKETCH_HIST_BINS, dtype=np.int64).astype(np.float64)
    full[[0, -1]] = [2.0**53 - 1, 1]
    sparse = np.zeros(SKETCH_HIST_BINS)
    sparse[[3, 700, SKETCH_HIST_BINS - 1]] = [1, 127, 128]
    for h in (full, sparse, np.zeros(SKETCH_HIST_BINS)):
        assert np.array_equal(decode_hist_varint(encode_hist_varint(h)), h)
    assert encode_hist_varint(sparse).tolist() == [3, 1, 0x80 | 56, 5, 127, 0x80 | 68, 122, 0x80, 1]


@pytest.mark.parametrize("buf", [[0x80], [5], [5, 0], [0x85, 0], [0, *[0xFF] * 8, 1], [0x82, 0x80, 1, 1]])
def test_malformed_varint_hist_is_a_coded_error(buf):
    with pytest.raises(ProtocolError) as e:
        decode_hist_varint(np.array(buf, np.uint8))
    assert e.value.code == "E_SKETCH_LAYOUT"


def test_the_dense_coding_still_decodes():
    pairs, cm, tm, offsets = _heavy(4096, 2)
    sk = S.compute_sketch(pairs, cm, tm, offsets)
    header = {**S.step_header_fields(sk), "hist": dict(S.HIST_LAYOUT)}  # no coding: dense
    check_sketch_step(header, sk.buffers(coding="dense"))
    with pytest.raises(ProtocolError):
        check_sketch_step(header, sk.buffers())  # runs buffers under a dense header: u8 hist
    check_sketch_step({**header, "hist": {**S.HIST_LAYOUT, "coding": "varint"}}, sk.buffers(coding="varint"))
