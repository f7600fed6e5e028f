// Accuracy of the slice statistics against exact computation (sort, float64 sums) on heavy-tailed
// synthetic data: 1e6 tokens, 1 / 2 / 8 ranks, skewed α.
import { describe, expect, it } from 'vitest';
import { RunStats } from '../src/stats/index.ts';
import { HIST_BINS, histQuantiles } from '../src/stats/hist.ts';
import type { MetricRecord, StepData, StepResult } from '../src/types.ts';
import { contaminated, reference, splitRanks, studentT3, synthStep } from './stats-helpers.ts';

const SLICE_CODES: Record<string, number[]> = { all: [0, 1], pre_tool: [0], post_tool: [1], tool_output: [2] };
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);

function runOnce(steps: StepData[], worldSize: number): StepResult {
  const rs = new RunStats({ worldSize });
  for (const s of steps) rs.addRankStep(s);
  const out = rs.finalizeReady(0);
  expect(out).toHaveLength(1);
  return out[0];
}

const rec = (r: StepResult, slice: string) => r.records.find((x) => x.slice === slice)!;

function checkAgainstReference(d: StepData, r: StepResult) {
  for (const slice of ['all', 'pre_tool', 'post_tool', 'tool_output']) {
    const ref = reference(d, 'policy_vs_ref', SLICE_CODES[slice]);
    const m = rec(r, slice);
    expect(m.n).toBe(ref.n);
    // exact per-step quantiles: bit-identical to sorting
    expect([m.abs_q50, m.abs_q90, m.abs_q95, m.abs_q99, m.abs_q999]).toEqual([0.5, 0.9, 0.95, 0.99, 0.999].map(ref.quant));
    expect(m.abs_max).toBe(ref.abs_max);
    for (const k of ['ess', 'ess_seq', 'ess_seq_norm', 'chi2', 'kl_k2', 'kl_k3'] as const) {
      expect(rel(m[k], ref[k]), `${slice} ${k}`).toBeLessThan(1e-9);
    }
    expect(rel(m.kl_k1, -ref.mean)).toBeLessThan(1e-9);
    expect(m.clip_frac).toBe(ref.clip_frac);
    expect([m.exceed_1_5, m.exceed_2, m.exceed_3]).toEqual(ref.exceed);
  }
}

describe.each([
  ['student-t3', (r: () => number) => studentT3(r, 0.05), 0.25],
  ['contaminated', (r: () => number) => contaminated(r, 0.02), 0.6],
])('%s, 1e6 tokens', (_name, gen, alpha) => {
  const d = synthStep({ tokens: 1_000_000, seed: 11, alpha, gen });
  const single = runOnce([d], 1);

  it('matches the exact reference on every slice', () => checkAgainstReference(d, single));

  it('alpha is the post-tool share of model tokens', () => {
    const pre = rec(single, 'pre_tool').n, post = rec(single, 'post_tool').n;
    expect(rec(single, 'all').alpha).toBe(post / (pre + post));
    expect(Math.abs(rec(single, 'all').alpha - alpha)).toBeLessThan(0.15);
  });

  // Histogram quantiles (windows, CDFs, per-rank summaries, sketch mode): 9 mantissa bits (bins
  // 0.1–0.2 % wide) and interpolation between estimated order statistics (docs/metrics.md).
  it('histogram quantiles within 0.1% relative up to p99.9 (every slice, every CDF point)', () => {
    const rs = new RunStats({ worldSize: 1 });
    rs.addRankStep(d);
    const r = rs.finalizeReady(0)[0];
    for (const slice of ['all', 'pre_tool', 'post_tool']) {
      const ref = reference(d, 'policy_vs_ref', SLICE_CODES[slice]);
      const w = r.windows.find((x) => x.slice === slice)!; // window of one step = the step's histogram
      for (const [p, q] of [[0.5, w.abs_q50], [0.9, w.abs_q90], [0.95, w.abs_q95], [0.99, w.abs_q99], [0.999, w.abs_q999]]) {
        expect(rel(q, ref.quant(p)), `${slice} p${p}`).toBeLessThan(1e-3);
      }
      let checked = 0;
      w.cdf.p.forEach((p, i) => {
        if (p > 0.999) return;
        expect(rel(w.cdf.q[i], ref.quant(p)), `${slice} cdf p${p}`).toBeLessThan(1e-3);
        checked++;
      });
      expect(checked).toBeGreaterThanOrEqual(60);
      // per-rank summaries use the same histogram quantiles
      const pr = r.perRank[0].pairs.policy_vs_ref![slice];
      expect(rel(pr.abs_q99, ref.quant(0.99)), `${slice} perRank q99`).toBeLessThan(1e-3);
    }
  });

  for (const k of [2, 8]) {
    it(`${k} ranks merged equal the single-rank result on the concatenated data`, () => {
      const merged = runOnce(splitRanks(d, k), k);
      expect(merged.ranksPresent).toHaveLength(k);
      expect(merged.ranksMissing).toEqual([]);
      expect(merged.perRank).toHaveLength(k);
      expect(merged.tokens).toBe(single.tokens);
      for (const a of single.records) {
        const b = merged.records.find((x) => x.slice === a.slice)!;
        for (const f of Object.keys(a) as (keyof MetricRecord)[]) {
          const va = a[f] as number, vb = b[f] as number;
          if (typeof va !== 'number' || va === vb) continue;
          expect(rel(vb, va), `${a.slice} ${f}`).toBeLessThan(1e-12);
        }
        // counts and exact quantiles are identical
        for (const f of ['n', 'nonfinite', 'abs_q50', 'abs_q99', 'abs_q999', 'abs_max', 'exceed_2', 'clip_frac'] as const) expect(b[f]).toBe(a[f]);
      }
      // merged windows (histograms) are identical too
      expect(merged.windows.map((w) => w.cdf.q)).toEqual(single.windows.map((w) => w.cdf.q));
    });
  }
});

