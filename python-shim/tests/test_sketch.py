"""Sketch mode, single process: bins equal the numpy reference bit-for-bit, sums equal a plain
float64 computation, and merging split data equals sketching the whole."""

import math

import numpy as np
import pytest
import torch

from tailguard import sketch as S


def ref_bins(x: np.ndarray) -> np.ndarray:
    """The bin formula of proto/README.md, written independently with numpy."""
    a = np.abs(x.astype(np.float32))
    b = a.view(np.int32).astype(np.int64)
    lo = np.float32(2.0**-24).view(np.int32)
    hi = np.float32(256.0).view(np.int32)
    return np.where(b < lo, 0, np.where(b >= hi, S.HIST_BINS - 1, 1 + ((b - lo) >> (23 - S.HIST_MANT_BITS))))


def make_step(rng, n_seqs=40, max_len=60, heavy=1.0):
    lens = rng.integers(1, max_len, n_seqs)
    T = int(lens.sum())
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    cm = (rng.random(T) > 0.1).astype(np.uint8)
    tm = np.ones(T, np.uint8)
    for i in range(n_seqs):  # a tool span in about half the sequences
        if rng.random() < 0.5 and lens[i] > 4:
            s = offsets[i] + rng.integers(1, lens[i] - 2)
            tm[s:s + 2] = 0
    x = (rng.standard_t(3, T) * 0.3 * heavy).astype(np.float32)
    return x, cm, tm, offsets


def ref_slices(cm, tm, offsets):
    T = cm.size
    code = np.full(T, 3)
    for i in range(offsets.size - 1):
        seen = False
        for t in range(offsets[i], offsets[i + 1]):
            if cm[t] and not tm[t]:
                code[t] = 2
                seen = True
            elif cm[t]:
                code[t] = 1 if seen else 0
    return code


def test_bins_match_numpy_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    edges = np.float32([0, 2.0**-24, np.nextafter(np.float32(2.0**-24), np.float32(0)), 255.99998, 256, 1e30,
                        3.4e38, 1e-45, 1.0, 0.5, -0.75])
    x = np.concatenate([edges, (rng.standard_t(2, 200_000) * 10.0 ** rng.uniform(-8, 3, 200_000)).astype(np.float32)])
    got = S.hist_bins(torch.from_numpy(np.abs(x))).numpy()
    np.testing.assert_array_equal(got, ref_bins(x))
    assert got.min() == 0 and got.max() == S.HIST_BINS - 1
    lo, hi = S.bin_edges(1000)
    assert lo < hi and ref_bins(np.float32([lo]))[0] == 1000


@pytest.mark.parametrize("heavy", [1.0, 200.0])
def test_sums_and_hist_match_plain_float64(heavy):
    rng = np.random.default_rng(1)
    x, cm, tm, off = make_step(rng, heavy=heavy)
    x[[3, 17]] = [np.nan, np.inf]
    sk = S.compute_sketch({"policy_vs_ref": torch.from_numpy(x)}, torch.from_numpy(cm), torch.from_numpy(tm),
                          torch.from_numpy(off), knobs={"epsilon_low": 0.2, "epsilon_high": 0.28})
    code = ref_slices(cm, tm, off)
    seq = np.repeat(np.arange(off.size - 1), np.diff(off))
    for name in S.BUILTIN_SLICES:
        m = (code < 2) if name == "all" else code == ["pre_tool", "post_tool", "tool_output"].index(name)
        fin = m & np.isfinite(x)
        v = x[fin].astype(np.float64)
        f = lambda k: sk.field("policy_vs_ref", name, k)  # noqa: E731
        assert f("n") == v.size and f("nonfinite") == (m & ~np.isfinite(x)).sum()
        np.testing.assert_array_equal(sk.hist[0, S.BUILTIN_SLICES.index(name)].numpy(),
                                      np.bincount(ref_bins(x[fin]), minlength=S.HIST_BINS))
        assert f("sum") == pytest.approx(v.sum(), rel=1e-12, abs=1e-12)
        assert f("sum_sq") == pytest.approx((v * v).sum(), rel=1e-12)
        assert f("abs_max") == np.abs(v).max()
        assert f("exceed_2") == (np.abs(v) > math.log(2)).sum()
        with np.errstate(over="ignore"):  # heavy=200: exp(ℓ) = inf is the right reference value (> 1.28)
            w = np.exp(v)
        assert f("clip") == ((w < 0.8) | (w > 1.28)).sum()
        met = S.metrics_from_sums(sk.sums[0, S.BUILTIN_SLICES.index(name)])
        vmax = v.max()
        ess = np.exp(2 * np.log(np.exp(v - vmax).sum()) - np.log(np.exp(2 * (v - vmax)).sum())) / v.size
        assert met["ess"] == pytest.approx(ess, rel=1e-9)
        with np.errstate(over="ignore"):  # likewise: the reference KL is inf when exp(ℓ) overflows float64
            kl_ref = np.mean(np.expm1(v) - v)
        assert met["kl_k3"] == pytest.approx(kl_ref, rel=1e-9)
        L = np.bincount(seq[fin], weights=v, minlength=off.size - 1)
        ln = np.bincount(seq[fin], minlength=off.size - 1)
        L, Ln = L[ln > 0], L[ln > 0] / ln[ln > 0]
        for key, arr in (("ess_seq", L), ("ess_seq_norm", Ln)):
            mm = arr.max()
            e = np.exp(2 * np.log(np.exp(arr - mm).sum()) - np.log(np.exp(2 * (arr - mm)).sum())) / arr.size
            assert met[key] == pytest.approx(e, rel=1e-9)


