// The hot loop: ONE pass over a chunk's tokens per pair and slice code, straight from the wire array.
// Per token: skip non-finite (counted), bump the bit-histogram, add every exact sum, and copy |ℓ| out
// only when its bin is in the step's quantile band (the raw chunk is kept by a bulk copy instead). No calls on the common path: w = e^ℓ comes from a table at
// a = m/256 (|ℓ| < 4) and a short polynomial in δ = ℓ − a (|δ| ≤ 1/512), which also gives e^ℓ − 1 − ℓ
// without cancellation: D(a) + expm1(a)·δ + e^a·(e^δ − 1 − δ), all terms of one sign or nearly so.
import { HIST_BINS, HIST_BITS_MIN, HIST_LAST, HIST_SHIFT, HIST_EDGES, binOf } from './hist.ts';
import {
  EXCEED_LOG, S_ABS_MAX, S_CLIP, S_EXCEED_1_5, S_EXCEED_2, S_EXCEED_3, S_LSE_MAX, S_N, S_NONFINITE, S_SEQN_MAX,
  S_SEQ_MAX, S_SEQ_N, S_SUM, S_SUM_ABS, S_SUM_K3, S_SUM_SQ, lseAdd,
} from './sums.ts';
export const T15 = EXCEED_LOG[0], T2 = EXCEED_LOG[1], T3 = EXCEED_LOG[2];

/** Bin holding threshold t (t in float64, not rounded to float32 upwards). */
export function binAt(t: number): number {
  const b = binOf(t);
  return b > 0 && HIST_EDGES[b] > t ? b - 1 : b;
}

const ROUND = 6755399441055744; // 1.5·2^52: (x + ROUND) − ROUND rounds x to an integer (Math.round is slow)
const GRID = 256; // table anchors a = m/GRID
const TAB_HALF = 4 * GRID; // |m| < TAB_HALF ⇔ |ℓ| < 4
const TAB_LIMIT = 3.99; // |ℓ| below this takes the table path (m stays inside the table)
// 1/n! for e^δ − 1 − δ = δ²(1/2 + δ/6 + δ²/24 + δ³/120): relative error < 1e-13 on |δ| ≤ 1/512.
const C2 = 1 / 2, C3 = 1 / 6, C4 = 1 / 24, C5 = 1 / 120;
/** Per anchor a = (j − TAB_HALF)/GRID, stride 4: e^a, expm1(a), D(a) = e^a − 1 − a (accurate), pad. */
export const ETAB: Float64Array = (() => {
  const t = new Float64Array(8 * TAB_HALF);
  for (let j = 0; j < 2 * TAB_HALF; j++) {
    const a = (j - TAB_HALF) / GRID;
    let d = 0;
    if (Math.abs(a) < 0.5) {
      // series a²/2! + a³/3! + …: Math.expm1(a) − a would cancel
      let term = (a * a) / 2;
      for (let k = 3; Math.abs(term) > 1e-40; k++) (d += term), (term = (term * a) / k);
    } else d = Math.expm1(a) - a;
    t[4 * j] = Math.exp(a);
    t[4 * j + 1] = Math.expm1(a);
    t[4 * j + 2] = d;
  }
  return t;
})();
/** |ℓ| beyond which the unshifted exp sums may overflow; the log-space pass runs instead. */
export const FAST_LIMIT = 300;

/** Straddle flags: bins holding an exceedance or clip threshold; only those values are compared. */
const FLAG = new Uint8Array(HIST_BINS);
const EMPTY_F32 = new Float32Array(0);
const EMPTY_U8 = new Uint8Array(0);

/** Runs: quadruples (start, end, code, seq) of tokens with one slice code inside one sequence. */
export interface Runs {
  runs: Int32Array;
  n: number;
}

/**
 * Quantile band of a step (from the previous step's exact quantiles): bins[i] gets slice bits
 * bits[i] (BAND_* by code, BAND_ALL). The kernel copies |ℓ| of values in band bins into `cand`, so the
 * exact per-step quantiles usually need no second pass over the values (runstats.pairQuantiles).
 */
export interface Band {
  bins: Int32Array;
  bits: Uint8Array;
  n: number;
}
export const BAND_ALL = 8;
/** Candidates out: |ℓ| and tag (1 = own slice's band, 2 = all's band, 3 = both). */
export interface Cand {
  vals: Float32Array;
  tags: Uint8Array;
  n: number;
}

/**
 * Process the runs with `code`: finite values are counted in sh (HIST_BINS counts of |ℓ|) and summed
 * into `sums` (token fields; exceedance/clip only for straddling bins and the negative values above the
 * clip bins — foldHist adds the bins above). With a band, |ℓ| of values in band bins go to `cand`.
 * Per sequence, Σℓ and the finite count go to seqL/seqC[seqBase + seq]. Returns the finite count.
 * The ESS parts are unshifted (shift 0) while |ℓ| ≤ 300: any shift is valid (merges rescale), so no
 * max ℓ is tracked on the hot path.
 */
