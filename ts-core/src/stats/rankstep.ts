// One rank's contribution to one step: slice runs from the masks (once per chunk), then per pair one
// fused kernel pass over each slice's runs straight from the wire array (copy, histogram, all sums),
// per-sequence sums. Chunks (whole sequences each) add up exactly.
import type { PairName, StepData } from '../types.ts';
import { PAIRS } from '../types.ts';
import { HIST_BINS, histAdd } from './hist.ts';
import { addSeqParts, foldHist, kernelRuns, type Band, type Cand, type Runs } from './kernel.ts';
import { WASM_KERNEL, kernelStaged, stage } from './kernel-wasm.ts';
import type { BufPool } from './pool.ts';
import type { KeptSource, ValueBuf } from './select.ts';
import { clipBand, emptySums, mergeSums } from './sums.ts';
import { StatsError } from './errors.ts';
import { TOPK_DEFAULT, rankHeaps, scanTopK, type RankTop } from './topk.ts';

/** Base slice codes per token; `all` = pre_tool ∪ post_tool. */
export const PRE = 0, POST = 1, TOOL = 2, NONE = 3;
export const BASE_SLICES = ['pre_tool', 'post_tool', 'tool_output'] as const;

export class SliceState {
  hist = new Float64Array(HIST_BINS);
  sums = emptySums();
  /** Kept raw chunks holding this slice's values (runs with `code`), for an exact rescan; empty when not kept. */
  srcs: { src: KeptSource; code: number }[] = [];
  /** |ℓ| of the values in the step's quantile band, with tags (kernel.ts Cand); usually all selection needs. */
  cand: Cand = { vals: new Float32Array(256), tags: new Uint8Array(256), n: 0 };
  private sh_: Uint32Array | null = null;
  /** Counts filled by the kernel, folded into hist by RankStep.finish (zero outside a step). */
  get sh(): Uint32Array {
    return (this.sh_ ??= new Uint32Array(HIST_BINS));
  }
  get hasSigned(): boolean {
    return this.sh_ !== null;
  }
  /** Back to empty for reuse (sh is zeroed by foldHist). */
  reset(): this {
    this.hist.fill(0);
    emptySums(this.sums);
    this.srcs.length = 0;
    this.cand.n = 0;
    return this;
  }
}

/** SliceStates are ~200 KB each (histogram + kernel counts): RunStats recycles them instead of allocating per step. */
export type StateSource = () => SliceState;
const fresh: StateSource = () => new SliceState();

export class RankStep {
  chunksSeen = 0;
  chunkCount = 1;
  tokens = 0;
  nSeqs = 0;
  /** key `${pair}/${slice}` → state. `all` holds only its sequence parts until complete(). */
  slices = new Map<string, SliceState>();
  implicit = new Set<PairName>();
  pairs = new Set<PairName>();
  /** post-tool / pre-tool finite counts are in the slices; mask counts here (echo to the shim). */
  maskCounts = { pre_tool: 0, post_tool: 0, tool_output: 0 };
  knobs: StepData['knobs'] = {};
  logs: StepData['logs'] = {};
  receivedAt = 0;
  /** Pooled buffers kept for exact rescans (raw values per pair and chunk, runs per chunk). */
  kept: KeptSource[] = [];
  /** Clip band of this rank's step (first chunk's knobs), used for every chunk and the fold. */
  clip: { lo: number; hi: number } | null = null;
  /** finish() ran (a worker's rank step arrives finished: stats/packed.ts). */
  folded = false;
  /** Gives back memory the kept sources view (a worker step's shared buffer); called once with them. */
  release: (() => void) | null = null;
  /** Forensics: per pair, the top-k |ℓ| tokens of pre_tool, post_tool, tool_output (topk.ts). k = 0: off. */
  top: RankTop = new Map();
  topK = TOPK_DEFAULT;
  constructor(readonly rank: number, private alloc: StateSource = fresh) {}

  slice(key: string): SliceState {
    let s = this.slices.get(key);
    if (!s) this.slices.set(key, (s = this.alloc()));
    return s;
  }

  get complete(): boolean {
    return this.chunksSeen >= this.chunkCount;
  }

