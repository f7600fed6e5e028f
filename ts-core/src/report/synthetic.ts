// Deterministic synthetic StepResults for tests, screenshots and the dashboard demo before real
// statistics exist: pre_tool stays narrow while post_tool grows a heavy tail over the run.
// Quantiles are exact over the generated samples, so the numbers are self-consistent.
import type { MetricRecord, PairName, SliceName, StepResult, WindowRecord } from '../types.ts';
import { gaussEps, mulberry32 } from '../util/prng.ts';

export interface SyntheticOptions {
  worldSize?: number;
  window?: number;
  tokens?: number; // per rank
  /** Step from which post_tool's tail starts to grow. */
  onset?: number;
  seed?: number;
}

const CDF_P = [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];

// Seed 0 maps to 1 (kept so existing fixtures stay identical).
const rng = (seed: number) => mulberry32(seed >>> 0 || 1);

function samples(step: number, slice: 'pre_tool' | 'post_tool', n: number, o: Required<SyntheticOptions>, rank: number): number[] {
  const r = rng(o.seed * 7919 + step * 131 + rank * 17 + (slice === 'post_tool' ? 3 : 0));
  const growth = Math.max(0, step - o.onset) / 10;
  const out: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const g = gaussEps(r);
    if (slice === 'pre_tool') out[i] = 0.04 * g;
    else {
      // scale mixture: mostly narrow, a growing share of wide tokens
      const wide = r() < 0.02 + 0.03 * growth;
      out[i] = (wide ? 0.3 * (1 + growth) : 0.05) * g;
    }
  }
  return out;
}

function quantile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i];
}

function record(step: number, pair: PairName, slice: SliceName, xs: number[], alpha: number): MetricRecord {
  const n = xs.length;
  const abs = xs.map(Math.abs).sort((a, b) => a - b);
  let s = 0, s2 = 0, sa = 0, sw = 0, sw2 = 0, k3 = 0;
  for (const x of xs) {
    s += x; s2 += x * x; sa += Math.abs(x);
    const w = Math.exp(x);
    sw += w; sw2 += w * w; k3 += w - 1 - x;
  }
  const mean = s / n;
  const exceed = (c: number) => abs.filter((a) => a > Math.log(c)).length / n;
  return {
    step, pair, slice, n, nonfinite: 0, mean, abs_mean: sa / n, std: Math.sqrt(Math.max(0, s2 / n - mean * mean)),
    abs_q50: quantile(abs, 0.5), abs_q90: quantile(abs, 0.9), abs_q95: quantile(abs, 0.95), abs_q99: quantile(abs, 0.99),
    abs_q999: quantile(abs, 0.999), abs_max: abs[n - 1],
    exceed_1_5: exceed(1.5), exceed_2: exceed(2), exceed_3: exceed(3),
    ess: (sw * sw) / (n * sw2), ess_seq: Math.min(1, (sw * sw) / (n * sw2) * 0.97), ess_seq_norm: Math.min(1, (sw * sw) / (n * sw2) * 0.99),
    chi2: sw2 / n - 1, kl_k1: -mean, kl_k2: s2 / n / 2, kl_k3: k3 / n,
    clip_frac: abs.filter((a) => a > Math.log(1.2)).length / n, alpha,
  };
}

/** The StepResult of `step` (1-based), exactly reproducible from (runId, step, options). */
export function syntheticStepResult(runId: string, step: number, opts: SyntheticOptions = {}): StepResult {
  const o: Required<SyntheticOptions> = { worldSize: 1, window: 5, tokens: 1200, onset: 12, seed: 1, ...opts };
  const pair: PairName = 'policy_vs_ref';
  const records: MetricRecord[] = [];
  const perRank: StepResult['perRank'] = [];
  const alpha = Math.min(0.7, 0.25 + step * 0.008);
  const all: Record<'pre_tool' | 'post_tool', number[]> = { pre_tool: [], post_tool: [] };
  for (let rank = 0; rank < o.worldSize; rank++) {
    const nPost = Math.round(o.tokens * alpha);
    const pre = samples(step, 'pre_tool', o.tokens - nPost, o, rank);
    const post = samples(step, 'post_tool', nPost, o, rank).map((x) => (rank === 1 ? x * 1.6 : x));
    all.pre_tool.push(...pre);
    all.post_tool.push(...post);
    const summary: Record<string, { n: number; abs_q99: number; abs_mean: number; ess: number }> = {};
    for (const [slice, xs] of [['pre_tool', pre], ['post_tool', post]] as const) {
      const m = record(step, pair, slice, xs, alpha);
      summary[slice] = { n: m.n, abs_q99: m.abs_q99, abs_mean: m.abs_mean, ess: m.ess };
    }
    perRank.push({ rank, tokens: o.tokens, pairs: { [pair]: summary } });
  }
  const a = all.pre_tool.length + all.post_tool.length;
  const realAlpha = all.post_tool.length / a;
  records.push(record(step, pair, 'all', [...all.pre_tool, ...all.post_tool], realAlpha));
  records.push(record(step, pair, 'pre_tool', all.pre_tool, realAlpha));
  records.push(record(step, pair, 'post_tool', all.post_tool, realAlpha));

  const windows: WindowRecord[] = [];
  if (step % o.window === 0) {
    for (const slice of ['pre_tool', 'post_tool'] as const) {
      const xs: number[] = [];
      for (let s = step - o.window + 1; s <= step; s++) {
        for (let rank = 0; rank < o.worldSize; rank++) {
          const nPost = Math.round(o.tokens * Math.min(0.7, 0.25 + s * 0.008));
          xs.push(...samples(s, slice, slice === 'post_tool' ? nPost : o.tokens - nPost, o, rank));
        }
      }
      const abs = xs.map(Math.abs).sort((a, b) => a - b);
      windows.push({
        step, first_step: step - o.window + 1, pair, slice, n: abs.length, alpha: realAlpha,
        abs_q50: quantile(abs, 0.5), abs_q90: quantile(abs, 0.9), abs_q95: quantile(abs, 0.95),
        abs_q99: quantile(abs, 0.99), abs_q999: quantile(abs, 0.999),
        cdf: { p: CDF_P, q: CDF_P.map((p) => quantile(abs, p)) },
      });
    }
  }
  const post = records[2];
  return {
    runId, step, worldSize: o.worldSize, ranksPresent: [...Array(o.worldSize).keys()], ranksMissing: [],
    tokens: o.tokens * o.worldSize, records, windows, perRank,
    knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.2 },
    logs: { loss: 0.5 / Math.sqrt(step) + 0.01 * Math.sin(step), reward: 1 - 0.8 / Math.sqrt(step), kl: 0.002 * step + post.kl_k3 * 0.1 },
  };
}