export function kernelRuns(
  x: Float32Array, bits: Int32Array, R: Runs, code: number, sh: Uint32Array, sums: Float64Array,
  clipLo: number, clipHi: number,
  seqL: Float64Array, seqC: Float64Array, seqBase: number, band: Band | null = null, cand: Cand | null = null,
): number {
  const b15 = binAt(T15), b2 = binAt(T2), b3 = binAt(T3);
  const bLo = clipLo === -Infinity ? HIST_BINS : binAt(-clipLo), bHi = binAt(clipHi);
  FLAG[b15] = FLAG[b2] = FLAG[b3] = FLAG[bHi] = 1;
  if (bLo < HIST_BINS) FLAG[bLo] = 1;
  // FLAG bit 2: bin in this slice's band, bit 4: in all's band (pre/post values feed `all` too)
  if (band && cand) {
    const own = 1 << code, all = code < 2 ? BAND_ALL : 0;
    for (let i = 0; i < band.n; i++) {
      const bb = band.bits[i];
      FLAG[band.bins[i]] |= (bb & own ? 2 : 0) | (bb & all ? 4 : 0);
    }
  }
  const CV = cand ? cand.vals : EMPTY_F32, CT = cand ? cand.tags : EMPTY_U8;
  let cn = cand ? cand.n : 0;
  // Module bindings are context loads with hole checks in V8; hot-loop constants are locals.
  const SH = sh, FLAG_ = FLAG, ET = ETAB, BMIN = HIST_BITS_MIN, LAST = HIST_LAST, SHIFT = HIST_SHIFT;
  const c2 = C2, c3 = C3, c4 = C4, c5 = C5, rnd = ROUND, grid = GRID, inv = 1 / GRID, half = TAB_HALF, lim = TAB_LIMIT;
  const t15 = T15, t2 = T2, t3 = T3, runs = R.runs, nr = R.n;
  let e15 = 0, e2 = 0, e3 = 0, cLo = 0, cHi = 0; // straddling-bin counts
  let negLo = 0, negHi = 0; // ℓ < 0 in bins above bLo / bHi (int ops: no signed histogram needed)
  let sum = 0, sumAbs = 0, sumSq = 0, s1 = 0, s2 = 0, k3 = 0, nonfin = 0, amax = 0;
  let n = 0;
  for (let ri = 0; ri < nr; ri++) {
    const o4 = ri << 2;
    if (runs[o4 + 2] !== code) continue;
    const start = runs[o4], end = runs[o4 + 1], n0 = n;
    let rsum = 0;
    for (let i = start; i < end; i++) {
      const xv = x[i];
      if (xv - xv !== 0) {
        nonfin++; // NaN or ±Inf: counted, excluded from everything else
        continue;
      }
      n++;
      const u = bits[i];
      const d = ((u & 0x7fffffff) - BMIN) >> SHIFT;
      const bin = d < 0 ? 0 : d >= LAST ? LAST : d + 1;
      SH[bin]++;
      const neg = u >>> 31;
      negLo += neg & ((bLo - bin) >>> 31);
      negHi += neg & ((bHi - bin) >>> 31);
      const a = Math.abs(xv);
      const f = FLAG_[bin];
      if (f !== 0) {
        if (f & 1) {
          if (bin === b15 && a > t15) e15++;
          if (bin === b2 && a > t2) e2++;
          if (bin === b3 && a > t3) e3++;
          if (bin === bHi && xv > clipHi) cHi++;
          if (bin === bLo && xv < clipLo) cLo++;
        }
        if (f > 1) {
          CV[cn] = a;
          CT[cn++] = f >> 1;
        }
      }
      rsum += xv;
      sumAbs += a;
      sumSq += xv * xv;
      amax = Math.max(amax, a);
      // v = e^ℓ − 1 from expm1(a) + e^a·(e^δ − 1): summing v and v(v + 2) = e^2ℓ − 1 (not e^ℓ, e^2ℓ)
      // keeps the low bits that χ² = E[e^2ℓ] − 1 needs when |ℓ| is tiny (1e-8: χ² ~ 1e-16 of N).
      let v: number;
      if (a < lim) {
        const m = (xv * grid + rnd) - rnd;
        const o = ((m | 0) + half) << 2;
        const dl = xv - m * inv;
        const d2 = dl * dl;
        const q = d2 * (c2 + dl * c3 + d2 * (c4 + dl * c5));
        const E = ET[o];
        v = ET[o + 1] + E * (dl + q);
        k3 += ET[o + 2] + ET[o + 1] * dl + E * q;
      } else {
        v = Math.expm1(xv);
        k3 += v - xv;
      }
      s1 += v;
      s2 += v * (v + 2);
    }
    const seq = seqBase + runs[o4 + 3];
    seqL[seq] += rsum;
    seqC[seq] += n - n0;
    sum += rsum;
  }
  FLAG[b15] = FLAG[b2] = FLAG[b3] = FLAG[bHi] = 0;
  if (bLo < HIST_BINS) FLAG[bLo] = 0;
  if (band && cand) {
    for (let i = 0; i < band.n; i++) FLAG[band.bins[i]] = 0;
    cand.n = cn;
  }
  sums[S_NONFINITE] += nonfin;
  if (n === 0) return 0;
  sums[S_N] += n;
  sums[S_SUM] += sum;
  sums[S_SUM_ABS] += sumAbs;
  sums[S_SUM_SQ] += sumSq;
  sums[S_SUM_K3] += k3;
  sums[S_EXCEED_1_5] += e15;
  sums[S_EXCEED_2] += e2;
  sums[S_EXCEED_3] += e3;
  sums[S_CLIP] += cLo + cHi + negLo - negHi; // foldHist adds every value above bHi
  if (amax > sums[S_ABS_MAX]) sums[S_ABS_MAX] = amax;
  // |ℓ| ≤ 300: Σe^ℓ = n + Σ(e^ℓ − 1) and Σe^2ℓ are finite and > 0 unshifted (shift 0)
  if (amax <= FAST_LIMIT) lseAdd(sums, S_LSE_MAX, 0, n + s1, n + s2);
  else slowExpSums(sums, x, R, code);
  return n;
}