  /**
   * Fold signed counts into histograms, then pre_tool + post_tool token fields into `all`. Once. `nz` (one
   * chunk only): per slice key, the histogram's non-zero bins, ascending.
   */
  finish(nz: Map<string, number[]> | null = null): void {
    if (this.folded) return;
    this.folded = true;
    const clip = this.clip ?? clipBand(this.knobs);
    for (const [key, s] of this.slices) if (s.hasSigned) foldHist(s.sh, s.hist, s.sums, clip.hi, nz && nzOf(nz, key));
    for (const pair of this.pairs) {
      const all = this.slice(`${pair}/all`);
      for (const sl of ['pre_tool', 'post_tool']) {
        const s = this.slices.get(`${pair}/${sl}`);
        if (!s) continue;
        histAdd(all.hist, s.hist);
        mergeSums(all.sums, s.sums, false);
      }
      if (nz) nz.set(`${pair}/all`, union(nz.get(`${pair}/pre_tool`) ?? [], nz.get(`${pair}/post_tool`) ?? []));
    }
  }
}

function nzOf(nz: Map<string, number[]>, key: string): number[] {
  let l = nz.get(key);
  if (!l) nz.set(key, (l = []));
  return l;
}

/** Union of two ascending lists. */
function union(a: number[], b: number[]): number[] {
  const out: number[] = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    const x = i < a.length ? a[i] : Infinity, y = j < b.length ? b[j] : Infinity;
    out.push(x <= y ? x : y);
    if (x <= y) i++;
    if (y <= x) j++;
  }
  return out;
}

// Per-chunk scratch, reused across steps.
const R: Runs = { runs: new Int32Array(4096), n: 0 };
let labels = new Uint8Array(0);
let zeros = new Float32Array(0);
let seqL = new Float64Array(0);
let seqC = new Float64Array(0);
const scratchCand: Cand = { vals: new Float32Array(0), tags: new Uint8Array(0), n: 0 };

/** Append the kernel's candidates of one call to the slice's store. */
function keepCand(st: SliceState, c: Cand): void {
  const d = st.cand, need = d.n + c.n;
  if (d.vals.length < need) {
    const cap = Math.max(need, 2 * d.vals.length);
    const v = new Float32Array(cap), t = new Uint8Array(cap);
    v.set(d.vals.subarray(0, d.n));
    t.set(d.tags.subarray(0, d.n));
    (d.vals = v), (d.tags = t);
  }
  d.vals.set(c.vals.subarray(0, c.n), d.n);
  d.tags.set(c.tags.subarray(0, c.n), d.n);
  d.n = need;
}

function grow<T extends Uint8Array | Float32Array | Float64Array | Int32Array>(a: T, n: number, make: (n: number) => T): T {
  return a.length >= n ? a : make(Math.max(n, a.length * 2));
}

/** Runs (start, end, code, seq) of equal slice code per sequence; counts per base code. */
function buildRuns(d: StepData, nSeqs: number, counts: number[]): void {
  const cm = d.completionMask, tm = d.toolMask, off = d.offsets;
  // at most one run per token: size once, then the loop needs no capacity checks
  if (R.runs.length < 4 * off[nSeqs]) R.runs = new Int32Array(Math.max(4 * off[nSeqs], 2 * R.runs.length));
  const runs = R.runs;
  let n = 0, c0 = 0, c1 = 0, c2 = 0;
  for (let q = 0; q < nSeqs; q++) {
    const e = off[q + 1];
    let t = off[q];
    let code = PRE;
    while (t < e) {
      if (cm[t] === 0) {
        t++; // padding
        continue;
      }
      const s = t;
      let c = code;
      if (tm[t] === 0) {
        while (t < e && cm[t] !== 0 && tm[t] === 0) t++;
        c = TOOL;
        code = POST;
        c2 += t - s;
      } else {
        while (t < e && cm[t] !== 0 && tm[t] !== 0) t++;
        if (c === PRE) c0 += t - s;
        else c1 += t - s;
      }
      const o = 4 * n++;
      runs[o] = s;
      runs[o + 1] = t;
      runs[o + 2] = c;
      runs[o + 3] = q;
    }
  }
  R.n = n;
  counts[PRE] += c0;
  counts[POST] += c1;
  counts[TOOL] += c2;
}

/** Per-token labels from the runs (only for user slices). */
function labelsFromRuns(T: number): Uint8Array {
  labels = grow(labels, T, (n) => new Uint8Array(n));
  labels.fill(NONE, 0, T);
  const r = R.runs;
  for (let i = 0; i < R.n; i++) labels.fill(r[4 * i + 2], r[4 * i], r[4 * i + 1]);
  return labels;
}

