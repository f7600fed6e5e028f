// Exact per-step quantiles (docs/metrics.md "Exact quantiles"): from last step's quantiles, the band of bins
// whose values the kernel collects as it passes (so most steps select from those candidates alone), else one
// rescan of the kept values, else the histogram.
import type { PairName } from '../types.ts';
import { PAIRS } from '../types.ts';
import { HIST_BINS, HIST_LAST, histQuantiles } from './hist.ts';
import { BAND_ALL, type Band } from './kernel.ts';
import type { RankStep, SliceState } from './rankstep.ts';
import { plan, selectFromCand, selectMany, type KeptSource, type SelectSpec } from './select.ts';
import { S_ABS_MAX, S_N } from './sums.ts';

export const Q_PS = [0.5, 0.9, 0.95, 0.99, 0.999];
/**
 * Band around last step's quantiles that the kernel collects, in ranks: ±(6σ of the sample rank +
 * 2 % of the tail mass min(p, 1−p)·n), then ±2 bins. Sampling noise alone moves p99.9 of a 1e5-token
 * slice by tens of bins; in ranks the band stays a few % of the values.
 */
const bandRanks = (n: number, p: number) => 6 * Math.sqrt(n * p * (1 - p)) + 0.02 * n * Math.min(p, 1 - p);
const BAND_PAD = 2;
const BASE_BIT: Record<string, number> = { pre_tool: 1, post_tool: 2, tool_output: 4, all: BAND_ALL };
const BAND_TAB = new Uint8Array(HIST_BINS);

export class StepQuantiles {
  /** Per `${pair}/${slice}`: bin ranges [lo, hi] around last step's Q_PS ranks, predicting the next step's target bins. */
  private readonly predict = new Map<string, Int32Array>();
  /** How per-step quantiles were computed, per pair × slice (diagnostics, benchmark). */
  readonly paths = { band: 0, scan: 0, hist: 0 };

  /** Per pair: the bins around last step's quantile ranks, with which slices each serves (every rank gets the same). */
  bands(out: Map<PairName, Band>): void {
    for (const pair of PAIRS) {
      const bins: number[] = [];
      for (const [slice, bit] of Object.entries(BASE_BIT)) {
        const q = this.predict.get(`${pair}/${slice}`);
        if (!q) continue;
        for (let k = 0; k < q.length; k += 2) {
          for (let b = q[k]; b <= q[k + 1]; b++) {
            if (BAND_TAB[b] === 0) bins.push(b);
            BAND_TAB[b] |= bit;
          }
        }
      }
      if (!bins.length) continue;
      const band: Band = { bins: Int32Array.from(bins), bits: new Uint8Array(bins.length), n: bins.length };
      bins.forEach((b, i) => ((band.bits[i] = BAND_TAB[b]), (BAND_TAB[b] = 0)));
      out.set(pair, band);
    }
  }

  /**
   * abs_q* of every slice of a pair: exact by one selection pass over the kept values (pre_tool values
   * serve pre_tool and all, post_tool values post_tool and all), else from the merged histogram.
   */
  ofPair(
    band: Band | undefined, keep: boolean, ranks: RankStep[], pair: PairName, slices: string[], merged: Map<string, SliceState>, empty: SliceState,
  ): Map<string, Float64Array> {
    const out = new Map<string, Float64Array>();
    const specs: SelectSpec[] = [];
    const bit = new Map<string, number>();
    if (band) for (let i = 0; i < band.n; i++) BAND_TAB[band.bins[i]] = band.bits[i];
    for (const slice of slices) {
      const m = merged.get(`${pair}/${slice}`) ?? empty;
      const q = new Float64Array(Q_PS.length);
      out.set(slice, q);
      const n = m.sums[S_N];
      const spec: SelectSpec = { hist: m.hist, n, ps: Q_PS, out: q };
      if (!(n > 0)) histQuantiles(m.hist, Q_PS, NaN, q);
      else if (!keep) (histQuantiles(m.hist, Q_PS, m.sums[S_ABS_MAX], q), this.paths.hist++);
      else if (band && this.fromBand(spec, pair, slice, ranks)) this.paths.band++; // exact, no second pass
      else if (specs.length < 8) (bit.set(slice, 1 << specs.length), specs.push(spec), this.paths.scan++);
      else (histQuantiles(m.hist, Q_PS, m.sums[S_ABS_MAX], q), this.paths.hist++);
      if (keep && n > 0 && slice in BASE_BIT) this.predict.set(`${pair}/${slice}`, predictBins(m.hist, n));
    }
    if (band) for (let i = 0; i < band.n; i++) BAND_TAB[band.bins[i]] = 0;
    if (!specs.length) return out;
    // One entry per kept chunk: which specs each run code feeds.
    const masks = new Map<KeptSource, number[]>();
    for (const rs of ranks) {
      for (const [key, s] of rs.slices) {
        if (!s.srcs.length || !key.startsWith(`${pair}/`)) continue;
        const slice = key.slice(pair.length + 1);
        const mask = (bit.get(slice) ?? 0) | (slice === 'pre_tool' || slice === 'post_tool' ? (bit.get('all') ?? 0) : 0);
        if (!mask) continue;
        for (const { src, code } of s.srcs) {
          let m = masks.get(src);
          if (!m) masks.set(src, (m = [0, 0, 0]));
          m[code] |= mask;
        }
      }
    }
    selectMany(specs, [...masks.keys()], [...masks.values()]);
    return out;
  }

  /** Exact quantiles from the band candidates when the band (in BAND_TAB) covers every target bin. */
  private fromBand(spec: SelectSpec, pair: PairName, slice: string, ranks: RankStep[]): boolean {
    const bit = BASE_BIT[slice];
    if (!bit) return false;
    const p = plan(spec);
    for (const b of p.bins) if ((BAND_TAB[b] & bit) === 0) return false;
    const names = slice === 'all' ? ['pre_tool', 'post_tool'] : [slice];
    const sources: SliceState['cand'][] = [];
    for (const rs of ranks) for (const nm of names) { const s = rs.slices.get(`${pair}/${nm}`); if (s && s.cand.n) sources.push(s.cand); }
    return selectFromCand(spec, p, sources, sources.map(() => (slice === 'all' ? 2 : 1)));
  }
}

/** Bin ranges [lo, hi] holding ranks p·(n−1) ± bandRanks(n, p) of a histogram, for each p of Q_PS (ascending). */
function predictBins(hist: Float64Array, n: number): Int32Array {
  const out = new Int32Array(2 * Q_PS.length);
  let b = 0, cum = 0;
  const binOfRank = (r: number) => {
    if (r < cum) (b = 0), (cum = 0);
    while (b < HIST_LAST && cum + hist[b] <= r) cum += hist[b++];
    return b;
  };
  Q_PS.forEach((p, k) => {
    const r = p * (n - 1), d = bandRanks(n, p);
    out[2 * k] = Math.max(0, binOfRank(Math.max(0, Math.floor(r - d))) - BAND_PAD);
    out[2 * k + 1] = Math.min(HIST_LAST, binOfRank(Math.min(n - 1, Math.ceil(r + d))) + BAND_PAD);
  });
  return out;
}
