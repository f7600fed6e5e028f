// post_tool |ℓ| tail rising (q95/q99 log-slope) AND its shape moving against the drift-aware
// baseline, while pre_tool stays in its band. A slow benign drift moves the drift-aware baseline
// with it, and a shift of every slice is not a tool-context problem, so neither fires here.
import type { PairName } from '../../types.ts';
import { History, recordOf } from '../history.ts';
import { levelFor, maxLevel, minLevel, type Level } from '../levels.ts';
import { lastSteps, logSlopeT, median, round } from '../series.ts';
import type { Detector, DetectorCommon, Signal, Thresholds } from '../types.ts';

export interface PostToolTailGrowthOptions extends DetectorCommon {
  /** Steps in the trend regression of log q95 and log q99. */
  trend_steps: number;
  /** Per-step growth rate of the post_tool tail (the larger log-slope of q95 and q99). */
  slope: Thresholds;
  /** Raising needs the trend's t statistic (slope / standard error) at least this: small slices are noisy. */
  min_t: number;
  /** KS distance of the post_tool window against the drift-aware baseline. */
  ks: Thresholds;
  /** (q99/q50) of the window relative to the baseline's. */
  tail_stretch: Thresholds;
  /** Without window shapes: post_tool q99 (last 3 steps) over its level before the trend window. */
  fallback_rise: Thresholds;
  /** pre_tool is "in its band" while its tail slope is at most this per step ... */
  pre_tool_max_slope: number;
  /** ... and its window KS against the drift-aware baseline at most this. */
  pre_tool_max_ks: number;
}

/**
 * Growth rate of the tail: the larger log-slope of q95 and q99 — on window quantiles when stats
 * sends a window per step (steadier), else per step — and its t statistic, always from the
 * per-step quantiles (independent samples, so the t statistic means what it says).
 */
export function tailSlope(h: History, pair: string, slice: string, n: number): { slope: number; t: number; source: 'window' | 'step' } {
  const win = lastSteps(h.series(pair, slice, 'win_abs_q99'), n);
  const useWin = win.length >= Math.ceil(n / 2);
  let best = { slope: NaN, t: NaN };
  for (const q of ['abs_q95', 'abs_q99'] as const) {
    const perStep = logSlopeT(h.series(pair, slice, q), n);
    const slope = useWin ? logSlopeT(h.series(pair, slice, `win_${q}`), n).slope : perStep.slope;
    if (Number.isFinite(slope) && !(slope <= best.slope)) best = { slope, t: perStep.t };
  }
  return { ...best, source: useWin ? 'window' : 'step' };
}

function shapeOf(h: History, pair: string, slice: string, o: PostToolTailGrowthOptions, margin: number) {
  const w = h.window(pair, slice);
  const d = w?.shape?.drift_aware;
  if (d) {
    const lv = maxLevel(levelFor(d.ks, o.ks, 'above', margin), levelFor(d.tail_stretch, o.tail_stretch, 'above', margin));
    return { level: lv, source: 'window', ks: d.ks, tail_stretch: d.tail_stretch, w1_log: d.w1_log, window: [w!.first_step, w!.step] };
  }
  // No window shape from stats: compare the recent tail with the level before the trend window.
  const q99 = h.series(pair, slice, 'abs_q99');
  const q50 = h.series(pair, slice, 'abs_q50');
  const ref = q99.slice(-(o.trend_steps + 20), -o.trend_steps);
  if (ref.length < 5) return { level: 0 as Level, source: 'history', window: null };
  const ratio = (a: number[], b: number[]) => a.map((x, i) => x / Math.max(b[i], 1e-12));
  const rise = median(q99.slice(-3).map((p) => p.value)) / Math.max(median(ref.map((p) => p.value)), 1e-12);
  const refQ50 = q50.slice(-(o.trend_steps + 20), -o.trend_steps);
  const stretch =
    median(ratio(q99.slice(-3).map((p) => p.value), q50.slice(-3).map((p) => p.value))) /
    Math.max(median(ratio(ref.map((p) => p.value), refQ50.map((p) => p.value))), 1e-12);
  const lv = maxLevel(levelFor(rise, o.fallback_rise, 'above', margin), levelFor(stretch, o.tail_stretch, 'above', margin));
  return { level: lv, source: 'history', rise, tail_stretch: stretch, window: [ref[0].step, q99[q99.length - 1].step] };
}

export const postToolTailGrowth: Detector<PostToolTailGrowthOptions> = {
  name: 'post_tool_tail_growth',
  evaluate(h, r, o) {
    const out: Signal[] = [];
    for (const pair of o.pairs) {
      const post = recordOf(r, pair, 'post_tool', o.min_tokens);
      if (!post) continue;
      const { slope, t, source } = tailSlope(h, pair, 'post_tool', o.trend_steps);
      if (!Number.isFinite(slope)) continue;
      const preSlope = tailSlope(h, pair, 'pre_tool', o.trend_steps).slope;
      const preKs = h.window(pair, 'pre_tool')?.shape?.drift_aware?.ks;
      const preInBand =
        !(Number.isFinite(preSlope) && preSlope > o.pre_tool_max_slope) && !(preKs !== undefined && preKs > o.pre_tool_max_ks);
      const shape = shapeOf(h, pair, 'post_tool', o, 0);
      const shapeHold = shapeOf(h, pair, 'post_tool', o, o.clear_margin);
      const raise = preInBand && t >= o.min_t ? minLevel(levelFor(slope, o.slope, 'above'), shape.level) : 0;
      const hold = minLevel(levelFor(slope, o.slope, 'above', o.clear_margin), shapeHold.level);
      out.push({
        key: pair,
        pair: pair as PairName,
        slice: 'post_tool',
        raise,
        hold,
        message:
          `${pair} post_tool |ℓ| tail growing ${round(slope * 100, 2)}%/step over ${o.trend_steps} steps ` +
          `(q99 ${round(post.abs_q99)}), shape vs drift-aware baseline ${shape.source === 'window' ? `KS ${round(shape.ks as number, 3)}, ` : ''}` +
          `tail stretch ${round(shape.tail_stretch as number, 3)}; pre_tool ${preInBand ? 'within its band' : 'also moving'}`,
        evidence: {
          values: {
            slope: round(slope, 5),
            slope_t: round(t, 2),
            slope_source: source,
            post_q95: post.abs_q95,
            post_q99: post.abs_q99,
            ks: shape.ks,
            tail_stretch: shape.tail_stretch,
            w1_log: shape.w1_log,
            rise: shape.rise,
            pre_tool_slope: Number.isFinite(preSlope) ? round(preSlope, 5) : null,
            pre_tool_ks: preKs ?? null,
          },
          thresholds: { slope: o.slope, min_t: o.min_t, ks: o.ks, tail_stretch: o.tail_stretch, pre_tool_max_slope: o.pre_tool_max_slope, pre_tool_max_ks: o.pre_tool_max_ks },
          windows: { current: shape.window, baseline: shape.source === 'window' ? 'drift_aware' : 'pre_trend_steps', trend_steps: o.trend_steps },
        },
      });
    }
    return out;
  },
};
