// A rank that did not report before the step timeout: information for the audit log.
import type { Detector, DetectorCommon } from '../types.ts';

export const rankMissing: Detector<DetectorCommon> = {
  name: 'rank_missing',
  evaluate(_h, r) {
    const missing = r.ranksMissing ?? [];
    return [
      {
        key: 'ranks',
        raise: missing.length ? 1 : 0,
        hold: missing.length ? 1 : 0,
        message: `ranks missing at step ${r.step}: ${missing.join(', ')} (present: ${r.ranksPresent.join(', ')})`,
        evidence: { values: { missing, present: r.ranksPresent, world_size: r.worldSize }, thresholds: {}, windows: { step: r.step } },
      },
    ];
  },
};
