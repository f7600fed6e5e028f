// The tool fraction α = n_post_tool/(n_pre_tool+n_post_tool) rising faster than the curriculum
// allows (OLS slope per step), or above an absolute ceiling. The policy answers with `curriculum`.
import { levelFor, maxLevel } from '../levels.ts';
import { linSlope, median, round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface AlphaRampOptions extends DetectorCommon {
  /** Steps in the α slope regression. */
  rate_steps: number;
  /** α increase per step. */
  rate: Thresholds;
  /** Absolute α level (median of the last 5 steps). */
  level: Thresholds;
}

export const alphaRamp: Detector<AlphaRampOptions> = {
  name: 'alpha_ramp',
  evaluate(h, r, o) {
    const pts = h.alpha();
    if (pts.length < Math.min(o.rate_steps, 5) || pts[pts.length - 1].step !== r.step) return [];
    const rate = linSlope(pts, o.rate_steps);
    const now = median(pts.slice(-5).map((p) => p.value));
    const raise = maxLevel(levelFor(rate, o.rate, 'above'), levelFor(now, o.level, 'above'));
    const hold = maxLevel(levelFor(rate, o.rate, 'above', o.clear_margin), levelFor(now, o.level, 'above', o.clear_margin));
    return [
      {
        key: 'alpha',
        slice: 'all',
        raise,
        hold,
        message: `tool fraction α=${round(now, 3)} rising ${round(rate, 5)}/step over ${o.rate_steps} steps`,
        evidence: {
          values: { alpha: round(now, 5), rate: round(rate, 6) },
          thresholds: { rate: o.rate, level: o.level },
          windows: { steps: [pts[Math.max(0, pts.length - o.rate_steps)].step, r.step] },
        },
      },
    ];
  },
};
