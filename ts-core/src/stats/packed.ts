// A rank step ingested by a worker, as it travels back to the main thread: histograms as their non-zero
// bins, sums and band candidates as copies, the kept values as offsets into the step's shared buffer
// (which the main thread holds) or as transferred arrays (user slices' gathered values, runs).
// unpackRank rebuilds the same RankStep the in-thread ingestChunk would have built.
import type { PairName, StepData } from '../types.ts';
import { HIST_BINS } from './hist.ts';
import { RankStep, type SliceState, type StateSource } from './rankstep.ts';
import type { KeptSource } from './select.ts';
import { TopK } from './topk.ts';

interface PackedKept {
  /** Values: a byte offset into the shared buffer, or an array of their own. */
  at: number;
  own: Float32Array | null;
  len: number;
  runs: Int32Array;
  nRuns: number;
}
interface PackedSlice {
  key: string;
  bins: Uint16Array;
  counts: Float64Array;
  sums: Float64Array;
  candVals: Float32Array;
  candTags: Uint8Array;
  /** [kept index, run code] pairs. */
  srcs: number[];
}
interface PackedTop {
  pair: PairName;
  heaps: { k: number; n: number; bits: Int32Array; value: Float32Array; rank: Int32Array; seq: Int32Array; pos: Int32Array; tok: Int32Array }[];
}
export interface PackedRank {
  rank: number;
  tokens: number;
  nSeqs: number;
  maskCounts: RankStep['maskCounts'];
  clip: { lo: number; hi: number } | null;
  pairs: PairName[];
  implicit: PairName[];
  topK: number;
  slices: PackedSlice[];
  kept: PackedKept[];
  top: PackedTop[];
}

const nz = new Uint16Array(HIST_BINS);

/**
 * Worker side, after rs.finish(nz): the message and the buffers to transfer with it. `nz`: each slice's
 * non-zero bins from the fold (without it, every histogram is scanned: ~5 ns per bin, mispredicted).
 */
export function packRank(rs: RankStep, sab: SharedArrayBuffer, nzBins: Map<string, number[]> | null = null): { msg: PackedRank; transfer: ArrayBuffer[] } {
  const transfer = new Set<ArrayBuffer>();
  const keptIx = new Map<KeptSource, number>();
  const kept: PackedKept[] = [];
  const keptOf = (src: KeptSource): number => {
    let i = keptIx.get(src);
    if (i !== undefined) return i;
    const v = src.vals.vals, shared = v.buffer === (sab as unknown);
    const runs = src.runs.bits.length === src.runs.len ? src.runs.bits : src.runs.bits.slice(0, src.runs.len);
    transfer.add(runs.buffer as ArrayBuffer);
    if (!shared) transfer.add(v.buffer as ArrayBuffer);
    kept.push({ at: shared ? v.byteOffset : -1, own: shared ? null : v, len: src.vals.len, runs, nRuns: src.nRuns });
    keptIx.set(src, (i = kept.length - 1));
    return i;
  };
  const slices: PackedSlice[] = [];
  for (const [key, s] of rs.slices) {
    const h = s.hist;
    const known = nzBins?.get(key);
    let n = 0;
    if (known) nz.set(known), (n = known.length);
    else for (let b = 0; b < HIST_BINS; b++) if (h[b] !== 0) nz[n++] = b;
    const bins = nz.slice(0, n), counts = new Float64Array(n);
    for (let i = 0; i < n; i++) counts[i] = h[bins[i]];
    const srcs: number[] = [];
    for (const { src, code } of s.srcs) srcs.push(keptOf(src), code);
    slices.push({ key, bins, counts, sums: s.sums.slice(), candVals: s.cand.vals.slice(0, s.cand.n), candTags: s.cand.tags.slice(0, s.cand.n), srcs });
  }
  const top: PackedTop[] = [];
  for (const [pair, hs] of rs.top) {
    top.push({ pair, heaps: hs.map((h) => ({ k: h.k, n: h.n, bits: h.bits, value: h.value, rank: h.rank, seq: h.seq, pos: h.pos, tok: h.tok })) });
  }
  const msg: PackedRank = {
    rank: rs.rank, tokens: rs.tokens, nSeqs: rs.nSeqs, maskCounts: rs.maskCounts, clip: rs.clip,
    pairs: [...rs.pairs], implicit: [...rs.implicit], topK: rs.topK, slices, kept, top,
  };
  return { msg, transfer: [...transfer] };
}

/** Main side: the RankStep of a worker's message, its kept values viewing `sab` (released via rs.release). */
export function unpackRank(p: PackedRank, d: StepData, sab: SharedArrayBuffer, alloc: StateSource, release: () => void): RankStep {
  const rs = new RankStep(p.rank, alloc);
  Object.assign(rs, { chunksSeen: 1, chunkCount: 1, tokens: p.tokens, nSeqs: p.nSeqs, clip: p.clip, topK: p.topK, folded: true, release });
  Object.assign(rs.maskCounts, p.maskCounts);
  rs.knobs = d.knobs ?? {};
  rs.logs = d.logs ?? {};
  rs.receivedAt = d.receivedAt;
  p.pairs.forEach((x) => rs.pairs.add(x));
  p.implicit.forEach((x) => rs.implicit.add(x));
  const kept: KeptSource[] = p.kept.map((k) => {
    const vals = k.own ?? new Float32Array(sab, k.at, k.len);
    return {
      vals: { vals, bits: new Int32Array(vals.buffer, vals.byteOffset, vals.length), len: k.len },
      runs: { vals: new Float32Array(k.runs.buffer, k.runs.byteOffset, k.runs.length), bits: k.runs, len: k.runs.length },
      nRuns: k.nRuns, pooled: false,
    };
  });
  rs.kept.push(...kept);
  for (const ps of p.slices) {
    const st: SliceState = rs.slice(ps.key);
    for (let i = 0; i < ps.bins.length; i++) st.hist[ps.bins[i]] = ps.counts[i];
    st.sums.set(ps.sums);
    st.cand = { vals: ps.candVals, tags: ps.candTags, n: ps.candVals.length };
    for (let i = 0; i < ps.srcs.length; i += 2) st.srcs.push({ src: kept[ps.srcs[i]], code: ps.srcs[i + 1] });
  }
  for (const t of p.top) {
    rs.top.set(t.pair, t.heaps.map((h) => {
      const k = new TopK(h.k);
      for (const f of ['bits', 'value', 'rank', 'seq', 'pos', 'tok'] as const) k[f].set(h[f]);
      k.n = h.n;
      return k;
    }));
  }
  return rs;
}