export function checkShape(d: StepData): { T: number; nSeqs: number } {
  const T = d.completionMask.length;
  if (d.toolMask.length !== T) throw new StatsError('E_FRAME_LENGTH', `tool_mask length ${d.toolMask.length} != ${T}`);
  const off = d.offsets;
  const nSeqs = off.length - 1;
  if (nSeqs < 0 || off[0] !== 0 || off[nSeqs] !== T) throw new StatsError('E_OFFSETS', 'offsets must start at 0 and end at T');
  for (let s = 0; s < nSeqs; s++) if (off[s + 1] < off[s]) throw new StatsError('E_OFFSETS', `offsets decrease at ${s}`);
  for (const p of PAIRS) {
    const a = d.pairs[p];
    if (a && a.length !== T) throw new StatsError('E_FRAME_LENGTH', `${p} length ${a.length} != ${T}`);
  }
  if (d.sliceIds && d.sliceIds.length !== T) throw new StatsError('E_FRAME_LENGTH', `slice_ids length ${d.sliceIds.length} != ${T}`);
  return { T, nSeqs };
}

/**
 * Add one chunk of one rank's step. `keep` = keep compacted values for exact quantiles (`'view'`: the
 * values stay where they are, e.g. in a worker's shared buffer, and are referenced, not copied; implicit
 * pairs then read `zerosView`); `bands` (per pair, the same for every rank of the step) = collect the
 * values in those bins during the pass.
 */
export function ingestChunk(
  rs: RankStep, d: StepData, pool: BufPool, keep: boolean | 'view', bands?: Map<PairName, Band>, zerosView?: Float32Array,
): void {
  const { T, nSeqs } = checkShape(d);
  const counts = [0, 0, 0, 0];
  buildRuns(d, nSeqs, counts);
  rs.tokens += T;
  rs.nSeqs += nSeqs;
  rs.maskCounts.pre_tool += counts[PRE];
  rs.maskCounts.post_tool += counts[POST];
  rs.maskCounts.tool_output += counts[TOOL];
  if (rs.chunksSeen === 0 || d.rank === 0) (rs.knobs = d.knobs ?? {}), (rs.logs = d.logs ?? {});
  rs.receivedAt = rs.receivedAt || d.receivedAt;
  const clip = (rs.clip ??= clipBand(d.knobs));
  seqL = grow(seqL, 4 * nSeqs, (n) => new Float64Array(n));
  seqC = grow(seqC, 4 * nSeqs, (n) => new Float64Array(n));
  // Kept for a rescan when the band misses: the chunk's runs once, each pair's raw values (bulk copies).
  let keptRuns: ValueBuf | null = null;
  const view = keep === 'view';
  if (view) {
    const bits = R.runs.slice(0, 4 * R.n); // its own buffer: it travels back to the main thread
    keptRuns = { vals: new Float32Array(bits.buffer), bits, len: bits.length };
  } else if (keep) {
    keptRuns = pool.get(4 * R.n);
    keptRuns.bits.set(R.runs.subarray(0, 4 * R.n));
    keptRuns.len = 4 * R.n;
  }
  const userNames = d.sliceIds && d.sliceNames ? d.sliceNames : null;
  for (const pair of PAIRS) {
    let x = d.pairs[pair];
    const implicit = d.implicit?.includes(pair) ?? false;
    if (!x && !implicit) continue;
    if (!x) {
      // Implicit pairs are identically 0 by construction: run them through the same path.
      zeros = grow(zeros, T, (n) => new Float32Array(n));
      x = view && zerosView ? zerosView : zeros.subarray(0, T);
    }
    rs.pairs.add(pair);
    if (implicit) rs.implicit.add(pair);
    const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
    seqL.fill(0, 0, 4 * nSeqs);
    seqC.fill(0, 0, 4 * nSeqs);
    const band = keep ? (bands?.get(pair) ?? null) : null;
    let src: KeptSource | null = null;
    if (keptRuns && view) {
      src = { vals: { vals: x, bits, len: T }, runs: keptRuns, nRuns: R.n, pooled: false };
      rs.kept.push(src);
    } else if (keptRuns) {
      const vals = pool.get(T);
      vals.vals.set(x);
      vals.len = T;
      src = { vals, runs: keptRuns, nRuns: R.n, pooled: true };
      rs.kept.push(src);
    }
    if (WASM_KERNEL) stage(x, R); // one bulk copy into the module per pair and chunk
    for (let c = 0; c < 3; c++) {
      const st = rs.slice(`${pair}/${BASE_SLICES[c]}`);
      if (band && scratchCand.vals.length < counts[c]) {
        scratchCand.vals = new Float32Array(Math.max(counts[c], 2 * scratchCand.vals.length));
        scratchCand.tags = new Uint8Array(scratchCand.vals.length);
      }
      scratchCand.n = 0;
      if (WASM_KERNEL) kernelStaged(x, R, c, st.sh, st.sums, clip.lo, clip.hi, seqL, seqC, c * nSeqs, band, band ? scratchCand : null);
      else kernelRuns(x, bits, R, c, st.sh, st.sums, clip.lo, clip.hi, seqL, seqC, c * nSeqs, band, band ? scratchCand : null);
      if (band && scratchCand.n) keepCand(st, scratchCand);
      if (src) st.srcs.push({ src, code: c });
      addSeqParts(st.sums, seqL, seqC, c * nSeqs, (c + 1) * nSeqs);
    }
    for (let s = 0; s < nSeqs; s++) {
      seqL[3 * nSeqs + s] = seqL[s] + seqL[nSeqs + s];
      seqC[3 * nSeqs + s] = seqC[s] + seqC[nSeqs + s];
    }
    addSeqParts(rs.slice(`${pair}/all`).sums, seqL, seqC, 3 * nSeqs, 4 * nSeqs);
    if (!implicit && rs.topK > 0) scanTopK(x, bits, R, d.offsets, rs.nSeqs - nSeqs, rs.rank, rankHeaps(rs.top, pair, rs.topK), d.tokenIds);
    if (userNames) ingestUser(rs, pair, x, d, userNames, clip, T, nSeqs, keep !== false);
  }
  if (keptRuns && !view) rs.kept.push({ vals: keptRuns, runs: keptRuns, nRuns: 0, pooled: true }); // released with the rest
  rs.chunksSeen++;
}

