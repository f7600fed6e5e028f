// Bit-histogram over the float32 bits of |ℓ| (layout fixed in proto/README.md "Sketch payloads").
// bin 0: |ℓ| < 2^-24 (incl. 0); bins 1..2048: exponent + 6 mantissa bits; bin 2049: |ℓ| ≥ 256.
// Exactly mergeable (add) and subtractable, so windows are rings of per-step histograms.

export const HIST_EXP_MIN = -24;
export const HIST_EXP_MAX = 8;
export const HIST_MANT_BITS = 6;
export const HIST_SHIFT = 23 - HIST_MANT_BITS; // 17
export const HIST_BITS_MIN = (127 + HIST_EXP_MIN) << 23; // float32 bits of 2^-24
export const HIST_BITS_MAX = (127 + HIST_EXP_MAX) << 23; // float32 bits of 2^8
export const HIST_BINS = 2 + ((HIST_EXP_MAX - HIST_EXP_MIN) << HIST_MANT_BITS); // 2050
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
 * Quantiles of |ℓ| from a histogram, numpy "linear" (type 7) ranks: the value at 0-based rank
 * h = p·(n−1). Inside a bin the c values are taken at midpoints lo + (j+½)/c·(hi−lo); the top bin's
 * upper edge is the exact max. `ps` must be ascending. Writes NaN when n = 0.
 */
export function histQuantiles(hist: Float64Array, ps: ArrayLike<number>, maxAbs: number, out: Float64Array): Float64Array {
  let n = 0;
  for (let b = 0; b < HIST_BINS; b++) n += hist[b];
  if (!(n > 0)) {
    out.fill(NaN, 0, ps.length);
    return out;
  }
  let b = 0;
  let cum = 0; // count before bin b
  for (let k = 0; k < ps.length; k++) {
    const h = ps[k] * (n - 1);
    while (b < HIST_LAST && (hist[b] === 0 || cum + hist[b] <= h)) cum += hist[b++];
    const c = hist[b];
    const lo = HIST_EDGES[b];
    const hi = Math.min(HIST_EDGES[b + 1], maxAbs);
    let q = c > 0 ? lo + ((h - cum + 0.5) / c) * (hi - lo) : lo;
    if (q > hi) q = hi;
    if (q < lo) q = lo;
    out[k] = q > maxAbs ? maxAbs : q;
  }
  return out;
}

export function histQuantile(hist: Float64Array, p: number, maxAbs: number): number {
  return histQuantiles(hist, [p], maxAbs, new Float64Array(1))[0];
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
