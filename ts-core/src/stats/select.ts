// Exact quantiles of |ℓ| by histogram-guided selection: the merged histogram says which bins hold
// the wanted order statistics. Usually the kernel already collected those bins' values (the band,
// selectFromCand); otherwise ONE scan over the kept raw chunks of a pair collects them for all of the
// pair's slices at once (each run's slice code maps to the slices it feeds, e.g. pre_tool values feed
// pre_tool and all). A multi-quickselect finishes.
// Bit-identical to sorting everything (numpy "linear" quantiles on the float32 |ℓ| values).
import { HIST_BINS, HIST_BITS_MIN, HIST_LAST, HIST_SHIFT } from './hist.ts';

export interface ValueBuf {
  vals: Float32Array;
  bits: Int32Array; // same bytes as vals
  len: number;
}

/** A kept raw chunk: values as received (non-finite included) and its runs (start, end, code, seq). */
export interface KeptSource {
  vals: ValueBuf;
  runs: ValueBuf; // runs in .bits
  nRuns: number;
  pooled: boolean;
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

let candVals = new Float32Array(1 << 12);
let candTags = new Uint8Array(1 << 12);

/**
 * Leaf loop (optimised on its own): |v| and flag bits of the finite values whose bin is flagged in the
 * mask of their run's code (codeMask[code]).
 */
function scan(bits: Int32Array, vals: Float32Array, runs: Int32Array, nRuns: number, codeMask: number[], flag: Uint8Array, outV: Float32Array, outT: Uint8Array): number {
  const bmin = HIST_BITS_MIN, last = HIST_LAST, shift = HIST_SHIFT;
  let c = 0;
  for (let r = 0; r < nRuns; r++) {
    const m = codeMask[runs[4 * r + 2]] | 0;
    if (m === 0) continue;
    for (let i = runs[4 * r], e = runs[4 * r + 1]; i < e; i++) {
      const u = bits[i] & 0x7fffffff;
      if (u >= 0x7f800000) continue; // NaN / ±Inf are not in the histogram
      const d = (u - bmin) >> shift;
      const f = flag[d < 0 ? 0 : d >= last ? last : d + 1] & m;
      if (f !== 0) {
        outV[c] = Math.abs(vals[i]);
        outT[c++] = f;
      }
    }
  }
  return c;
}

export interface Plan {
  bins: number[]; // ascending target bins
  binStart: number[]; // count before each target bin
  off: number[]; // offset of each target bin inside the sorted candidates
  need: number;
}

export function plan(s: SelectSpec): Plan {
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

/** Fill every spec's `out`; srcs[i]'s runs of code c feed the specs whose bits are set in codeMasks[i][c]. */
export function selectMany(specs: SelectSpec[], srcs: KeptSource[], codeMasks: number[][]): void {
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
  for (let j = 0; j < srcs.length; j++) {
    const b = srcs[j];
    if (candVals.length < b.vals.len) (candVals = new Float32Array(b.vals.len)), (candTags = new Uint8Array(b.vals.len));
    const c = scan(b.vals.bits, b.vals.vals, b.runs.bits, b.nRuns, codeMasks[j], FLAG, candVals, candTags);
    for (let i = 0; i < c; i++) {
      const f = candTags[i], a = candVals[i];
      for (let k = 0; k < specs.length; k++) if (f & (1 << k)) cols[k][fill[k]++] = a;
    }
  }
  plans.forEach((p) => p && p.bins.forEach((b) => (FLAG[b] = 0)));
  specs.forEach((s, k) => {
    const p = plans[k];
    if (!p) return void s.out.fill(NaN, 0, s.ps.length);
    if (fill[k] !== p.need) throw new Error(`selectMany: histogram/value mismatch (${fill[k]} != ${p.need})`);
    finish(s, p, cols[k]);
  });
}

/**
 * Exact quantiles from band candidates (kernel.ts Cand) when the band covered every target bin:
 * sources[i] contributes its candidates whose tag has a bit of tagMasks[i]. False (nothing written)
 * when the candidates do not hold the target bins completely; the caller then scans the values.
 */
export function selectFromCand(s: SelectSpec, p: Plan, sources: { vals: Float32Array; tags: Uint8Array; n: number }[], tagMasks: number[]): boolean {
  for (const b of p.bins) FLAG[b] = 1;
  if (scratch[0].length < p.need) scratch[0] = new Float32Array(Math.max(p.need, scratch[0].length * 2));
  const col = scratch[0];
  let c = 0;
  for (let j = 0; j < sources.length && c <= p.need; j++) c = gather(sources[j], tagMasks[j], col, c, p.need);
  for (const b of p.bins) FLAG[b] = 0;
  if (c !== p.need) return false;
  finish(s, p, col);
  return true;
}

/** Leaf loop: candidates with a tag bit in m whose bin is flagged, appended to col (stops past cap). */
function gather(src: { vals: Float32Array; tags: Uint8Array; n: number }, m: number, col: Float32Array, c: number, cap: number): number {
  const vals = src.vals, tags = src.tags, n = src.n, flag = FLAG;
  const bits = new Int32Array(vals.buffer, vals.byteOffset, vals.length);
  const bmin = HIST_BITS_MIN, last = HIST_LAST, shift = HIST_SHIFT;
  for (let i = 0; i < n; i++) {
    if ((tags[i] & m) === 0) continue;
    const d = (bits[i] - bmin) >> shift; // candidates are |ℓ|: sign bit clear
    if (flag[d < 0 ? 0 : d >= last ? last : d + 1] === 0) continue;
    if (c === cap) return cap + 1;
    col[c++] = vals[i];
  }
  return c;
}

/** The spec's quantiles from its complete target-bin values col[0..need). */
function finish(s: SelectSpec, p: Plan, col: Float32Array): void {
  // Target bins are disjoint value ranges in ascending order, so the wanted order statistic r sits
  // at a known position of the candidates' sorted order; a multi-quickselect puts just those in place
  // (a full typed-array sort costs ~90 ns per candidate).
  const pos: number[] = [];
  const posOf = (r: number): number => {
    let i = 0;
    while (i + 1 < p.bins.length && p.binStart[i + 1] <= r) i++;
    return p.off[i] + (r - p.binStart[i]);
  };
  for (let q = 0; q < s.ps.length; q++) {
    const r0 = Math.floor(s.ps[q] * (s.n - 1));
    pos.push(posOf(r0), posOf(Math.min(r0 + 1, s.n - 1)));
  }
  const uniq = [...new Set(pos)].sort((a, b) => a - b);
  multiSelect(col, 0, p.need - 1, uniq, 0, uniq.length);
  for (let q = 0; q < s.ps.length; q++) {
    const h = s.ps[q] * (s.n - 1);
    const r0 = Math.floor(h);
    const lo = col[pos[2 * q]];
    const hi = col[pos[2 * q + 1]];
    s.out[q] = lo + (h - r0) * (hi - lo);
  }
}

/** Rearrange a[lo..hi] so that a[p] is the p-th smallest for every p in pos[i0..i1) (ascending). */
function multiSelect(a: Float32Array, lo: number, hi: number, pos: number[], i0: number, i1: number): void {
  while (i0 < i1 && lo < hi) {
    const mid = (lo + hi) >>> 1;
    const x = a[lo], y = a[mid], z = a[hi];
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y; // median of 3
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    // a[lo..j] ≤ pivot, a[j+1..i-1] = pivot (already in place), a[i..hi] ≥ pivot
    let k = i0;
    while (k < i1 && pos[k] <= j) k++;
    let m = k;
    while (m < i1 && pos[m] < i) m++;
    if (k > i0) multiSelect(a, lo, j, pos, i0, k);
    lo = i;
    i0 = m;
  }
}

