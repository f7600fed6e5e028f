// Fraction of tokens with |ℓ| beyond log C (the ratio bound C of the chosen `metric`). The level
// alone gives at most `warn`; `high` needs a change against the run's own reference (anchored.ts).
import { anchoredChange, capped, type AnchoredChangeOptions } from '../anchored.ts';
import { levelFor } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface ExceedanceOptions extends DetectorCommon, AnchoredChangeOptions {
  /** Which exceedance field: exceed_1_5, exceed_2 or exceed_3 (C = 1.5, 2, 3). */
  metric: 'exceed_1_5' | 'exceed_2' | 'exceed_3';
  /** The fraction of tokens beyond the bound. */
  fraction: Thresholds;
}

export const exceedance: Detector<ExceedanceOptions> = {
  name: 'exceedance',
  evaluate(h, r, o) {
    return perSlice(r, o, (rec, pair, slice) => {
      const v = rec[o.metric];
      const a = anchoredChange(h, pair, slice, o.metric as 'exceed_2', v, 'above', o);
      return {
        raise: capped(levelFor(v, o.fraction, 'above'), a),
        hold: capped(levelFor(v, o.fraction, 'above', o.clear_margin), a),
        message: `${pair} ${slice}: ${round(v * 100, 3)}% of tokens beyond ${o.metric.replace('exceed_', 'C=').replace('_', '.')}`,
        evidence: {
          values: { [o.metric]: v, n: rec.n, reference: a.reference, change: a.change },
          thresholds: { [o.metric]: o.fraction, change_ratio: o.change_ratio },
          windows: { step: r.step, reference: `first ${o.anchor_steps} steps` },
        },
      };
    });
  },
};
