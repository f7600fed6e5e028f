// Fraction of tokens with |ℓ| beyond log C (the ratio bound C of the chosen `metric`).
import type { PairName, SliceName } from '../../types.ts';
import { recordOf } from '../history.ts';
import { levelFor } from '../levels.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Signal, Thresholds } from '../types.ts';

export interface ExceedanceOptions extends DetectorCommon {
  /** Which exceedance field: exceed_1_5, exceed_2 or exceed_3 (C = 1.5, 2, 3). */
  metric: 'exceed_1_5' | 'exceed_2' | 'exceed_3';
  /** The fraction of tokens beyond the bound. */
  fraction: Thresholds;
}

export const exceedance: Detector<ExceedanceOptions> = {
  name: 'exceedance',
  evaluate(_h, r, o) {
    const out: Signal[] = [];
    for (const pair of o.pairs)
      for (const slice of o.slices) {
        const rec = recordOf(r, pair, slice, o.min_tokens);
        if (!rec) continue;
        const v = rec[o.metric];
        out.push({
          key: `${pair}/${slice}`,
          pair: pair as PairName,
          slice: slice as SliceName,
          raise: levelFor(v, o.fraction, 'above'),
          hold: levelFor(v, o.fraction, 'above', o.clear_margin),
          message: `${pair} ${slice}: ${round(v * 100, 3)}% of tokens beyond ${o.metric.replace('exceed_', 'C=').replace('_', '.')}`,
          evidence: { values: { [o.metric]: v, n: rec.n }, thresholds: { [o.metric]: o.fraction }, windows: { step: r.step } },
        });
      }
    return out;
  },
};
