// post_tool |ℓ| tail growing against pre_tool, accumulated over steps (CUSUM, cusum.ts).
// Per pair and tail quantile q (q99, q999): x = log q_post − log q_pre. A drift of the scale of
// every slice cancels in the difference; α moving tokens between slices does not change either
// slice's law (only its noise, which v = 1/n_post + 1/n_pre follows). The reference is the run's
// own first `anchor_steps` steps and adapts far slower than the growth we look for, so slow growth
// accumulates evidence instead of being absorbed. Without pre_tool tokens the within-slice shape
// log(q/q50) of post_tool stands in (scale-free, not drift-free).
import type { MetricRecord, PairName } from '../../types.ts';
import { updateCusum, type CusumOptions, type CusumReading } from '../cusum.ts';
import { recordOf } from '../history.ts';
import { levelFor, maxLevel, type Level } from '../levels.ts';
import { round } from '../series.ts';
import type { Detector, DetectorCommon, Signal, Thresholds } from '../types.ts';

export type TailQuantile = 'abs_q95' | 'abs_q99' | 'abs_q999';

export interface PostToolTailGrowthOptions extends DetectorCommon, CusumOptions {
  /** Tail quantiles watched, each with its own evidence. */
  quantiles: TailQuantile[];
  /** A quantile p is read only when the slice has n·(1−p) ≥ this many tokens beyond it. */
  min_tail_tokens: number;
  /** The accumulated evidence S (in noise sd), per severity. */
  evidence: Thresholds;
  /**
   * A post_tool tail quantile below this |ℓ| is reported at most as `info`: importance ratios within
   * e^±min_abs cannot move an update (bf16 rounding on a healthy run grows the contrast at |ℓ| ~ 0.02).
   */
  min_abs: number;
}

const P: Record<TailQuantile, number> = { abs_q95: 0.95, abs_q99: 0.99, abs_q999: 0.999 };
const lg = (x: number) => (x > 0 ? Math.log(x) : NaN);

interface QuantileEvidence {
  quantile: TailQuantile;
  mode: 'contrast' | 'shape';
  reading: CusumReading;
  raise: Level;
  hold: Level;
}

function readQuantile(pair: string, q: TailQuantile, post: MetricRecord, pre: MetricRecord | undefined, h: Parameters<Detector['evaluate']>[0], step: number, o: PostToolTailGrowthOptions): QuantileEvidence | undefined {
  const tail = (n: number) => n * (1 - P[q]) >= o.min_tail_tokens;
  if (!tail(post.n)) return undefined;
  const contrast = pre !== undefined && tail(pre.n);
  const x = contrast ? lg(post[q]) - lg(pre![q]) : lg(post[q]) - lg(post.abs_q50);
  const v = 1 / post.n + (contrast ? 1 / pre!.n : 0);
  const mode = contrast ? 'contrast' : 'shape';
  const reading = updateCusum(h.cusum(`post_tool_tail_growth/${pair}/${q}/${mode}`), step, x, v, o);
  if (!reading.ready) return undefined;
  // Evidence keeps accumulating under the floor, so a tail that crosses it is reported at once.
  const cap = (l: Level): Level => (post[q] >= (o.min_abs ?? 0) ? l : (Math.min(l, 1) as Level));
  return { quantile: q, mode, reading, raise: cap(levelFor(reading.s, o.evidence, 'above')), hold: cap(levelFor(reading.s, o.evidence, 'above', o.clear_margin)) };
}

export const postToolTailGrowth: Detector<PostToolTailGrowthOptions> = {
  name: 'post_tool_tail_growth',
  evaluate(h, r, o) {
    const out: Signal[] = [];
    for (const pair of o.pairs) {
      const post = recordOf(r, pair, 'post_tool', o.min_tokens);
      if (!post) continue;
      const pre = recordOf(r, pair, 'pre_tool', o.min_tokens);
      const ev = o.quantiles.map((q) => readQuantile(pair, q, post, pre, h, r.step, o)).filter((e): e is QuantileEvidence => !!e);
      // pre_tool against its own anchor: only to say whether the tail moves in post_tool alone.
      const preQ = o.quantiles[0];
      const preRead = pre && pre.n * (1 - P[preQ]) >= o.min_tail_tokens ? updateCusum(h.cusum(`post_tool_tail_growth/${pair}/pre_tool/${preQ}`), r.step, lg(pre[preQ]), 1 / pre.n, o) : undefined;
      if (!ev.length) continue;
      const top = ev.reduce((a, e) => (e.reading.s > a.reading.s ? e : a));
      const preMoving = preRead?.ready === true && levelFor(preRead.s, o.evidence, 'above') >= 1;
      const ratio = Math.exp(top.reading.x - top.reading.mean);
      out.push({
        key: pair,
        pair: pair as PairName,
        slice: 'post_tool',
        raise: maxLevel(...ev.map((e) => e.raise)),
        hold: maxLevel(...ev.map((e) => e.hold)),
        message:
          `${pair} post_tool |ℓ| ${top.quantile.replace('abs_', '')} ${top.mode === 'contrast' ? 'over pre_tool' : 'over its median'} is ` +
          `${round(ratio, 3)}× its anchored reference (z ${round(top.reading.z, 2)}), accumulated evidence ${round(top.reading.s, 1)} sd ` +
          `(q99 ${round(post.abs_q99)}); pre_tool ${preMoving ? 'also moving' : 'within its band'}`,
        evidence: {
          values: {
            evidence: round(top.reading.s, 3),
            quantile: top.quantile,
            mode: top.mode,
            z: round(top.reading.z, 3),
            contrast: round(top.reading.x, 5),
            reference: round(top.reading.mean, 5),
            noise_sd: round(top.reading.sd, 5),
            ratio_to_reference: round(ratio, 4),
            per_quantile: Object.fromEntries(ev.map((e) => [e.quantile, { evidence: round(e.reading.s, 3), z: round(e.reading.z, 3), mode: e.mode }])),
            post_q99: post.abs_q99,
            post_q999: post.abs_q999,
            pre_q99: pre?.abs_q99 ?? null,
            pre_tool_evidence: preRead?.ready ? round(preRead.s, 3) : null,
            n_post: post.n,
            n_pre: pre?.n ?? 0,
          },
          thresholds: { evidence: o.evidence, k: o.k, z_cap: o.z_cap, anchor_steps: o.anchor_steps, anchor_max: o.anchor_max, adapt_rate: o.adapt_rate },
          windows: { reference: `first ${o.anchor_max} steps with tail tokens (judged from ${o.anchor_steps}), then adapting ${o.adapt_rate}/step while quiet`, step: r.step },
        },
      });
    }
    return out;
  },
};
