// The hot loop: one fused pass over a slice's finite values (already compacted, contiguous)
// fills the bit-histogram and every exact sum. No calls except inlined Math.* builtins; the
// transcendental work is an inline exp: w = 2^k·e^r with |r| ≤ ln2/2 and e^r − 1 − r by polynomial,
// which also gives w − 1 − ℓ without cancellation (k = 0 ⇒ exactly the polynomial).
import { HIST_BINS, HIST_BITS_MIN, HIST_LAST, HIST_SHIFT, HIST_EDGES, binOf } from './hist.ts';
import {
  EXCEED_LOG, S_ABS_MAX, S_CLIP, S_EXCEED_1_5, S_EXCEED_2, S_EXCEED_3, S_LSE_MAX, S_N, S_SEQN_MAX, S_SEQ_MAX,
  S_SEQ_N, S_SUM, S_SUM_ABS, S_SUM_K3, S_SUM_SQ, lseAdd,
} from './sums.ts';
const T15 = EXCEED_LOG[0], T2 = EXCEED_LOG[1], T3 = EXCEED_LOG[2];

/** Bin holding threshold t (t in float64, not rounded to float32 upwards). */
function binAt(t: number): number {
  const b = binOf(t);
  return b > 0 && HIST_EDGES[b] > t ? b - 1 : b;
}

const LOG2E = Math.LOG2E;
const LN2_HI = 0.6931471803691238; // high bits of ln 2: k·LN2_HI is exact for |k| < 2^11
const LN2_LO = 1.9082149292705877e-10;
const ROUND = 6755399441055744; // 1.5·2^52: (x + ROUND) − ROUND rounds x to an integer (Math.round is slow)
// 1/n! for e^r − 1 − r = r²·(1/2! + … + r^8/10!): relative error < 4e-12 on |r| ≤ ln2/2.
const C2 = 1 / 2, C3 = 1 / 6, C4 = 1 / 24, C5 = 1 / 120, C6 = 1 / 720, C7 = 1 / 5040, C8 = 1 / 40320;
const C9 = 1 / 362880, C10 = 1 / 3628800;
const POW2_OFF = 1100;
const POW2 = (() => {
  const t = new Float64Array(2 * POW2_OFF);
  for (let i = 0; i < t.length; i++) t[i] = Math.pow(2, i - POW2_OFF);
  return t;
})();
/** |ℓ| beyond which the fast unshifted exp sums are not trusted; the slow log-space path runs instead. */
const FAST_LIMIT = 300;

// Scratch: this call's histogram, the histogram of negative ℓ, and flags for the few bins that
// straddle a threshold (exceedance, clip band). Counts above a threshold come from the histograms;
// only values in a straddling bin are compared exactly, so the hot loop has no unpredictable branch.
const H = new Float64Array(HIST_BINS);
const NEG = new Float64Array(HIST_BINS);
const FLAG = new Uint8Array(HIST_BINS);

/**
 * Accumulate finite values v[start..end) into (hist, sums). `bits` aliases v's buffer (Int32Array
 * over the same bytes). Token-level fields only; per-sequence parts go through addSeqParts.
 */
