// The benchmark grid and its evaluation: which streams, how every detector and baseline is scored,
// and how the baselines are calibrated (no more alarms than tailguard on the nuisance streams).
import type { Policy } from '../src/policy/types.ts';
import { NUISANCE, type Family, type Law, type StreamSpec } from './detection-streams.ts';
import { basePair, oracleAlarm, ORACLE_DESIGNS, ruleAlarm, runStream, silentThreshold, standardise, type BasePair, type StreamResult } from './detection-run.ts';

/** Onset of every change: after the detectors' references (anchor_max 50) and the baselines' μ, σ (59 steps). */
export const ONSET = 60;
/** Nuisance and other families cycle these by seed: every law, α 0.1–0.6, 1k–50k tokens, 1–8 ranks. */
export const CONFIGS: { law: Law; alpha: number; tokens: number; ranks: number }[] = [
  { law: 't3', alpha: 0.3, tokens: 5000, ranks: 8 },
  { law: 'normal', alpha: 0.1, tokens: 50000, ranks: 1 },
  { law: 'laplace', alpha: 0.6, tokens: 1000, ranks: 4 },
  { law: 't4', alpha: 0.3, tokens: 10000, ranks: 2 },
  { law: 't5', alpha: 0.45, tokens: 5000, ranks: 1 },
];
/** Growth streams at the target's conditions (α 0.3, 5k tokens per rank-step); law and ranks by seed. */
export const GROWTH: { law: Law; ranks: number }[] = [
  { law: 't3', ranks: 8 },
  { law: 'normal', ranks: 1 },
  { law: 'laplace', ranks: 2 },
  { law: 't4', ranks: 4 },
  { law: 't5', ranks: 1 },
];
export const WEIGHT_RATES = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1];
export const TAIL_SCALE_RATES = [1, 3];
export const MISMATCH_RATES = [0.05, 0.2];
export const CONDITION_RATES = [0.05, 0.2];

export interface Grid {
  seeds: number;
  nuisanceSteps: number;
  specs: (StreamSpec & { group: string })[];
}

/** The full grid (scale 1) or a reduced one (fewer seeds and steps) for tests. */
export function buildGrid(o: { seeds?: number; nuisanceSteps?: number; rates?: number[]; families?: Family[]; small?: boolean } = {}): Grid {
  const seeds = o.seeds ?? 5;
  const nuisanceSteps = o.nuisanceSteps ?? 500;
  const specs: Grid['specs'] = [];
  const want = (f: Family) => !o.families || o.families.includes(f);
  const horizon = (rate: number) => Math.min(300, Math.max(60, Math.ceil(3 / rate)));
  for (let i = 0; i < seeds; i++) {
    const c = CONFIGS[i % CONFIGS.length];
    const g = GROWTH[i % GROWTH.length];
    const seed = 1000 + i;
    // small: a reduced grid for tests (≤ 2000 tokens per rank-step, ≤ 2 ranks but for rank_outlier).
    const shrink = (x: StreamSpec) => (o.small ? { ...x, tokens: Math.min(x.tokens, 2000), ranks: x.family === 'rank_outlier' ? 4 : Math.min(x.ranks, 2) } : x);
    const at = (family: Family, steps: number, rate: number, over: Partial<StreamSpec> = {}, group: string = family) =>
      want(family) && specs.push({ ...shrink({ family, seed: seed + specs.length * 7919, steps, onset: ONSET, ...c, rate, ...over }), group });
    at('healthy', nuisanceSteps, 0);
    at('benign_drift', nuisanceSteps, [0.2, 0.1, 0.2, 0.05, 0.2][i % 5]);
    at('alpha_ramp', Math.round(nuisanceSteps * 0.8), 0, { alpha: 0.1 });
    at('seq_len', Math.round(nuisanceSteps * 0.6), 0);
    at('shape_wander', Math.round(nuisanceSteps * 1.2), 0);
    for (const rate of o.rates ?? WEIGHT_RATES) at('weight_growth', ONSET + horizon(rate), rate, { alpha: 0.3, tokens: 5000, ...g });
    for (const rate of o.rates ? [] : CONDITION_RATES) at('weight_growth', ONSET + horizon(rate), rate, {}, 'conditions');
    for (const rate of o.small ? [3] : TAIL_SCALE_RATES) at('tail_scale', ONSET + (o.small ? 100 : 150), rate, { alpha: 0.3, tokens: 5000, ...g });
    for (const rate of o.rates ? o.rates.slice(0, 1) : MISMATCH_RATES) at('mismatch', ONSET + horizon(rate), rate, { alpha: 0.3, tokens: 5000, ...g });
    at('rank_outlier', ONSET + (o.small ? 25 : 30), [2, 3, 4, 5, 3][i % 5], { ranks: [4, 8, 2, 8, 4][i % 5], tokens: 5000 });
    at('nonfinite', ONSET + 10, 0);
  }
  return { seeds, nuisanceSteps, specs };
}

