// One rank far from the others, per pair × slice: its mean |ℓ| and its q99 over the median of the
// other ranks'. Mean |ℓ| is the steady reading (a whole-rank scale fault); q99 catches a fault in
// the rank's tail only, with looser thresholds because one rank's q99 is noisy.
import type { PairName, SliceName } from '../../types.ts';
import { levelFor, maxLevel } from '../levels.ts';
import { median, round } from '../series.ts';
import type { Detector, DetectorCommon, Signal, Thresholds } from '../types.ts';

export interface RankOutlierOptions extends DetectorCommon {
  /** This rank's abs_q99 / median abs_q99 of the other ranks. */
  ratio: Thresholds;
  /** This rank's abs_mean / median abs_mean of the other ranks. */
  mean_ratio: Thresholds;
  /** The q99 ratio is read only where every compared rank has at least this many tokens (q99 of a few hundred is noise). */
  q99_min_tokens: number;
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
          .filter((x) => x.s && x.s.n >= o.min_tokens && Number.isFinite(x.s.abs_q99) && Number.isFinite(x.s.abs_mean));
        if (vals.length < 2) continue;
        for (const v of vals) {
          const others = median(vals.filter((x) => x.rank !== v.rank).map((x) => x.s!.abs_q99));
          const ratio = v.s!.abs_q99 / Math.max(others, 1e-12);
          const othersMean = median(vals.filter((x) => x.rank !== v.rank).map((x) => x.s!.abs_mean));
          const meanRatio = v.s!.abs_mean / Math.max(othersMean, 1e-12);
          const tailOk = vals.every((x) => x.s!.n >= o.q99_min_tokens);
          const lv = (m: number) => maxLevel(tailOk ? levelFor(ratio, o.ratio, 'above', m) : 0, levelFor(meanRatio, o.mean_ratio, 'above', m));
          out.push({
            key: `${pair}/${slice}/${v.rank}`,
            pair: pair as PairName,
            slice: slice as SliceName,
            rank: v.rank,
            raise: lv(0),
            hold: lv(o.clear_margin),
            message: `rank ${v.rank} ${pair} ${slice}: mean |ℓ| ${round(meanRatio, 2)}×, q99 ${round(ratio, 2)}× the other ranks' median (q99 ${round(v.s!.abs_q99)} vs ${round(others)})`,
            evidence: {
              values: {
                ratio: round(ratio, 4),
                mean_ratio: round(meanRatio, 4),
                abs_q99: v.s!.abs_q99,
                abs_mean: v.s!.abs_mean,
                others_median: others,
                others_mean_median: othersMean,
                per_rank: Object.fromEntries(vals.map((x) => [x.rank, x.s!.abs_q99])),
              },
              thresholds: { ratio: o.ratio, mean_ratio: o.mean_ratio },
              windows: { step: r.step },
            },
          });
        }
      }
    return out;
  },
};