def test_huge_ratios_do_not_overflow_ess():
    x = torch.tensor([80.0, -80.0, 0.0, 79.0])
    one = torch.ones(4, dtype=torch.uint8)
    sk = S.compute_sketch({"policy_vs_ref": x}, one, one, torch.tensor([0, 4]))
    met = S.metrics_from_sums(sk.sums[0, 0])
    w = np.exp(np.float64([0.0, -160.0, -80.0, -1.0]))
    assert met["ess"] == pytest.approx(w.sum() ** 2 / (4 * (w * w).sum()), rel=1e-12)


def test_merging_halves_equals_whole():
    rng = np.random.default_rng(2)
    x, cm, tm, off = make_step(rng)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    whole = S.compute_sketch({"policy_vs_ref": t(x)}, t(cm), t(tm), t(off))
    cut = int(off[20])
    a = S.compute_sketch({"policy_vs_ref": t(x[:cut])}, t(cm[:cut]), t(tm[:cut]), t(off[:21]))
    b = S.compute_sketch({"policy_vs_ref": t(x[cut:])}, t(cm[cut:]), t(tm[cut:]), t(off[20:] - cut))
    torch.testing.assert_close(a.hist + b.hist, whole.hist, rtol=0, atol=0)
    for s in range(4):
        merged = S._merge_rows(torch.stack([a.sums[0, s], b.sums[0, s]]))
        torch.testing.assert_close(merged, whole.sums[0, s], rtol=1e-12, atol=1e-12)


def test_empty_slice_and_all_nan():
    x = torch.tensor([float("nan")] * 3)
    one = torch.ones(3, dtype=torch.uint8)
    sk = S.compute_sketch({"policy_vs_ref": x}, one, one, torch.tensor([0, 3]))
    assert sk.field("policy_vs_ref", "all", "nonfinite") == 3
    assert sk.field("policy_vs_ref", "all", "n") == 0
    assert sk.field("policy_vs_ref", "post_tool", "lse_max") == -math.inf
    assert S.metrics_from_sums(sk.sums[0, 2]) == {"n": 0.0, "nonfinite": 0.0}


def test_chunked_passes_equal_one_pass():
    rng = np.random.default_rng(3)
    x, cm, tm, off = make_step(rng, n_seqs=200)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    one = S.compute_sketch({"policy_vs_ref": t(x)}, t(cm), t(tm), t(off), chunk_tokens=1 << 30)
    many = S.compute_sketch({"policy_vs_ref": t(x)}, t(cm), t(tm), t(off), chunk_tokens=100)
    torch.testing.assert_close(many.hist, one.hist, rtol=0, atol=0)
    torch.testing.assert_close(many.sums, one.sums, rtol=1e-12, atol=1e-12)
    assert (many.tokens, many.n_seqs, many.slice_counts) == (one.tokens, one.n_seqs, one.slice_counts)
    empty = S.compute_sketch({"policy_vs_ref": t(x[:0])}, t(cm[:0]), t(tm[:0]), torch.zeros(1, dtype=torch.int32))
    assert empty.tokens == 0 and float(empty.hist.sum()) == 0


def test_k3_has_no_cancellation_for_tiny_ratios():
    from fractions import Fraction

    x = torch.tensor([1e-7, -3e-6, 2e-4, 0.3, -0.45, 0.7, -2.0], dtype=torch.float32)
    got = S._k3_terms(x.double(), x.double().abs() < S._K3_SERIES_MAX)
    for xi, gi in zip(x.double().tolist(), got.tolist()):
        f = Fraction(xi)
        exact = sum(f**k / math.factorial(k) for k in range(2, 40))  # e^x − 1 − x as a series
        assert gi == pytest.approx(float(exact), rel=1e-11)
