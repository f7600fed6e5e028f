// A run's rolling windows, one per pair × slice (window.ts): each final step's merged slices go in, window
// records (CDF, shape change against the fixed and drift-aware baselines, attribution of `all`) come out.
import type { PairName, SliceName, WindowRecord } from '../types.ts';
import type { SliceState } from './rankstep.ts';
import { CDF_GRID, GRID_I50, GRID_I90, GRID_I95, GRID_I99, GRID_I999, attribution, shapeChange } from './shape.ts';
import { S_ABS_MAX, S_N, S_SUM_ABS } from './sums.ts';
import { WindowState, type WindowOpts } from './window.ts';

export const BUILTIN = ['all', 'pre_tool', 'post_tool', 'tool_output'] as const;

export class RunWindows {
  /** `${pair}/${slice}` → its window; state.json holds them (RunStats.snapshot). */
  readonly map = new Map<string, WindowState>();
  constructor(private readonly opts: WindowOpts) {}

  private window(key: string): WindowState {
    let w = this.map.get(key);
    if (!w) this.map.set(key, (w = new WindowState(this.opts)));
    return w;
  }

  /** Push one final step's merged slices of `pair` into their windows; their records go to `out`. */
  update(step: number, pair: PairName, merged: Map<string, SliceState>, user: string[], out: WindowRecord[], empty: SliceState): void {
    const slices = [...BUILTIN, ...user, ...[...this.map.keys()].filter((k) => k.startsWith(`${pair}/user:`)).map((k) => k.slice(pair.length + 1))];
    const done = new Set<string>();
    const recs: WindowRecord[] = [];
    for (const slice of slices) {
      const key = `${pair}/${slice}`;
      if (done.has(key)) continue;
      done.add(key);
      const m = merged.get(key) ?? empty;
      const w = this.window(key);
      w.push(step, m.hist, m.sums[S_N], m.sums[S_SUM_ABS], m.sums[S_N] > 0 ? m.sums[S_ABS_MAX] : 0);
      if (w.winN === 0) {
        w.atBoundary(new Float64Array(CDF_GRID.length));
        continue;
      }
      const cdf = w.cdf();
      const K = this.opts.fixedBaselineWindows, W = this.opts.window;
      const shape: WindowRecord['shape'] = {};
      if (w.fixedQ && w.steps > W * K) shape.fixed = shapeChange(cdf, w.fixedQ);
      if (w.ewmaQ) shape.drift_aware = shapeChange(cdf, w.ewmaQ);
      w.atBoundary(cdf);
      const rec: WindowRecord = {
        step, first_step: w.firstStep, pair, slice: slice as SliceName, n: w.winN, alpha: NaN,
        abs_q50: cdf[GRID_I50], abs_q90: cdf[GRID_I90], abs_q95: cdf[GRID_I95], abs_q99: cdf[GRID_I99], abs_q999: cdf[GRID_I999],
        cdf: { p: [...CDF_GRID], q: [...cdf] },
      };
      if (shape.fixed || shape.drift_aware) rec.shape = shape;
      recs.push(rec);
    }
    const pre = this.map.get(`${pair}/pre_tool`)!, post = this.map.get(`${pair}/post_tool`)!;
    const alpha = pre.winN + post.winN > 0 ? post.winN / (pre.winN + post.winN) : NaN;
    for (const r of recs) {
      r.alpha = alpha;
      if (r.slice === 'all' && this.map.get(`${pair}/all`)!.fixedReady && pre.fixedReady && post.fixedReady) {
        const a0 = pre.fixedN + post.fixedN > 0 ? post.fixedN / (pre.fixedN + post.fixedN) : 0;
        r.attribution = attribution(
          a0, pre.fixedSumAbs / pre.fixedN, post.fixedSumAbs / post.fixedN,
          Number.isFinite(alpha) ? alpha : 0, pre.winSumAbs / pre.winN, post.winSumAbs / post.winN,
        );
      }
      out.push(r);
    }
  }
}
