// One rank's tail far from the others: its q99 over the median q99 of the other ranks.
import type { PairName, SliceName } from '../../types.ts';
import { levelFor } from '../levels.ts';
import { median, round } from '../series.ts';
import type { Detector, DetectorCommon, Signal, Thresholds } from '../types.ts';

export interface RankOutlierOptions extends DetectorCommon {
  /** This rank's abs_q99 / median abs_q99 of the other ranks. */
  ratio: Thresholds;
}

export const rankOutlier: Detector<RankOutlierOptions> = {
  name: 'rank_outlier',
  evaluate(_h, r, o) {
    const out: Signal[] = [];
    if (!r.perRank || r.perRank.length < 2) return out;
    for (const pair of o.pairs)
      for (const slice of o.slices) {
        const vals = r.perRank
          .map((rk) => ({ rank: rk.rank, s: rk.pairs[pair as PairName]?.[slice] }))
          .filter((x) => x.s && x.s.n >= o.min_tokens && Number.isFinite(x.s.abs_q99));
        if (vals.length < 2) continue;
        for (const v of vals) {
          const others = median(vals.filter((x) => x.rank !== v.rank).map((x) => x.s!.abs_q99));
          const ratio = v.s!.abs_q99 / Math.max(others, 1e-12);
          out.push({
            key: `${pair}/${slice}/${v.rank}`,
            pair: pair as PairName,
            slice: slice as SliceName,
            rank: v.rank,
            raise: levelFor(ratio, o.ratio, 'above'),
            hold: levelFor(ratio, o.ratio, 'above', o.clear_margin),
            message: `rank ${v.rank} ${pair} ${slice} q99 ${round(v.s!.abs_q99)} is ${round(ratio, 2)}× the other ranks' median ${round(others)}`,
            evidence: {
              values: { ratio: round(ratio, 4), abs_q99: v.s!.abs_q99, others_median: others, per_rank: Object.fromEntries(vals.map((x) => [x.rank, x.s!.abs_q99])) },
              thresholds: { ratio: o.ratio },
              windows: { step: r.step },
            },
          });
        }
      }
    return out;
  },
};
