// Forensics (DESIGN §4): the top-k tokens by |ℓ| per pair × slice × step, with where they sit (trainer
// rank, sequence index within the rank's step, position within the sequence) and their token id when the
// shim sends `token_ids`. Findings carry them as `evidence.top_tokens`, so a user sees which tool turn a tail
// comes from.
//
// Cost: one extra pass per pair over the step's runs that compares the float32 bits of |ℓ| with the
// heap's minimum (an integer compare; bits order like values for |ℓ| ≥ 0). A token enters the bounded
// min-heap only when it beats the current k-th largest, about k·ln(n/k) times in n tokens, so the pass is
// one load, one mask and one compare per token. Non-finite values are excluded (the non-finite count
// reports them). The kernel (kernel.ts) is not touched.
import type { PairName, TopToken } from '../types.ts';
import type { Runs } from './kernel.ts';

export const TOPK_DEFAULT = 8;
const ABS = 0x7fffffff, INF_BITS = 0x7f800000;

/** A bounded min-heap of the k largest |ℓ| seen (ties: the earlier rank/seq/pos wins). */
export class TopK {
  readonly k: number;
  n = 0;
  readonly bits: Int32Array; // |ℓ| as float32 bits
  readonly value: Float32Array;
  readonly rank: Int32Array;
  readonly seq: Int32Array;
  readonly pos: Int32Array;
  readonly tok: Int32Array; // −1: no token id
  constructor(k: number) {
    this.k = k;
    this.bits = new Int32Array(k);
    this.value = new Float32Array(k);
    this.rank = new Int32Array(k);
    this.seq = new Int32Array(k);
    this.pos = new Int32Array(k);
    this.tok = new Int32Array(k);
  }

  /** Smallest |ℓ| bits a new token must beat (−1 while not full: anything finite enters). */
  get floor(): number {
    return this.n < this.k ? -1 : this.bits[0];
  }

  /** i is a worse entry than j (smaller |ℓ|, or equal |ℓ| and later rank/seq/pos). */
  private worse(i: number, j: number): boolean {
    if (this.bits[i] !== this.bits[j]) return this.bits[i] < this.bits[j];
    if (this.rank[i] !== this.rank[j]) return this.rank[i] > this.rank[j];
    if (this.seq[i] !== this.seq[j]) return this.seq[i] > this.seq[j];
    return this.pos[i] > this.pos[j];
  }

