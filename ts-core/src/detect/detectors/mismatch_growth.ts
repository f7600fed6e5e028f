// Train/inference mismatch (old_vs_rollout) growing in one slice beyond what the background does.
// A slice's growth is its recent median over the median of its first `baseline_steps` steps; the
// pre_tool slice's growth over the same steps is the background's (a bf16 rollout's mismatch grows
// on every token as the policy sharpens) and is divided out, as is its log-slope from the trend:
// a common scale drift cancels (DESIGN.md §5), a change concentrated in post_tool does not, and the
// all-token view moves only when the concentrated part is large enough to move its tail. The
// background is only divided out when it grows (pre_tool falling does not make another slice
// grow). Without pre_tool tokens the slice's own growth is read (not drift-free).
import { levelFor } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { logSlope, median, round, type Point } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';
import type { History } from '../history.ts';

export interface MismatchGrowthOptions extends DetectorCommon {
  metric: 'abs_q99' | 'abs_q95' | 'abs_mean' | 'kl_k3';
  baseline_steps: number;
  recent_steps: number;
  /** (slice recent / baseline) over (pre_tool recent / baseline, at least 1). */
  ratio: Thresholds;
  /** Steps of the log-slope regression of the metric. */
  trend_steps: number;
  /** Raising needs the slice still growing at least this much faster per step than pre_tool;
   *  holding does not, so a real climb stays latched once it levels off. */
  min_slope: number;
  /** Below this recent value the mismatch is negligible whatever the ratio. */
  min_value: number;
  /** Every level is read as at least this: a float-noise baseline (rollout logprobs equal to the
   *  trainer's) would give ratios in the millions. At most min_value / ratio.high, so a negligible
   *  baseline still reads `high` once the mismatch passes min_value. */
  baseline_floor: number;
}

const sig = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(3)) : x);

interface Growth {
  base: number;
  recent: number;
  growth: number;
  slope: number;
}

/** One slice's growth over its early baseline, on the steps of `steps` (all steps when absent). */
function growthOf(h: History, pair: string, slice: string, o: MismatchGrowthOptions, steps?: Set<number>): Growth | undefined {
  const early = h.early(pair, slice, o.metric);
  if (early.length < o.baseline_steps) return undefined;
  const base = median(early.slice(0, o.baseline_steps));
  const series = h.series(pair, slice, o.metric);
  const pts: Point[] = steps ? series.filter((p) => steps.has(p.step)) : series.slice(-o.recent_steps);
  if (!pts.length) return undefined;
  const recent = median(pts.map((p) => p.value));
  const growth = Math.max(recent, o.baseline_floor) / Math.max(base, o.baseline_floor, 1e-12);
  return { base, recent, growth, slope: logSlope(series, o.trend_steps) };
}

export const mismatchGrowth: Detector<MismatchGrowthOptions> = {
  name: 'mismatch_growth',
  evaluate(h, r, o) {
    return perSlice(r, o, (_rec, pair, slice) => {
      const own = growthOf(h, pair, slice, o);
      if (!own) return undefined;
      const series = h.series(pair, slice, o.metric);
      const recentSteps = series.slice(-o.recent_steps);
      const bg = slice === 'pre_tool' ? undefined : growthOf(h, pair, 'pre_tool', o, new Set(recentSteps.map((p) => p.step)));
      const bgGrowth = bg ? Math.max(1, bg.growth) : 1;
      const bgSlope = bg && Number.isFinite(bg.slope) ? Math.max(0, bg.slope) : 0;
      const ratio = own.growth / bgGrowth;
      const slope = own.slope - bgSlope;
      const gate = own.recent >= o.min_value && slope >= o.min_slope;
      const floored = own.base < o.baseline_floor;
      const against = bgGrowth > 1 ? `; pre_tool grew ${round(bgGrowth, 2)}× (divided out)` : '';
      return {
        raise: gate ? levelFor(ratio, o.ratio, 'above') : 0,
        hold: own.recent >= o.min_value * (1 - o.clear_margin) ? levelFor(ratio, o.ratio, 'above', o.clear_margin) : 0,
        message:
          (floored
            ? `${pair} ${slice} ${o.metric} ${round(own.recent)} is ${round(own.growth, 2)}× the baseline floor ${o.baseline_floor} (baseline ${sig(own.base)})`
            : `${pair} ${slice} ${o.metric} ${round(own.recent)} is ${round(own.growth, 2)}× its baseline ${round(own.base)}`) + against,
        evidence: {
          values: {
            recent: own.recent,
            baseline: own.base,
            ratio: round(ratio, 4),
            growth: round(own.growth, 4),
            background_growth: bg ? round(bg.growth, 4) : null,
            slope: round(slope, 5),
            pre_tool_recent: bg?.recent ?? null,
          },
          thresholds: { ratio: o.ratio, min_value: o.min_value, min_slope: o.min_slope, baseline_floor: o.baseline_floor },
          windows: { baseline: `first ${o.baseline_steps} steps`, recent: [recentSteps[0]?.step, r.step] },
        },
      };
    });
  },
};
