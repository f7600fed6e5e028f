// Fraction of tokens with |ℓ| beyond log C (the ratio bound C of the chosen `metric`).
import { levelFor } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface ExceedanceOptions extends DetectorCommon {
  /** Which exceedance field: exceed_1_5, exceed_2 or exceed_3 (C = 1.5, 2, 3). */
  metric: 'exceed_1_5' | 'exceed_2' | 'exceed_3';
  /** The fraction of tokens beyond the bound. */
  fraction: Thresholds;
}

export const exceedance: Detector<ExceedanceOptions> = {
  name: 'exceedance',
  evaluate(_h, r, o) {
    return perSlice(r, o, (rec, pair, slice) => {
      const v = rec[o.metric];
      return {
        raise: levelFor(v, o.fraction, 'above'),
        hold: levelFor(v, o.fraction, 'above', o.clear_margin),
        message: `${pair} ${slice}: ${round(v * 100, 3)}% of tokens beyond ${o.metric.replace('exceed_', 'C=').replace('_', '.')}`,
        evidence: { values: { [o.metric]: v, n: rec.n }, thresholds: { [o.metric]: o.fraction }, windows: { step: r.step } },
      };
    });
  },
};
