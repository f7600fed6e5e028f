// Bit-histogram over the float32 bits of |ℓ| (layout fixed in proto/README.md "Sketch payloads").
// bin 0: |ℓ| < 2^-24 (incl. 0); bins 1..16384: exponent + HIST_MANT_BITS (9) mantissa bits; bin 16385: |ℓ| ≥ 256.
// Exactly mergeable (add) and subtractable, so windows are rings of per-step histograms.
// 9 bits (bins 0.1–0.2 % wide) is the smallest width that keeps histogram quantiles within 0.1 % up to
// p99.9 on the accuracy data (7 and 8 bits measured up to 0.42 % / 0.16 %; docs/metrics.md).

export const HIST_EXP_MIN = -24;
export const HIST_EXP_MAX = 8;
/** The one knob of the layout: proto/README.md, python-shim sketch.py and docs/sketch.md state the same. */
export const HIST_MANT_BITS = 9;
export const HIST_SHIFT = 23 - HIST_MANT_BITS; // 14
export const HIST_BITS_MIN = (127 + HIST_EXP_MIN) << 23; // float32 bits of 2^-24
export const HIST_BITS_MAX = (127 + HIST_EXP_MAX) << 23; // float32 bits of 2^8
export const HIST_BINS = 2 + ((HIST_EXP_MAX - HIST_EXP_MIN) << HIST_MANT_BITS); // 16386
export const HIST_LAST = HIST_BINS - 1;
export const HIST_LAYOUT = { exp_min: HIST_EXP_MIN, exp_max: HIST_EXP_MAX, mant_bits: HIST_MANT_BITS } as const;

const f32 = new Float32Array(1);
const i32 = new Int32Array(f32.buffer);

/** HIST_EDGES[b] = lower edge of bin b; HIST_EDGES[HIST_BINS] = +Infinity. */
export const HIST_EDGES: Float64Array = (() => {
  const e = new Float64Array(HIST_BINS + 1);
  e[0] = 0;
  for (let b = 1; b < HIST_BINS; b++) {
    i32[0] = HIST_BITS_MIN + ((b - 1) << HIST_SHIFT);
    e[b] = f32[0];
  }
  e[HIST_BINS] = Infinity;
  return e;
})();

/** Bin of a float32 bit pattern (sign ignored). Same formula as the hot loops, for cold paths. */
export function binOfBits(bits: number): number {
  const u = bits & 0x7fffffff;
  const b = ((u - HIST_BITS_MIN) >> HIST_SHIFT) + 1;
  return b < 0 ? 0 : b > HIST_LAST ? HIST_LAST : b;
}

/** Bin of a finite value (rounded to float32 first, as on the wire). */
export function binOf(x: number): number {
  f32[0] = x;
  return binOfBits(i32[0]);
}

/**
 * Quantiles of |ℓ| from a histogram, numpy "linear" (type 7) ranks, like the exact path: the value at
 * 0-based rank h = p·(n−1) interpolates between the order statistics ⌊h⌋ and ⌊h⌋+1. An order statistic
 * r inside bin b (c values, cum before it) is estimated at lo + (r − cum + ½)/c·(hi − lo); the top bin's
 * upper edge is the exact max, and rank n−1 is the max itself. Interpolating between the two estimated
 * order statistics (not inside one bin) keeps the gap between sparse tail values, which dominated the
 * error at p99.9. `ps` must be ascending. Writes NaN when n = 0.
 */
export function histQuantiles(hist: Float64Array, ps: ArrayLike<number>, maxAbs: number, out: Float64Array): Float64Array {
  const n = histTotal(hist);
  if (!(n > 0)) {
    out.fill(NaN, 0, ps.length);
    return out;
  }
  // Ranks only increase with k, so one forward scan over the bins serves every quantile.
  const cur = { b: 0, cum: 0 };
  for (let k = 0; k < ps.length; k++) {
    const h = ps[k] * (n - 1);
    const r0 = Math.floor(h);
    const a = orderStat(hist, n, maxAbs, r0, cur);
    out[k] = h > r0 ? a + (h - r0) * (orderStat(hist, n, maxAbs, r0 + 1, cur) - a) : a;
  }
  return out;
}

/** Estimated order statistic r (see histQuantiles); cur = scan position (bin, count before it). */
function orderStat(hist: Float64Array, n: number, maxAbs: number, r: number, cur: { b: number; cum: number }): number {
  if (r >= n - 1) return maxAbs;
  if (r < cur.cum) (cur.b = 0), (cur.cum = 0); // equal ranks twice (close ps, small n)
  let b = cur.b, cum = cur.cum;
  const last = HIST_LAST;
  while (b < last && cum + hist[b] <= r) cum += hist[b++];
  cur.b = b;
  cur.cum = cum;
  const lo = HIST_EDGES[b];
  const hi = Math.min(HIST_EDGES[b + 1], maxAbs);
  const q = lo + ((r - cum + 0.5) / hist[b]) * (hi - lo);
  return q > hi ? hi : q < lo ? lo : q;
}

export function histQuantile(hist: Float64Array, p: number, maxAbs: number): number {
  return histQuantiles(hist, [p], maxAbs, new Float64Array(1))[0];
}

// Bin loops live in these small leaf functions: a caller whose own branches change over a run (window
// fill, baseline done) gets deoptimised by V8 and its inline 16k-bin loops would then run unoptimised.
/** dst += src[off .. off + HIST_BINS). */
export function histAdd(dst: Float64Array, src: Float64Array, off = 0): void {
  const N = HIST_BINS;
  for (let b = 0; b < N; b++) dst[b] += src[off + b];
}

/** dst += add − sub[off .. off + HIST_BINS) (window ring eviction). */
export function histAddSub(dst: Float64Array, add: Float64Array, sub: Float64Array, off: number): void {
  const N = HIST_BINS;
  for (let b = 0; b < N; b++) dst[b] += add[b] - sub[off + b];
}

/** Σ counts. */
export function histTotal(h: Float64Array): number {
  const N = HIST_BINS;
  let n = 0;
  for (let b = 0; b < N; b++) n += h[b];
  return n;
}

/** Sparse [bins[], counts[]] form for JSON snapshots. */
export function histToSparse(h: Float64Array): [number[], number[]] {
  const bins: number[] = [];
  const counts: number[] = [];
  for (let b = 0; b < h.length; b++) if (h[b] !== 0) (bins.push(b), counts.push(h[b]));
  return [bins, counts];
}

export function histFromSparse(sp: [number[], number[]], out: Float64Array = new Float64Array(HIST_BINS)): Float64Array {
  out.fill(0);
  const [bins, counts] = sp;
  for (let i = 0; i < bins.length; i++) out[bins[i]] = counts[i];
  return out;
}
