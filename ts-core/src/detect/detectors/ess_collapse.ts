// Effective sample size collapse: token ESS/N and sequence ESS/N (Σ_t ℓ per sequence).
// Either falling below its threshold raises; the worse of the two sets the level. The level alone
// gives at most `warn`; `high` needs a fall against the run's own reference (anchored.ts).
import { anchoredChange, type AnchoredChangeOptions } from '../anchored.ts';
import { levelFor, maxLevel, minLevel } from '../levels.ts';
import { perSlice } from '../per_slice.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Thresholds } from '../types.ts';

export interface EssCollapseOptions extends DetectorCommon, AnchoredChangeOptions {
  /** Token-level ESS/N (below is bad). */
  ess: Thresholds;
  /** Sequence-level ESS/N (below is bad). */
  ess_seq: Thresholds;
}

export const essCollapse: Detector<EssCollapseOptions> = {
  name: 'ess_collapse',
  evaluate(h, r, o) {
    return perSlice(r, o, (rec, pair, slice) => {
      const a = anchoredChange(h, pair, slice, 'ess', rec.ess, 'below', o);
      const b = anchoredChange(h, pair, slice, 'ess_seq', rec.ess_seq, 'below', o);
      const lv = (m: number) =>
        maxLevel(minLevel(levelFor(rec.ess, o.ess, 'below', m), a.cap), minLevel(levelFor(rec.ess_seq, o.ess_seq, 'below', m), b.cap));
      return {
        raise: lv(0),
        hold: lv(o.clear_margin),
        message: `${pair} ${slice} ESS/N token ${round(rec.ess, 3)}, sequence ${round(rec.ess_seq, 3)}`,
        evidence: {
          values: { ess: rec.ess, ess_seq: rec.ess_seq, n: rec.n, reference: a.reference, reference_seq: b.reference, change: a.change, change_seq: b.change },
          thresholds: { ess: o.ess, ess_seq: o.ess_seq, change_ratio: o.change_ratio },
          windows: { step: r.step, reference: `first ${o.anchor_steps} steps` },
        },
      };
    });
  },
};