export type BaselineName = 'mean_abs' | 'kl_k3' | 'q99_drift_aware' | 'ptt';
export const BASELINES: BaselineName[] = ['mean_abs', 'kl_k3', 'q99_drift_aware', 'ptt'];
export const BASELINE_LABEL: Record<BaselineName, string> = {
  mean_abs: 'all-token mean |ℓ| + kσ',
  kl_k3: 'global k3 KL > τ',
  q99_drift_aware: 'all-token q99 vs drift-aware baseline',
  ptt: 'PTT rules (KL > 0.3 or mean ratio < 0.5), as shipped',
};

export interface Scored {
  r: StreamResult;
  group: string;
  tgWarn: number | null;
  tgHigh: number | null;
  oracle: number | null;
  base: Record<BaselineName, number | null>;
  /** Raises at warn / at high+ over the whole stream (nuisance false alarms). */
  warnRaises: number;
  highRaises: number;
  controlDirectives: number;
  /** A finding of the changed slice cleared while the change was still growing. */
  clearedWhileGrowing: boolean;
}

export interface Evaluation {
  scored: Scored[];
  thresholds: Record<BasePair, Record<Exclude<BaselineName, 'ptt'>, number>>;
  oracleH: number;
  nuisanceStepsTotal: number;
  tgNuisanceHigh: number;
}

const detFor = (f: Family) => (f === 'rank_outlier' ? 'rank_outlier' : f === 'nonfinite' ? 'nonfinite' : null);

function series(r: StreamResult, b: Exclude<BaselineName, 'ptt'>, pair: BasePair): number[] {
  const s = r.base[pair];
  return b === 'mean_abs' ? standardise(s.absMean, ONSET - 1) : b === 'kl_k3' ? s.kl : s.q99;
}

/** k-th largest (1-based) of xs, or -Infinity. */
const kth = (xs: number[], k: number) => [...xs].sort((a, b) => b - a)[k - 1] ?? -Infinity;

export function evaluate(results: (StreamResult & { group: string })[]): Evaluation {
  const nuisance = results.filter((r) => NUISANCE.includes(r.spec.family));
  const nuisanceStepsTotal = nuisance.reduce((a, r) => a + r.spec.steps, 0);
  const tgNuisanceHigh = nuisance.reduce((a, r) => a + r.raises.filter((x) => x.severity === 'high' || x.severity === 'critical').length, 0);
  // Calibrated: silent on all but at most as many nuisance streams as tailguard raised high on.
  const thresholds = {} as Evaluation['thresholds'];
  for (const pair of ['policy_vs_ref', 'old_vs_rollout'] as BasePair[]) {
    thresholds[pair] = {} as Evaluation['thresholds'][BasePair];
    for (const b of ['mean_abs', 'kl_k3', 'q99_drift_aware'] as const)
      thresholds[pair][b] = kth(nuisance.map((r) => silentThreshold(series(r, b, pair), ONSET)), tgNuisanceHigh + 1);
  }
  // Oracle: the false-alarm rate tailguard showed (≤ 1 per nuisanceStepsTotal steps); Lorden's bound
  // ARL0 ≥ e^h per CUSUM, and a Bonferroni share for each design of the bank.
  const oracleH = Math.log(nuisanceStepsTotal * ORACLE_DESIGNS.length);
  const scored = results.map((r): Scored => {
    const { spec } = r;
    const from = spec.onset;
    const fam = detFor(spec.family);
    const ok = (x: StreamResult['raises'][number]) => x.step >= from && (!fam || x.detector === fam) && (spec.family !== 'rank_outlier' || x.rank === 1);
    const first = (sev: string[]) => r.raises.find((x) => ok(x) && sev.includes(x.severity))?.step ?? null;
    const pair = basePair(spec);
    const base = {} as Scored['base'];
    for (const b of ['mean_abs', 'kl_k3', 'q99_drift_aware'] as const) base[b] = ruleAlarm(series(r, b, pair), thresholds[pair][b], from);
    const s = r.base[pair];
    const ptt = s.kl.map((kl, i) => (kl > 0.3 || s.ratio[i] < 0.5 ? 1 : 0));
    base.ptt = ruleAlarm(ptt, 0.5, from);
    const growing = ['weight_growth', 'tail_scale', 'mismatch'].includes(spec.family);
    return {
      r,
      group: r.group,
      tgWarn: first(['warn', 'high', 'critical']),
      tgHigh: first(['high', 'critical']),
      oracle: r.llr.length && growing ? oracleAlarm(r.llr, oracleH, from) : null,
      base,
      warnRaises: r.raises.filter((x) => x.severity === 'warn').length,
      highRaises: r.raises.filter((x) => x.severity !== 'warn').length,
      controlDirectives: r.directives.filter((d) => d.action !== 'warn').length,
      clearedWhileGrowing: growing && r.clears.some((c) => c.step >= from && c.detector === 'post_tool_tail_growth'),
    };
  });
  return { scored, thresholds, oracleH, nuisanceStepsTotal, tgNuisanceHigh };
}

export function runGrid(grid: Grid, policy: Policy, onStream?: (i: number, n: number) => void): Evaluation {
  const results = grid.specs.map((spec, i) => {
    onStream?.(i, grid.specs.length);
    return { ...runStream(spec, policy), group: spec.group };
  });
  return evaluate(results);
}
