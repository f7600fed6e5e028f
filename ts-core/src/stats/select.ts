// Exact quantiles of |ℓ| by histogram-guided selection: the merged histogram says which bins hold
// the wanted order statistics; ONE scan over every kept value of a pair collects only those bins'
// values for all of the pair's slices at once (a value buffer feeds the slices whose bit is in its
// mask, e.g. pre_tool values feed pre_tool and all), and a small sort per slice finishes.
// Bit-identical to sorting everything (numpy "linear" quantiles on the float32 |ℓ| values).
import { HIST_BINS, HIST_BITS_MIN, HIST_LAST, HIST_SHIFT } from './hist.ts';

export interface ValueBuf {
  vals: Float32Array;
  bits: Int32Array; // same bytes as vals
  len: number;
}

/** One slice's request: its merged histogram, finite count, ascending ps, and the output. */
export interface SelectSpec {
  hist: Float64Array;
  n: number;
  ps: ArrayLike<number>;
  out: Float64Array;
}

const MAX_SPECS = 8; // one flag bit each
const FLAG = new Uint8Array(HIST_BINS);
const scratch: Float32Array[] = Array.from({ length: MAX_SPECS }, () => new Float32Array(1 << 12));

interface Plan {
  bins: number[]; // ascending target bins
  binStart: number[]; // count before each target bin
  off: number[]; // offset of each target bin inside the sorted candidates
  need: number;
}

function plan(s: SelectSpec): Plan {
  const ranks: number[] = [];
  for (let k = 0; k < s.ps.length; k++) {
    const r0 = Math.floor(s.ps[k] * (s.n - 1));
    ranks.push(r0, Math.min(r0 + 1, s.n - 1));
  }
  ranks.sort((a, b) => a - b);
  const p: Plan = { bins: [], binStart: [], off: [], need: 0 };
  let cum = 0, b = 0;
  for (const r of ranks) {
    while (b < HIST_LAST && cum + s.hist[b] <= r) cum += s.hist[b++];
    if (p.bins.at(-1) !== b) (p.bins.push(b), p.binStart.push(cum), p.off.push(p.need), (p.need += s.hist[b]));
  }
  return p;
}

/** Fill every spec's `out`; bufs[i] holds values of the slices whose bits are set in masks[i]. */
export function selectMany(specs: SelectSpec[], bufs: ValueBuf[], masks: number[]): void {
  if (specs.length > MAX_SPECS) throw new Error(`selectMany: at most ${MAX_SPECS} slices`);
  const plans: (Plan | null)[] = specs.map((s) => (s.n > 0 ? plan(s) : null));
  const cols: Float32Array[] = [];
  plans.forEach((p, i) => {
    if (!p) return;
    for (const b of p.bins) FLAG[b] |= 1 << i;
    if (scratch[i].length < p.need) scratch[i] = new Float32Array(Math.max(p.need, scratch[i].length * 2));
  });
  for (let i = 0; i < specs.length; i++) cols.push(scratch[i]);
  const fill = new Array<number>(specs.length).fill(0);
  const flag = FLAG, bmin = HIST_BITS_MIN, last = HIST_LAST, shift = HIST_SHIFT;
  for (let j = 0; j < bufs.length; j++) {
    const { bits, vals, len } = bufs[j];
    const m = masks[j];
    for (let i = 0; i < len; i++) {
      const d = ((bits[i] & 0x7fffffff) - bmin) >> shift;
      const f = flag[d < 0 ? 0 : d >= last ? last : d + 1] & m;
      if (f === 0) continue;
      const a = Math.abs(vals[i]);
      for (let k = 0; k < specs.length; k++) if (f & (1 << k)) cols[k][fill[k]++] = a;
    }
  }
  plans.forEach((p) => p && p.bins.forEach((b) => (FLAG[b] = 0)));
  specs.forEach((s, k) => {
    const p = plans[k];
    if (!p) return void s.out.fill(NaN, 0, s.ps.length);
    if (fill[k] !== p.need) throw new Error(`selectQuantiles: histogram/value mismatch (${fill[k]} != ${p.need})`);
    // Target bins are disjoint value ranges in ascending order, so one sort orders them all.
    const sorted = cols[k].subarray(0, p.need).sort();
    const at = (r: number): number => {
      let i = 0;
      while (i + 1 < p.bins.length && p.binStart[i + 1] <= r) i++;
      return sorted[p.off[i] + (r - p.binStart[i])];
    };
    for (let q = 0; q < s.ps.length; q++) {
      const h = s.ps[q] * (s.n - 1);
      const r0 = Math.floor(h);
      const lo = at(r0);
      const hi = at(Math.min(r0 + 1, s.n - 1));
      s.out[q] = lo + (h - r0) * (hi - lo);
    }
  });
}

/** Quantiles at ascending ps over the union of bufs (finite values); hist is their merged histogram. */
export function selectQuantiles(hist: Float64Array, n: number, ps: ArrayLike<number>, bufs: ValueBuf[], out: Float64Array): Float64Array {
  selectMany([{ hist, n, ps, out }], bufs, bufs.map(() => 1));
  return out;
}