export function accumulate(
  hist: Float64Array, sums: Float64Array, v: Float32Array, bits: Int32Array,
  start: number, end: number, clipLo: number, clipHi: number,
): void {
  if (end <= start) return;
  const b15 = binAt(T15), b2 = binAt(T2), b3 = binAt(T3);
  const bLo = clipLo === -Infinity ? -1 : binAt(-clipLo), bHi = binAt(clipHi);
  H.fill(0);
  NEG.fill(0);
  FLAG[b15] = FLAG[b2] = FLAG[b3] = FLAG[bHi] = 1;
  if (bLo >= 0) FLAG[bLo] = 1;
  // Module bindings are context loads with hole checks in V8; hot-loop constants are locals.
  const H_ = H, NEG_ = NEG, FLAG_ = FLAG, P2 = POW2, P2OFF = POW2_OFF, BMIN = HIST_BITS_MIN, LAST = HIST_LAST;
  const c2 = C2, c3 = C3, c4 = C4, c5 = C5, c6 = C6, c7 = C7, c8 = C8, c9 = C9, c10 = C10;
  const t15 = T15, t2 = T2, t3 = T3, log2e = LOG2E, rnd = ROUND, ln2hi = LN2_HI, ln2lo = LN2_LO;
  let e15 = 0, e2 = 0, e3 = 0, cLo = 0, cHi = 0; // straddling-bin counts
  let sum = 0, sumAbs = 0, sumSq = 0, s1 = 0, s2 = 0, k3 = 0;
  let amax = 0, mx = -Infinity, mn = Infinity;
  for (let i = start; i < end; i++) {
    const u = bits[i];
    const d = ((u & 0x7fffffff) - BMIN) >> 17;
    const bin = d < 0 ? 0 : d >= LAST ? LAST : d + 1;
    H_[bin]++;
    NEG_[bin] += u >>> 31;
    const x = v[i];
    const a = Math.abs(x);
    if (FLAG_[bin] !== 0) {
      if (bin === b15 && a > t15) e15++;
      if (bin === b2 && a > t2) e2++;
      if (bin === b3 && a > t3) e3++;
      if (bin === bHi && x > clipHi) cHi++;
      if (bin === bLo && x < clipLo) cLo++;
    }
    sum += x;
    sumAbs += a;
    sumSq += x * x;
    amax = Math.max(amax, a);
    mx = Math.max(mx, x);
    mn = Math.min(mn, x);
    // inline exp; the clamp keeps the table index valid (|ℓ| > FAST_LIMIT takes the slow path below)
    const xc = Math.max(-700, Math.min(700, x));
    const k = (xc * log2e + rnd) - rnd;
    const r = xc - k * ln2hi - k * ln2lo;
    const r2 = r * r;
    const q = r2 * (c2 + r * c3 + r2 * (c4 + r * c5) + r2 * r2 * (c6 + r * c7 + r2 * (c8 + r * c9) + r2 * r2 * c10));
    const er = 1 + r + q;
    const p2 = P2[(k | 0) + P2OFF];
    const w = p2 * er;
    s1 += w;
    s2 += w * w;
    k3 += (p2 - 1) * er + q + (r - xc); // = w − 1 − ℓ; exactly q when k = 0
  }
  FLAG[b15] = FLAG[b2] = FLAG[b3] = FLAG[bHi] = 0;
  if (bLo >= 0) FLAG[bLo] = 0;
  for (let b = HIST_LAST; b >= 0; b--) {
    const h = H[b];
    if (h === 0) continue;
    hist[b] += h;
    if (b > b15) e15 += h;
    if (b > b2) e2 += h;
    if (b > b3) e3 += h;
    if (b > bHi) cHi += h - NEG[b];
    if (bLo >= 0 && b > bLo) cLo += NEG[b];
  }
  const n = end - start;
  sums[S_N] += n;
  sums[S_SUM] += sum;
  sums[S_SUM_ABS] += sumAbs;
  sums[S_SUM_SQ] += sumSq;
  sums[S_EXCEED_1_5] += e15;
  sums[S_EXCEED_2] += e2;
  sums[S_EXCEED_3] += e3;
  sums[S_CLIP] += cLo + cHi;
  if (amax > sums[S_ABS_MAX]) sums[S_ABS_MAX] = amax;
  if (mx <= FAST_LIMIT && mn >= -FAST_LIMIT) {
    sums[S_SUM_K3] += k3;
    lseAdd(sums, S_LSE_MAX, mx, s1 * Math.exp(-mx), s2 * Math.exp(-2 * mx));
  } else {
    slowExpSums(sums, v, start, end, mx);
  }
}

/** Log-space fallback for huge |ℓ|: shifts by the max so nothing overflows. */
function slowExpSums(sums: Float64Array, v: Float32Array, start: number, end: number, mx: number): void {
  let s1 = 0, s2 = 0, k3 = 0;
  for (let i = start; i < end; i++) {
    const x = v[i];
    const e = Math.exp(x - mx);
    s1 += e;
    s2 += e * e;
    k3 += x < 709 ? Math.expm1(x) - x : Infinity;
  }
  sums[S_SUM_K3] += k3;
  lseAdd(sums, S_LSE_MAX, mx, s1, s2);
}

/**
 * Per-sequence parts: L[i] = Σℓ over sequence i's finite slice tokens, lens[i] = their count.
 * Sequences with lens[i] = 0 are skipped. Adds seq_n and the LSE parts of L and L/|y|.
 */
export function addSeqParts(sums: Float64Array, L: Float64Array, lens: Float64Array, start: number, end: number): void {
  let m1 = -Infinity, m2 = -Infinity, cnt = 0;
  for (let i = start; i < end; i++) {
    const c = lens[i];
    if (c === 0) continue;
    cnt++;
    const l = L[i];
    if (l > m1) m1 = l;
    const ln = l / c;
    if (ln > m2) m2 = ln;
  }
  if (cnt === 0) return;
  let a1 = 0, a2 = 0, b1 = 0, b2 = 0;
  for (let i = start; i < end; i++) {
    const c = lens[i];
    if (c === 0) continue;
    const ea = Math.exp(L[i] - m1);
    a1 += ea;
    a2 += ea * ea;
    const eb = Math.exp(L[i] / c - m2);
    b1 += eb;
    b2 += eb * eb;
  }
  sums[S_SEQ_N] += cnt;
  lseAdd(sums, S_SEQ_MAX, m1, a1, a2);
  lseAdd(sums, S_SEQN_MAX, m2, b1, b2);
}
