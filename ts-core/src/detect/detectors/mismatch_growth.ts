// Train/inference mismatch (old_vs_rollout) growing against its own early, fixed baseline:
// the median of the recent steps over the median of the first `baseline_steps` steps, while still rising.
import { levelFor } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { logSlope, median, round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface MismatchGrowthOptions extends DetectorCommon {
  metric: 'abs_q99' | 'abs_q95' | 'abs_mean' | 'kl_k3';
  baseline_steps: number;
  recent_steps: number;
  /** recent / baseline. */
  ratio: Thresholds;
  /** Steps of the log-slope regression of the metric. */
  trend_steps: number;
  /** Raising needs the metric still growing at least this fast per step; holding does not, so a
   *  slow benign drift away from the early baseline does not fire but a real climb stays latched. */
  min_slope: number;
  /** Below this recent value the mismatch is negligible whatever the ratio. */
  min_value: number;
  /** The ratio divides by at least this: a baseline of float noise (rollout logprobs equal to the
   *  trainer's) would give ratios in the millions. At most min_value / ratio.high, so a negligible
   *  baseline still reads `high` once the mismatch passes min_value. */
  baseline_floor: number;
}

const sig = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(3)) : x);

export const mismatchGrowth: Detector<MismatchGrowthOptions> = {
  name: 'mismatch_growth',
  evaluate(h, r, o) {
    return perSlice(r, o, (_rec, pair, slice) => {
      const early = h.early(pair, slice, o.metric);
      if (early.length < o.baseline_steps) return undefined;
      const base = median(early.slice(0, o.baseline_steps));
      const series = h.series(pair, slice, o.metric);
      const recent = median(series.slice(-o.recent_steps).map((p) => p.value));
      const floored = base < o.baseline_floor;
      const ratio = recent / Math.max(base, o.baseline_floor, 1e-12);
      const slope = logSlope(series, o.trend_steps);
      const gate = recent >= o.min_value && slope >= o.min_slope;
      return {
        raise: gate ? levelFor(ratio, o.ratio, 'above') : 0,
        hold: recent >= o.min_value * (1 - o.clear_margin) ? levelFor(ratio, o.ratio, 'above', o.clear_margin) : 0,
        message: floored
          ? `${pair} ${slice} ${o.metric} ${round(recent)} is ${round(ratio, 2)}× the baseline floor ${o.baseline_floor} (baseline ${sig(base)})`
          : `${pair} ${slice} ${o.metric} ${round(recent)} is ${round(ratio, 2)}× its baseline ${round(base)}`,
        evidence: {
          values: { recent, baseline: base, ratio: round(ratio, 4), slope: round(slope, 5) },
          thresholds: { ratio: o.ratio, min_value: o.min_value, min_slope: o.min_slope, baseline_floor: o.baseline_floor },
          windows: { baseline: `first ${o.baseline_steps} steps`, recent: [series[Math.max(0, series.length - o.recent_steps)]?.step, r.step] },
        },
      };
    });
  },
};