/** Log-space ESS parts for huge |ℓ|: shifts by the max so nothing overflows. */
export function slowExpSums(sums: Float64Array, x: Float32Array, R: Runs, code: number): void {
  let mx = -Infinity;
  const runs = R.runs;
  for (let r = 0; r < R.n; r++) {
    if (runs[4 * r + 2] !== code) continue;
    for (let i = runs[4 * r]; i < runs[4 * r + 1]; i++) if (x[i] - x[i] === 0) mx = Math.max(mx, x[i]);
  }
  let s1 = 0, s2 = 0;
  for (let r = 0; r < R.n; r++) {
    if (runs[4 * r + 2] !== code) continue;
    for (let i = runs[4 * r]; i < runs[4 * r + 1]; i++) {
      if (x[i] - x[i] !== 0) continue;
      const e = Math.exp(x[i] - mx);
      s1 += e;
      s2 += e * e;
    }
  }
  lseAdd(sums, S_LSE_MAX, mx, s1, s2);
}

/**
 * hist += the kernel's counts (which are zeroed), and the exceedance / clip counts of the bins above
 * each threshold (straddling bins were compared exactly in kernelRuns; it also subtracted the negative
 * values above bHi, so adding every value above bHi leaves the positive ones). `nz` collects the bins counted.
 */
export function foldHist(sh: Uint32Array, hist: Float64Array, sums: Float64Array, clipHi: number, nz: number[] | null = null): void {
  const b15 = binAt(T15), b2 = binAt(T2), b3 = binAt(T3), bHi = binAt(clipHi);
  const N = HIST_BINS;
  let e15 = 0, e2 = 0, e3 = 0, cl = 0;
  for (let b = 0; b < N; b++) {
    const c = sh[b];
    if (c === 0) continue;
    sh[b] = 0;
    if (nz) nz.push(b); // the bins counted, ascending (a worker ships these, not the whole histogram)
    hist[b] += c;
    if (b > b15) e15 += c;
    if (b > b2) e2 += c;
    if (b > b3) e3 += c;
    if (b > bHi) cl += c;
  }
  sums[S_EXCEED_1_5] += e15;
  sums[S_EXCEED_2] += e2;
  sums[S_EXCEED_3] += e3;
  sums[S_CLIP] += cl;
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

/**
 * Warm-up at load: V8 optimises the hot loop from its type feedback, and a loop first seen on data
 * without NaN, straddling or |ℓ| ≥ 4 tokens gets code that deoptimises later and sometimes settles in
 * a state twice as slow. Every branch is taken here first, on throw-away state.
 */
function warmUp(): void {
  const odd = [NaN, Infinity, -Infinity, 0, 1e-30, -1e-30, 5, -5, 50, 400, -400, 0.4054651, -0.4054651,
    0.6931472, 1.0986123, 0.18232156, -0.22314355, 0.2468601, 300.5, 1e-3, -2e-2];
  const n = 8192;
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = i < odd.length * 4 ? odd[i % odd.length] : ((i * 7919) % 2001 - 1000) * 1e-3;
  const bits = new Int32Array(x.buffer);
  const runs = new Int32Array(4 * 64);
  for (let r = 0; r < 64; r++) runs.set([r * 128, r * 128 + 128, r % 3, r], 4 * r);
  const sh = new Uint32Array(HIST_BINS), sums = new Float64Array(32);
  const L = new Float64Array(64), C = new Float64Array(64);
  const band: Band = { bins: new Int32Array(64), bits: new Uint8Array(64), n: 64 };
  for (let i = 0; i < 64; i++) (band.bins[i] = binOf(((i * 7919) % 1000) * 1e-3)), (band.bits[i] = 1 + (i % 15));
  const cand: Cand = { vals: new Float32Array(n), tags: new Uint8Array(n), n: 0 };
  for (let k = 0; k < 12; k++) {
    sums.fill(0);
    cand.n = 0;
    kernelRuns(x, bits, { runs, n: 64 }, k % 3, sh, sums, k & 1 ? -Infinity : Math.log(0.8), Math.log(1.28), L, C, 0, band, cand);
  }
}
warmUp();