  private swap(i: number, j: number): void {
    for (const a of [this.bits, this.rank, this.seq, this.pos, this.tok]) {
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    const v = this.value[i];
    this.value[i] = this.value[j];
    this.value[j] = v;
  }

  /** Offer one token; kept when the heap has room or it beats the current worst entry. */
  offer(bits: number, value: number, rank: number, seq: number, pos: number, tok: number): void {
    if (this.k === 0) return;
    let i: number;
    if (this.n < this.k) {
      i = this.n++;
    } else {
      // compare with the root (worst) using the same total order
      const b0 = this.bits[0];
      if (bits < b0 || (bits === b0 && !tieBetter(rank, seq, pos, this.rank[0], this.seq[0], this.pos[0]))) return;
      i = 0;
    }
    this.bits[i] = bits;
    this.value[i] = value;
    this.rank[i] = rank;
    this.seq[i] = seq;
    this.pos[i] = pos;
    this.tok[i] = tok;
    if (i === 0 && this.n === this.k) this.siftDown(0);
    else this.siftUp(i);
  }

  private siftUp(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.worse(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  private siftDown(i: number): void {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < this.n && this.worse(l, m)) m = l;
      if (r < this.n && this.worse(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  /** Merge another heap's entries (other ranks, or pre_tool into all). */
  merge(o: TopK): void {
    for (let i = 0; i < o.n; i++) this.offer(o.bits[i], o.value[i], o.rank[i], o.seq[i], o.pos[i], o.tok[i]);
  }

  reset(): this {
    this.n = 0;
    return this;
  }

  /** Entries best first. */
  list(): TopToken[] {
    const idx = [...Array(this.n).keys()].sort((a, b) => (this.worse(a, b) ? 1 : this.worse(b, a) ? -1 : 0));
    return idx.map((i) => {
      const t: TopToken = { rank: this.rank[i], seq: this.seq[i], pos: this.pos[i], value: this.value[i] };
      if (this.tok[i] >= 0) t.token_id = this.tok[i];
      return t;
    });
  }
}

function tieBetter(r: number, s: number, p: number, r0: number, s0: number, p0: number): boolean {
  return r !== r0 ? r < r0 : s !== s0 ? s < s0 : p < p0;
}

/**
 * One pass over a chunk's runs (start, end, code, seq): each finite token of base slice `code` (0..2) is
 * offered to heaps[code]. `seqBase` = sequences of this rank's step before the chunk; `offsets` locate
 * positions within sequences; `tokenIds` (optional) names the tokens.
 */
export function scanTopK(
  x: Float32Array, bits: Int32Array, R: Runs, offsets: Int32Array, seqBase: number, rank: number,
  heaps: TopK[], tokenIds: Int32Array | undefined,
): void {
  if (heaps[0].k === 0) return;
  const runs = R.runs, nr = R.n;
  for (let ri = 0; ri < nr; ri++) {
    const o4 = ri << 2, code = runs[o4 + 2];
    if (code > 2) continue;
    const h = heaps[code];
    let floor = h.floor;
    const end = runs[o4 + 1], q = runs[o4 + 3];
    let i = runs[o4];
    for (;;) {
      // The common path, four tokens at a time without a branch each: every floor − |ℓ| ≥ 0 means none beats
      // the floor (floor ≥ −1 and |ℓ| bits ≤ 2^31 − 1, so the differences fit in int32).
      while (i + 4 <= end && ((floor - (bits[i] & ABS)) | (floor - (bits[i + 1] & ABS)) | (floor - (bits[i + 2] & ABS)) | (floor - (bits[i + 3] & ABS))) >= 0) i += 4;
      if (i >= end) break;
      const stop = Math.min(i + 4, end);
      for (; i < stop; i++) {
        const b = bits[i] & ABS;
        if (b <= floor || b >= INF_BITS) continue;
        h.offer(b, x[i], rank, seqBase + q, i - offsets[q], tokenIds ? tokenIds[i] : -1);
        floor = h.floor;
      }
    }
  }
}

/** Per pair: heaps for pre_tool, post_tool, tool_output of one rank's step. */
export type RankTop = Map<PairName, TopK[]>;

export function rankHeaps(top: RankTop, pair: PairName, k: number): TopK[] {
  let h = top.get(pair);
  if (!h) top.set(pair, (h = [new TopK(k), new TopK(k), new TopK(k)]));
  return h;
}

const BASE = ['pre_tool', 'post_tool', 'tool_output'] as const;

/**
 * A final step's lists: per `${pair}/${slice}` merged over ranks (`all` = pre_tool ∪ post_tool), and the same
 * per rank. Only slices with at least one finite token get a list.
 */
export function mergeTopTokens(ranks: readonly { rank: number; top: RankTop }[], k: number): {
  merged: Record<string, TopToken[]>; byRank: Record<number, Record<string, TopToken[]>>;
} {
  const merged: Record<string, TopToken[]> = {}, byRank: Record<number, Record<string, TopToken[]>> = {};
  const acc = new Map<string, TopK>();
  const heap = (key: string) => {
    let h = acc.get(key);
    if (!h) acc.set(key, (h = new TopK(k)));
    return h;
  };
  for (const rs of ranks) {
    const mine: Record<string, TopToken[]> = {};
    for (const [pair, hs] of rs.top) {
      const all = new TopK(k);
      hs.forEach((h, c) => {
        if (!h.n) return;
        mine[`${pair}/${BASE[c]}`] = h.list();
        heap(`${pair}/${BASE[c]}`).merge(h);
        if (c < 2) all.merge(h), heap(`${pair}/all`).merge(h);
      });
      if (all.n) mine[`${pair}/all`] = all.list();
    }
    byRank[rs.rank] = mine;
  }
  for (const [key, h] of acc) merged[key] = h.list();
  return { merged, byRank };
}
