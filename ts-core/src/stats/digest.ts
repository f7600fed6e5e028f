// Run-level t-digests (npm `tdigest`) fed from histogram bins with push_centroid.
// Traps handled here: compress() draws from Math.random (replaced by a seeded PRNG so results are
// reproducible), push(Float32Array) adds one value (we never push arrays), and a digest cannot
// forget (it is run-level only; windows use histogram rings).
import tdigestPkg from 'tdigest';
import { HIST_BINS, HIST_EDGES, HIST_LAST, HIST_MANT_BITS } from './hist.ts';
import { mulberry32 } from '../util/prng.ts';

const { TDigest } = tdigestPkg as { TDigest: new (delta?: number, K?: number, CX?: number) => TDigestLike };

interface Centroid { mean: number; n: number }
export interface TDigestLike {
  n: number;
  compressing?: boolean;
  push_centroid(c: Centroid | Centroid[]): void;
  percentile(p: number | number[]): number | number[] | undefined;
  toArray(): Centroid[];
  reset(): void;
  size(): number;
  compress(): void;
  _cumulate(exact: boolean): void;
  _new_centroid(x: number, n: number, cumn: number): unknown;
}

export { mulberry32 }; // for tests and benches that seed like the digest

export class RunDigest {
  readonly td: TDigestLike;
  private rng: () => number;

  constructor(seed = 1, delta = 0.01) {
    this.td = new TDigest(delta, 25, 1.1);
    this.rng = mulberry32(seed);
    const td = this.td;
    const rng = this.rng;
    // Same algorithm as TDigest.prototype.compress, with the shuffle drawn from our PRNG.
    td.compress = function compress(this: TDigestLike) {
      if (this.compressing) return;
      const points = this.toArray();
      this.reset();
      this.compressing = true;
      while (points.length > 0) this.push_centroid(points.splice(Math.floor(rng() * points.length), 1)[0]);
      this._cumulate(true);
      this.compressing = false;
    }.bind(td);
  }

  /**
   * Feed a histogram: one centroid per non-empty group of bins (8 groups per octave, whatever
   * HIST_MANT_BITS is), at the count-weighted mean of the bin midpoints (top bin: up to maxAbs).
   * tdigest's push_centroid re-cumulates as n grows, so its cost is about quadratic in the centroids
   * pushed at once: 2k centroids took ~25 ms per window boundary and pair × slice, 8 per octave ~1 ms.
   */
  pushHist(hist: Float64Array, maxAbs: number): void {
    const G = Math.max(1, 1 << (HIST_MANT_BITS - 3));
    const mid = (b: number) => 0.5 * (HIST_EDGES[b] + (b === HIST_LAST ? Math.max(maxAbs, HIST_EDGES[b]) : HIST_EDGES[b + 1]));
    const push = (from: number, to: number) => {
      let n = 0, s = 0;
      for (let b = from; b < to; b++) if (hist[b] !== 0) (n += hist[b]), (s += hist[b] * mid(b));
      if (n > 0) this.td.push_centroid({ mean: s / n, n });
    };
    push(0, 1);
    for (let b = 1; b < HIST_LAST; b += G) push(b, Math.min(b + G, HIST_LAST));
    push(HIST_LAST, HIST_BINS);
  }

  quantile(p: number): number {
    const q = this.td.size() ? (this.td.percentile(p) as number) : NaN;
    return q ?? NaN;
  }

  toJSON(): { c: [number[], number[]] } {
    const arr = this.td.toArray();
    return { c: [arr.map((c) => c.mean), arr.map((c) => c.n)] };
  }

  /** Rebuild exactly: centroids are re-inserted as they were, without re-clustering. */
  static fromJSON(j: { c: [number[], number[]] }, seed = 1): RunDigest {
    const d = new RunDigest(seed);
    const [means, ns] = j.c;
    for (let i = 0; i < means.length; i++) d.td._new_centroid(means[i], ns[i], 0);
    d.td._cumulate(true);
    return d;
  }
}
