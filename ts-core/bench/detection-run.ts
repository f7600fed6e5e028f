// One benchmark stream end to end: RunStats → Controller (default policy) per step, plus the
// aggregate baselines' per-step readings and the oracle's likelihood-ratio CUSUMs on the changed slice.
import { Controller } from '../src/policy/controller.ts';
import type { Policy } from '../src/policy/types.ts';
import type { Finding, StepResult } from '../src/types.ts';
import { changedLaw, changedLawName, sliceLogPdf, specStream, type SliceLaw, type StreamSpec } from './detection-streams.ts';

/** Post-change designs of the oracle bank: the law this many steps after onset. */
export const ORACLE_DESIGNS = [10, 20, 40, 80, 160];
export const ORACLE_FAMILIES = ['weight_growth', 'tail_scale', 'mismatch'];

export interface StreamResult {
  spec: StreamSpec;
  /** First step of a raise at warn+ / high+ (any detector) at or after `from`, by detector. */
  raises: { step: number; detector: string; severity: Finding['severity']; rank?: number; pair?: string }[];
  clears: { step: number; detector: string }[];
  directives: { step: number; action: string }[];
  /** Per-step baseline readings per pair (index = step − 1). */
  base: Record<BasePair, BaseSeries>;
  /** Per-step oracle LLR sums per design (index = step − 1). */
  llr: number[][];
}

export const BASE_PAIRS = ['policy_vs_ref', 'old_vs_rollout'] as const;
export type BasePair = (typeof BASE_PAIRS)[number];
export interface BaseSeries {
  absMean: number[];
  kl: number[];
  ratio: number[];
  q99: number[];
}
/** The pair whose all-token view the baselines watch: the changed one. */
export const basePair = (spec: StreamSpec): BasePair => (spec.family === 'mismatch' ? 'old_vs_rollout' : 'policy_vs_ref');

const pick = (r: StepResult, pair: string, slice: string) => r.records.find((x) => x.pair === pair && x.slice === slice);

const newBase = (): BaseSeries => ({ absMean: [], kl: [], ratio: [], q99: [] });

export function runStream(spec: StreamSpec, policy: Policy): StreamResult {
  const c = new Controller(policy);
  const out: StreamResult = { spec, raises: [], clears: [], directives: [], base: { policy_vs_ref: newBase(), old_vs_rollout: newBase() }, llr: [] };
  const oracle = ORACLE_FAMILIES.includes(spec.family);
  const law = changedLawName(spec);
  const f0 = changedLaw(spec, 1);
  const designs: SliceLaw[] = ORACLE_DESIGNS.map((d) => changedLaw(spec, spec.onset + d - 1));
  let acc = new Float64Array(designs.length);
  const sink = (v: number) => {
    const l0 = sliceLogPdf(v, f0, law);
    for (let i = 0; i < designs.length; i++) acc[i] += sliceLogPdf(v, designs[i], law) - l0;
  };
  for (const r of specStream(spec, oracle ? () => sink : undefined)) {
    const d = c.onStepResult(r);
    for (const f of d.findings) {
      const event = (f.evidence as any)?.event;
      if (event === 'clear') out.clears.push({ step: f.step, detector: f.detector });
      else if (event === 'raise' && f.severity !== 'info') out.raises.push({ step: f.step, detector: f.detector, severity: f.severity, rank: f.rank, pair: f.pair });
    }
    if (d.directive) out.directives.push({ step: r.step, action: d.directive.action });
    for (const pair of BASE_PAIRS) {
      const b = out.base[pair];
      const all = pick(r, pair, 'all');
      b.absMean.push(all?.abs_mean ?? NaN);
      b.kl.push(all?.kl_k3 ?? NaN);
      // Mean importance ratio E[exp ℓ] = 1 + E[ℓ] + E[e^ℓ − 1 − ℓ] = 1 + mean + kl_k3.
      b.ratio.push(all ? 1 + all.mean + all.kl_k3 : NaN);
      const w = r.windows.find((x) => x.pair === pair && x.slice === 'all');
      const da = w?.shape?.drift_aware;
      b.q99.push(da && w ? Math.log(w.abs_q99 / Math.max(w.abs_q99 - da.dq99, 1e-12)) : NaN);
    }
    out.llr.push(Array.from(acc));
    acc = new Float64Array(designs.length);
  }
  return out;
}

/** Step of the first alarm at or after `from` of the rule "3 consecutive steps with value > thr" (dir above). */
export function ruleAlarm(values: number[], thr: number, from: number, dir: 'above' | 'below' = 'above'): number | null {
  let run = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const hit = Number.isFinite(v) && (dir === 'above' ? v > thr : v < thr);
    run = hit ? run + 1 : 0;
    if (run >= 3 && i + 1 >= from) return i + 1;
  }
  return null;
}

/** The highest threshold a 3-consecutive rule must exceed to stay silent from `from` on (the max of 3-step minima). */
export function silentThreshold(values: number[], from: number): number {
  let m = -Infinity;
  for (let i = Math.max(2, from - 1); i < values.length; i++) m = Math.max(m, Math.min(values[i], values[i - 1], values[i - 2]));
  return m;
}

/** mean|ℓ| standardised against the stream's own first `n` steps: (x − μ) / σ. */
export function standardise(values: number[], n: number): number[] {
  const b = values.slice(0, n).filter(Number.isFinite);
  const mu = b.reduce((a, x) => a + x, 0) / b.length;
  const sd = Math.sqrt(b.reduce((a, x) => a + (x - mu) ** 2, 0) / Math.max(1, b.length - 1)) || 1e-12;
  return values.map((x) => (x - mu) / sd);
}

/** Oracle CUSUM bank: first step ≥ `from` where any design's CUSUM of the per-step LLR exceeds h. */
export function oracleAlarm(llr: number[][], h: number, from: number): number | null {
  const s = new Float64Array(ORACLE_DESIGNS.length);
  for (let t = 0; t < llr.length; t++)
    for (let i = 0; i < s.length; i++) {
      s[i] = Math.max(0, s[i] + llr[t][i]);
      if (s[i] > h && t + 1 >= from) return t + 1;
    }
  return null;
}
