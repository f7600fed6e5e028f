// NaN/Inf in any watched pair (or in the trainer's own loss/grad_norm): critical at once.
import type { PairName } from '../../types.ts';
import type { Detector, DetectorCommon, Signal } from '../types.ts';

export interface NonfiniteOptions extends DetectorCommon {
  /** Trainer log scalars that must stay finite. */
  logs: string[];
}

export const nonfinite: Detector<NonfiniteOptions> = {
  name: 'nonfinite',
  evaluate(_h, r, o) {
    const out: Signal[] = [];
    for (const pair of o.pairs) {
      const recs = r.records.filter((x) => x.pair === pair && o.slices.includes(x.slice));
      if (!recs.length) continue;
      const bad = recs.filter((x) => x.nonfinite > 0);
      const count = Math.max(0, ...bad.map((x) => x.nonfinite));
      const lv = bad.length ? 4 : 0;
      out.push({
        key: pair,
        pair: pair as PairName,
        slice: bad[0]?.slice ?? 'all',
        raise: lv,
        hold: lv,
        message: `${pair}: ${count} non-finite log-ratios (NaN/Inf) in ${bad.map((x) => x.slice).join(', ') || 'no slice'}`,
        evidence: { values: Object.fromEntries(recs.map((x) => [x.slice, x.nonfinite])), thresholds: { nonfinite: 0 }, windows: { step: r.step } },
      });
    }
    const badLogs = o.logs.filter((k) => typeof r.logs?.[k] === 'number' && !Number.isFinite(r.logs[k]));
    const present = o.logs.filter((k) => typeof r.logs?.[k] === 'number');
    if (present.length) {
      const lv = badLogs.length ? 4 : 0;
      out.push({
        key: 'logs',
        raise: lv,
        hold: lv,
        message: `trainer logs not finite: ${badLogs.join(', ')}`,
        evidence: { values: Object.fromEntries(present.map((k) => [k, String(r.logs[k])])), thresholds: { finite: o.logs }, windows: { step: r.step } },
      });
    }
    return out;
  },
};
