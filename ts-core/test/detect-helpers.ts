// Hand-built StepResults for detector and controller tests: a healthy baseline per slice, with
// overrides for the metrics a test moves.
import type { MetricRecord, PairName, SliceName, StepResult, WindowRecord } from '../src/types.ts';

export function rec(step: number, pair: PairName, slice: SliceName, over: Partial<MetricRecord> = {}): MetricRecord {
  return {
    step, pair, slice, n: 1000, nonfinite: 0, mean: 0, abs_mean: 0.06, std: 0.08,
    abs_q50: 0.05, abs_q90: 0.12, abs_q95: 0.15, abs_q99: 0.25, abs_q999: 0.4, abs_max: 0.5,
    exceed_1_5: 0, exceed_2: 0, exceed_3: 0, ess: 0.99, ess_seq: 0.9, ess_seq_norm: 0.99,
    chi2: 0.01, kl_k1: 0, kl_k2: 0.003, kl_k3: 0.003, clip_frac: 0, alpha: 0.3, ...over,
  };
}

export interface StepOver {
  pair?: PairName;
  all?: Partial<MetricRecord>;
  pre?: Partial<MetricRecord>;
  post?: Partial<MetricRecord>;
  postWindow?: Partial<WindowRecord>;
  extra?: Partial<StepResult>;
}

export function step(n: number, o: StepOver = {}): StepResult {
  const pair = o.pair ?? 'policy_vs_ref';
  // The other watched pair rides along healthy, so every pair has its own reference from step 1.
  const other: PairName = pair === 'old_vs_rollout' ? 'policy_vs_ref' : 'old_vs_rollout';
  const records = [rec(n, pair, 'all', o.all), rec(n, pair, 'pre_tool', o.pre), rec(n, pair, 'post_tool', o.post)];
  records.push(rec(n, other, 'all'), rec(n, other, 'pre_tool'), rec(n, other, 'post_tool'));
  const windows: WindowRecord[] = o.postWindow
    ? [{ step: n, first_step: n - 19, pair, slice: 'post_tool', n: 20000, alpha: 0.3, abs_q50: 0.05, abs_q90: 0.12, abs_q95: 0.15, abs_q99: 0.25, abs_q999: 0.4, cdf: { p: [], q: [] }, ...o.postWindow }]
    : [];
  return {
    runId: 'r1', step: n, worldSize: 1, ranksPresent: [0], ranksMissing: [], tokens: 3000, records, windows,
    perRank: [], knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28, is_clip_max: null as unknown as undefined, off_policy_mask_threshold: null },
    logs: { loss: 0.1 }, ...o.extra,
  };
}

/** A collapsed-ESS step (ess_collapse on old_vs_rollout all/post_tool: high once the run has its own
 *  healthy reference, warn on a fresh run — a level alone does not escalate). */
export const bad = (n: number, extra?: Partial<StepResult>) => step(n, { pair: 'old_vs_rollout', all: { ess: 0.1 }, post: { ess: 0.1 }, extra });
