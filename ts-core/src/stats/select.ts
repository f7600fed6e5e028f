// Exact quantiles of |ℓ| by histogram-guided selection: the merged histogram says which bins hold
// the wanted order statistics; one scan collects only those bins' values, a small sort finishes.
// Bit-identical to sorting everything (numpy "linear" quantiles on the float32 |ℓ| values).
import { HIST_BINS, HIST_BITS_MIN, HIST_LAST } from './hist.ts';

export interface ValueBuf {
  vals: Float32Array;
  bits: Int32Array; // same bytes as vals
  len: number;
}

const FLAG = new Uint8Array(HIST_BINS);
let scratch = new Float32Array(1 << 16);

/** Quantiles at ascending ps over the union of bufs (finite values); hist is their merged histogram. */
export function selectQuantiles(hist: Float64Array, n: number, ps: ArrayLike<number>, bufs: ValueBuf[], out: Float64Array): Float64Array {
  if (!(n > 0)) return out.fill(NaN, 0, ps.length);
  // Ranks wanted: floor(h) and floor(h)+1 for h = p(n−1); find their bins and bin starts.
  const m = ps.length;
  const r0 = new Float64Array(m);
  const want: number[] = [];
  for (let k = 0; k < m; k++) {
    const h = ps[k] * (n - 1);
    r0[k] = Math.floor(h);
    want.push(r0[k], Math.min(r0[k] + 1, n - 1));
  }
  const binStart = new Map<number, number>(); // bin -> cumulative count before it
  let cum = 0;
  let b = 0;
  for (const r of [...want].sort((x, y) => x - y)) {
    while (b < HIST_LAST && cum + hist[b] <= r) cum += hist[b++];
    if (!binStart.has(b)) binStart.set(b, cum);
  }
  let need = 0;
  for (const bb of binStart.keys()) (FLAG[bb] = 1), (need += hist[bb]);
  if (scratch.length < need) scratch = new Float32Array(Math.max(need, scratch.length * 2));
  const col = scratch, flag = FLAG, bmin = HIST_BITS_MIN, last = HIST_LAST;
  let c = 0;
  for (const buf of bufs) {
    const bits = buf.bits, vals = buf.vals, len = buf.len;
    for (let i = 0; i < len; i++) {
      const d = ((bits[i] & 0x7fffffff) - bmin) >> 17;
      const bin = d < 0 ? 0 : d >= last ? last : d + 1;
      if (flag[bin] !== 0) col[c++] = Math.abs(vals[i]);
    }
  }
  for (const bb of binStart.keys()) FLAG[bb] = 0;
  if (c !== need) throw new Error(`selectQuantiles: histogram/value mismatch (${c} != ${need})`);
  const sorted = col.subarray(0, c).sort();
  // Offset of each flagged bin inside `sorted`: flagged bins are value-ordered, so prefix sums.
  const bins = [...binStart.keys()].sort((x, y) => x - y);
  const off = new Map<number, number>();
  let o = 0;
  for (const bb of bins) (off.set(bb, o), (o += hist[bb]));
  const at = (r: number): number => {
    let cb = -1;
    for (const bb of bins) if (binStart.get(bb)! <= r) cb = bb;
    return sorted[off.get(cb)! + (r - binStart.get(cb)!)];
  };
  for (let k = 0; k < m; k++) {
    const h = ps[k] * (n - 1);
    const lo = at(r0[k]);
    const hi = at(Math.min(r0[k] + 1, n - 1));
    out[k] = lo + (h - r0[k]) * (hi - lo);
  }
  return out;
}
