// Effective sample size collapse: token ESS/N and sequence ESS/N (Σ_t ℓ per sequence).
// Either falling below its threshold raises; the worse of the two sets the level.
import { levelFor, maxLevel } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface EssCollapseOptions extends DetectorCommon {
  /** Token-level ESS/N (below is bad). */
  ess: Thresholds;
  /** Sequence-level ESS/N (below is bad). */
  ess_seq: Thresholds;
}

export const essCollapse: Detector<EssCollapseOptions> = {
  name: 'ess_collapse',
  evaluate(_h, r, o) {
    return perSlice(r, o, (rec, pair, slice) => ({
      raise: maxLevel(levelFor(rec.ess, o.ess, 'below'), levelFor(rec.ess_seq, o.ess_seq, 'below')),
      hold: maxLevel(levelFor(rec.ess, o.ess, 'below', o.clear_margin), levelFor(rec.ess_seq, o.ess_seq, 'below', o.clear_margin)),
      message: `${pair} ${slice} ESS/N token ${round(rec.ess, 3)}, sequence ${round(rec.ess_seq, 3)}`,
      evidence: {
        values: { ess: rec.ess, ess_seq: rec.ess_seq, n: rec.n },
        thresholds: { ess: o.ess, ess_seq: o.ess_seq },
        windows: { step: r.step },
      },
    }));
  },
};
