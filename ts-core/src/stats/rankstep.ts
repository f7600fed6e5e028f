// One rank's contribution to one step: slices from the masks, values compacted per pair × slice,
// fused kernel per slice, per-sequence sums. Chunks (whole sequences each) add up exactly.
import type { PairName, StepData } from '../types.ts';
import { PAIRS } from '../types.ts';
import { HIST_BINS } from './hist.ts';
import { accumulate, addSeqParts } from './kernel.ts';
import type { BufPool } from './pool.ts';
import type { ValueBuf } from './select.ts';
import { clipBand, emptySums, mergeSums } from './sums.ts';
import { StatsError } from './errors.ts';

/** Base slice codes per token; `all` = pre_tool ∪ post_tool. */
export const PRE = 0, POST = 1, TOOL = 2, NONE = 3;
export const BASE_SLICES = ['pre_tool', 'post_tool', 'tool_output'] as const;

export class SliceState {
  hist = new Float64Array(HIST_BINS);
  sums = emptySums();
  /** Compacted finite values (kept for exact quantiles); null when only sketches are kept. */
  buf: ValueBuf | null = null;
}

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
  constructor(readonly rank: number) {}

  slice(key: string): SliceState {
    let s = this.slices.get(key);
    if (!s) this.slices.set(key, (s = new SliceState()));
    return s;
  }

  get complete(): boolean {
    return this.chunksSeen >= this.chunkCount;
  }

  /** Fold pre_tool + post_tool token fields into `all` once every chunk is in. */
  finish(): void {
    for (const pair of this.pairs) {
      const all = this.slice(`${pair}/all`);
      for (const sl of ['pre_tool', 'post_tool']) {
        const s = this.slices.get(`${pair}/${sl}`);
        if (!s) continue;
        for (let b = 0; b < HIST_BINS; b++) all.hist[b] += s.hist[b];
        mergeSums(all.sums, s.sums, false);
      }
    }
  }
}

// Per-chunk scratch, reused across steps.
let labels = new Uint8Array(0);
let zeros = new Float32Array(0);
let seqL = new Float64Array(0);
let seqC = new Float64Array(0);

function grow<T extends Uint8Array | Float32Array | Float64Array>(a: T, n: number, make: (n: number) => T): T {
  return a.length >= n ? a : make(Math.max(n, a.length * 2));
}

/** Label tokens; returns counts per base code. Tokens outside offsets ranges stay NONE. */
function labelTokens(d: StepData, T: number, nSeqs: number): number[] {
  labels = grow(labels, T, (n) => new Uint8Array(n));
  const lab = labels, cm = d.completionMask, tm = d.toolMask, off = d.offsets;
  lab.fill(NONE, 0, T);
  const counts = [0, 0, 0, 0];
  for (let s = 0; s < nSeqs; s++) {
    let seen = false;
    for (let t = off[s]; t < off[s + 1]; t++) {
      if (cm[t] === 0) continue;
      if (tm[t] === 0) {
        seen = true;
        lab[t] = TOOL;
        counts[TOOL]++;
      } else {
        const c = seen ? POST : PRE;
        lab[t] = c;
        counts[c]++;
      }
    }
  }
  return counts;
}