describe('exact quantiles from the band collected during the pass', () => {
  it('later steps use the band around the previous quantiles, a shifted step falls back; all bit-identical to a sort', () => {
    const rs = new RunStats({ worldSize: 2 });
    const scales = [0.05, 0.05, 0.6, 0.6];
    const paths: string[] = [];
    scales.forEach((scale, i) => {
      const d = synthStep({ tokens: 150_000, seed: 40 + i, step: i + 1, alpha: 0.3, gen: (r) => studentT3(r, scale) });
      const before = { ...rs.quantilePaths };
      for (const p of splitRanks(d, 2)) rs.addRankStep(p);
      const r = rs.finalizeReady(0)[0];
      paths.push(rs.quantilePaths.band > before.band ? (rs.quantilePaths.scan > before.scan ? 'mixed' : 'band') : 'scan');
      for (const slice of ['all', 'pre_tool', 'post_tool', 'tool_output']) {
        const ref = reference(d, 'policy_vs_ref', SLICE_CODES[slice]);
        const m = rec(r, slice);
        expect([m.abs_q50, m.abs_q90, m.abs_q95, m.abs_q99, m.abs_q999], `step ${i + 1} ${slice}`).toEqual([0.5, 0.9, 0.95, 0.99, 0.999].map(ref.quant));
      }
    });
    // step 1: no prediction; step 2: band; step 3: 12x wider, the band misses; step 4: band again
    expect(paths[0]).toBe('scan');
    expect(paths[1]).toBe('band');
    expect(paths[2]).not.toBe('band');
    expect(paths[3]).toBe('band');
  });
});

describe('histogram-only path (values not kept) merges ranks', () => {
  it('matches the reference on moments and is within 0.1% on quantiles up to p99.9', () => {
    const d = synthStep({ tokens: 400_000, seed: 5, alpha: 0.4, gen: (r) => contaminated(r, 0.02) });
    const rs = new RunStats({ worldSize: 2, exactMaxValues: 1000 });
    for (const p of splitRanks(d, 2)) rs.addRankStep(p);
    const r = rs.finalizeReady(0)[0];
    for (const slice of ['all', 'pre_tool', 'post_tool']) {
      const ref = reference(d, 'policy_vs_ref', SLICE_CODES[slice]);
      const m = rec(r, slice);
      expect(rel(m.ess, ref.ess)).toBeLessThan(1e-9);
      expect(m.abs_max).toBe(ref.abs_max);
      const ps = [0.5, 0.9, 0.95, 0.99, 0.999];
      [m.abs_q50, m.abs_q90, m.abs_q95, m.abs_q99, m.abs_q999].forEach((q, i) => {
        expect(q).not.toBe(ref.quant(ps[i])); // really the histogram path, not the exact one
        expect(rel(q, ref.quant(ps[i])), `${slice} p${ps[i]}`).toBeLessThan(1e-3);
      });
    }
    expect(histQuantiles(new Float64Array(HIST_BINS), [0.5], 1, new Float64Array(1))[0]).toBeNaN();
  });
});