/** User slices `user:<name>` from slice_ids: model tokens (pre_tool ∪ post_tool) with that id. */
function ingestUser(
  rs: RankStep, pair: PairName, x: Float32Array, d: StepData, names: string[],
  clip: { lo: number; hi: number }, T: number, nSeqs: number, keep: boolean,
): void {
  const ids = d.sliceIds!, lab = labelsFromRuns(T), off = d.offsets;
  const K = names.length;
  // Gather each id's model tokens (non-finite included: the kernel counts them) sequence by sequence,
  // one run per (id, sequence), then run the same kernel over the gathered values.
  const cnt = new Int32Array(K);
  for (let t = 0; t < T; t++) if (lab[t] <= POST && ids[t] < K) cnt[ids[t]]++;
  const start = new Int32Array(K + 1);
  for (let k = 0; k < K; k++) start[k + 1] = start[k] + cnt[k];
  const vals = new Float32Array(start[K]);
  const fill = start.slice(0, K);
  const runsOf: number[][] = Array.from({ length: K }, () => []);
  for (let s = 0; s < nSeqs; s++) {
    const before = fill.slice();
    for (let t = off[s]; t < off[s + 1]; t++) {
      const id = ids[t];
      if (lab[t] <= POST && id < K) vals[fill[id]++] = x[t];
    }
    for (let k = 0; k < K; k++) if (fill[k] > before[k]) runsOf[k].push(before[k], fill[k], 0, s);
  }
  const L = new Float64Array(nSeqs), C = new Float64Array(nSeqs);
  const vbits = new Int32Array(vals.buffer);
  for (let k = 0; k < K; k++) {
    if (cnt[k] === 0) continue;
    const st = rs.slice(`${pair}/user:${names[k]}`);
    const runs: Runs = { runs: Int32Array.from(runsOf[k]), n: runsOf[k].length / 4 };
    L.fill(0);
    C.fill(0);
    kernelRuns(vals, vbits, runs, 0, st.sh, st.sums, clip.lo, clip.hi, L, C, 0);
    if (keep) {
      const rb = new Float32Array(runs.runs.buffer);
      st.srcs.push({ src: { vals: { vals, bits: vbits, len: vals.length }, runs: { vals: rb, bits: runs.runs, len: runs.runs.length }, nRuns: runs.n, pooled: false }, code: 0 });
    }
    addSeqParts(st.sums, L, C, 0, nSeqs);
  }
}