function checkShape(d: StepData): { T: number; nSeqs: number } {
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

/** Add one chunk of one rank's step. `keep` = keep compacted values for exact quantiles. */
export function ingestChunk(rs: RankStep, d: StepData, pool: BufPool, keep: boolean): void {
  const { T, nSeqs } = checkShape(d);
  const counts = labelTokens(d, T, nSeqs);
  rs.tokens += T;
  rs.nSeqs += nSeqs;
  rs.maskCounts.pre_tool += counts[PRE];
  rs.maskCounts.post_tool += counts[POST];
  rs.maskCounts.tool_output += counts[TOOL];
  if (rs.chunksSeen === 0 || d.rank === 0) (rs.knobs = d.knobs ?? {}), (rs.logs = d.logs ?? {});
  rs.receivedAt = rs.receivedAt || d.receivedAt;
  const { lo, hi } = clipBand(d.knobs);
  seqL = grow(seqL, 4 * nSeqs, (n) => new Float64Array(n));
  seqC = grow(seqC, 4 * nSeqs, (n) => new Float64Array(n));
  const userNames = d.sliceIds && d.sliceNames ? d.sliceNames : null;
  for (const pair of PAIRS) {
    let x = d.pairs[pair];
    const implicit = d.implicit?.includes(pair) ?? false;
    if (!x && !implicit) continue;
    if (!x) {
      // Implicit pairs are identically 0 by construction: run them through the same path.
      zeros = grow(zeros, T, (n) => new Float32Array(n));
      x = zeros.subarray(0, T);
    }
    rs.pairs.add(pair);
    if (implicit) rs.implicit.add(pair);
    const st = [rs.slice(`${pair}/pre_tool`), rs.slice(`${pair}/post_tool`), rs.slice(`${pair}/tool_output`)];
    const all = rs.slice(`${pair}/all`);
    const bufs: ValueBuf[] = st.map((s, c) => (s.buf = pool.ensure(s.buf ?? pool.get(counts[c]), counts[c])));
    const starts = bufs.map((b) => b.len);
    const nonfin = compact(x, nSeqs, d.offsets, bufs);
    for (let c = 0; c < 3; c++) {
      st[c].sums[1] += nonfin[c];
      accumulate(st[c].hist, st[c].sums, bufs[c].vals, bufs[c].bits, starts[c], bufs[c].len, lo, hi);
      addSeqParts(st[c].sums, seqL, seqC, c * nSeqs, (c + 1) * nSeqs);
    }
    addSeqParts(all.sums, seqL, seqC, 3 * nSeqs, 4 * nSeqs);
    if (userNames) ingestUser(rs, pair, x, d, userNames, pool, lo, hi, T, nSeqs);
    if (!keep) for (const s of st) if (s.buf) (pool.release(s.buf), (s.buf = null));
  }
  rs.chunksSeen++;
}

/** Copy finite values per base slice; per-sequence sums into seqL/seqC (code-major, 3 = all). */
function compact(x: Float32Array, nSeqs: number, off: Int32Array, bufs: ValueBuf[]): number[] {
  const lab = labels, L = seqL, C = seqC;
  const v0 = bufs[0].vals, v1 = bufs[1].vals, v2 = bufs[2].vals;
  let n0 = bufs[0].len, n1 = bufs[1].len, n2 = bufs[2].len;
  let f0 = 0, f1 = 0, f2 = 0;
  for (let s = 0; s < nSeqs; s++) {
    let l0 = 0, l1 = 0, l2 = 0, c0 = 0, c1 = 0, c2 = 0;
    for (let t = off[s], e = off[s + 1]; t < e; t++) {
      const c = lab[t];
      if (c === NONE) continue;
      const v = x[t];
      if (v - v !== 0) {
        // NaN or ±Inf: counted, excluded from everything else
        if (c === PRE) f0++;
        else if (c === POST) f1++;
        else f2++;
        continue;
      }
      if (c === PRE) (v0[n0++] = v), (l0 += v), c0++;
      else if (c === POST) (v1[n1++] = v), (l1 += v), c1++;
      else (v2[n2++] = v), (l2 += v), c2++;
    }
    L[s] = l0; C[s] = c0;
    L[nSeqs + s] = l1; C[nSeqs + s] = c1;
    L[2 * nSeqs + s] = l2; C[2 * nSeqs + s] = c2;
    L[3 * nSeqs + s] = l0 + l1; C[3 * nSeqs + s] = c0 + c1;
  }
  bufs[0].len = n0; bufs[1].len = n1; bufs[2].len = n2;
  return [f0, f1, f2];
}

/** User slices `user:<name>` from slice_ids: model tokens (pre_tool ∪ post_tool) with that id. */
function ingestUser(
  rs: RankStep, pair: PairName, x: Float32Array, d: StepData, names: string[], pool: BufPool,
  lo: number, hi: number, T: number, nSeqs: number,
): void {
  const ids = d.sliceIds!, lab = labels, off = d.offsets;
  const K = names.length;
  const cnt = new Float64Array(K);
  for (let t = 0; t < T; t++) if (lab[t] <= POST && ids[t] < K) cnt[ids[t]]++;
  const L = new Float64Array(K * nSeqs), C = new Float64Array(K * nSeqs);
  const states: (SliceState | null)[] = [];
  const starts: number[] = [];
  for (let k = 0; k < K; k++) {
    if (cnt[k] === 0) (states.push(null), starts.push(0));
    else {
      const s = rs.slice(`${pair}/user:${names[k]}`);
      s.buf = pool.ensure(s.buf ?? pool.get(cnt[k]), cnt[k]);
      states.push(s);
      starts.push(s.buf.len);
    }
  }
  for (let s = 0; s < nSeqs; s++) {
    for (let t = off[s]; t < off[s + 1]; t++) {
      const id = ids[t];
      if (lab[t] > POST || id >= K) continue;
      const st = states[id]!;
      const v = x[t];
      if (v - v !== 0) {
        st.sums[1]++;
        continue;
      }
      st.buf!.vals[st.buf!.len++] = v;
      L[id * nSeqs + s] += v;
      C[id * nSeqs + s]++;
    }
  }
  const { lo: _l, hi: _h } = { lo, hi };
  for (let k = 0; k < K; k++) {
    const st = states[k];
    if (!st) continue;
    accumulate(st.hist, st.sums, st.buf!.vals, st.buf!.bits, starts[k], st.buf!.len, _l, _h);
    addSeqParts(st.sums, L, C, k * nSeqs, (k + 1) * nSeqs);
  }
}
