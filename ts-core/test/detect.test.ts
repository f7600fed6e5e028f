import { describe, expect, it } from 'vitest';
import { DetectorSet } from '../src/detect/index.ts';
import { newLatch, updateLatch } from '../src/detect/latch.ts';
import { levelFor } from '../src/detect/levels.ts';
import { defaultPolicy } from '../src/policy/load.ts';
import type { Finding, StepResult } from '../src/types.ts';
import { statsStream } from '../bench/synthetic.ts';
import { bad, step } from './detect-helpers.ts';

const H = { raise_k: 3, raise_n: 4, clear_steps: 3, cooldown_steps: 5 };
const run = (results: Iterable<StepResult>, tweak?: (p: ReturnType<typeof defaultPolicy>) => void) => {
  const p = defaultPolicy();
  tweak?.(p);
  const set = new DetectorSet(p.detectors);
  const out: Finding[] = [];
  for (const r of results) out.push(...set.evaluate(r));
  return { out, set };
};
const raised = (fs: Finding[], det: string) => fs.filter((f) => f.detector === det && (f.evidence as any).event === 'raise');

describe('levels and hysteresis', () => {
  it('levelFor crosses thresholds in either direction and relaxes by the margin', () => {
    expect(levelFor(0.3, { warn: 0.2, high: 0.5 }, 'above')).toBe(2);
    expect(levelFor(0.6, { warn: 0.2, high: 0.5 }, 'above')).toBe(3);
    expect(levelFor(0.1, { warn: 0.5, high: 0.2 }, 'below')).toBe(3);
    expect(levelFor(0.45, { warn: 0.5, high: null }, 'above')).toBe(0);
    expect(levelFor(0.45, { warn: 0.5 }, 'above', 0.2)).toBe(2);
    expect(levelFor(NaN, { warn: 0.5 }, 'above')).toBe(0);
  });

  it('one noisy step never fires; k of n raise; clears only after clear_steps; repeats after cooldown', () => {
    const l = newLatch();
    const seq: [number, number][] = [[0, 0], [3, 3], [0, 0], [0, 0], [0, 0], [0, 0]];
    const ev = seq.map(([r, h], i) => updateLatch(l, i + 1, r as any, h as any, H));
    expect(ev.every((e) => e === null)).toBe(true);
    expect(l.level).toBe(0);
    const ev2 = [3, 3, 3].map((r, i) => updateLatch(l, 10 + i, r as any, r as any, H));
    expect(ev2).toEqual([null, null, 'raise']);
    expect(l.level).toBe(3);
    expect(l.onset).toBe(12);
    // held by the relaxed threshold (hold 3) though raise is 0: stays, repeats after the cooldown
    const ev3 = [13, 14, 15, 16, 17].map((s) => updateLatch(l, s, 0, 3, H));
    expect(ev3).toEqual([null, null, null, null, 'repeat']);
    const ev4 = [18, 19, 20].map((s) => updateLatch(l, s, 0, 0, H));
    expect(ev4).toEqual([null, null, 'clear']);
    expect(l.level).toBe(0);
  });

  it('a step going backwards (rollback) resets the latch', () => {
    const l = newLatch();
    for (const s of [1, 2, 3]) updateLatch(l, s, 2, 2, H);
    expect(l.level).toBe(2);
    updateLatch(l, 2, 0, 0, H);
    expect(l.level).toBe(0);
  });
});

describe('detectors', () => {
  it('nonfinite is critical at the first step with a NaN, with evidence per slice', () => {
    const { out } = run([step(1), step(2, { post: { nonfinite: 3 } })]);
    const f = raised(out, 'nonfinite');
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ severity: 'critical', step: 2, pair: 'policy_vs_ref', slice: 'post_tool' });
    expect((f[0].evidence as any).values.post_tool).toBe(3);
  });

  it('nonfinite also watches the trainer loss', () => {
    const { out } = run([step(1, { extra: { logs: { loss: NaN } } })]);
    expect(raised(out, 'nonfinite')[0]).toMatchObject({ severity: 'critical', step: 1 });
  });

  it('ess_collapse needs 3 of 4 steps and reports values and thresholds', () => {
    const healthy = Array.from({ length: 10 }, (_, i) => step(i + 1)); // the run's own reference
    const { out } = run([...healthy, step(11), bad(12), step(13), step(14), bad(15), bad(16), bad(17)]);
    const f = raised(out, 'ess_collapse');
    expect(f.map((x) => x.step)).toEqual([17, 17]); // all and post_tool
    expect(f[0].severity).toBe('high');
    expect((f[0].evidence as any).thresholds.ess).toEqual({ warn: 0.5, high: 0.2 });
    expect((f[0].evidence as any).values.ess).toBe(0.1);
    expect((f[0].evidence as any).values.reference).toBe(0.99);
    expect((f[0].evidence as any).values.change).toBeCloseTo(9.9, 9);
  });

  it('ess_collapse on a fresh run (no reference yet) or a stable low level stops at warn', () => {
    const fresh = raised(run(Array.from({ length: 30 }, (_, i) => bad(i + 1))).out, 'ess_collapse');
    expect(fresh.length).toBeGreaterThan(0);
    expect(fresh.every((f) => f.severity === 'warn')).toBe(true);
  });

  it('exceedance fires on the configured metric only', () => {
    const { out } = run([1, 2, 3].map((n) => step(n, { pair: 'old_vs_rollout', pre: { exceed_2: 0.03, exceed_3: 0.2 } })));
    const f = raised(out, 'exceedance');
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ slice: 'pre_tool', severity: 'warn' });
  });

  it('rank_outlier names the rank whose tail is far from the others', () => {
    const perRank = (q1: number, n: number, m1 = 0.06) =>
      [0, 1, 2].map((rank) => ({ rank, tokens: 3000, pairs: { policy_vs_ref: { post_tool: { n, abs_q99: rank === 1 ? q1 : 0.25, abs_mean: rank === 1 ? m1 : 0.06, ess: 0.99 } } } }));
    const steps = (p: (n: number) => ReturnType<typeof perRank>) => [1, 2, 3, 4].map((n) => step(n, { extra: { worldSize: 3, perRank: p(n) } }));
    // A fault in the rank's tail only, on slices big enough for a per-rank q99.
    const f = raised(run(steps((n) => perRank(n < 2 ? 0.25 : 1.5, 1500))).out, 'rank_outlier');
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ rank: 1, severity: 'high', slice: 'post_tool' });
    // The same q99 on 500 tokens per rank is not read; a whole-rank scale fault (mean |ℓ| ×3) is.
    expect(raised(run(steps((n) => perRank(n < 2 ? 0.25 : 1.5, 500))).out, 'rank_outlier')).toHaveLength(0);
    const m = raised(run(steps((n) => perRank(0.25, 500, n < 2 ? 0.06 : 0.18))).out, 'rank_outlier');
    expect(m[0]).toMatchObject({ rank: 1, severity: 'high' });
    expect((m[0].evidence as any).values.mean_ratio).toBeCloseTo(3, 6);
  });

  it('alpha_ramp reports a fast α climb as info (learning, not a fault), nothing on a flat α', () => {
    const ramp = Array.from({ length: 30 }, (_, i) => step(i + 1, { all: { alpha: 0.2 + 0.01 * i } }));
    const f = raised(run(ramp).out, 'alpha_ramp');
    expect(f[0]).toMatchObject({ severity: 'info' });
    expect(f.every((x) => x.severity === 'info')).toBe(true);
    expect((f[0].evidence as any).values.rate).toBeCloseTo(0.01, 4);
    const flat = Array.from({ length: 30 }, (_, i) => step(i + 1));
    expect(raised(run(flat).out, 'alpha_ramp')).toHaveLength(0);
  });

  it('mismatch_growth compares old_vs_rollout with its early baseline while it still rises', () => {
    const steps = Array.from({ length: 60 }, (_, i) => {
      const n = i + 1;
      const q = n <= 20 ? 0.05 : 0.05 * 1.06 ** (n - 20);
      return step(n, { pair: 'old_vs_rollout', all: { abs_q99: q }, post: { abs_q99: q } });
    });
    const f = raised(run(steps).out, 'mismatch_growth');
    expect(f.length).toBeGreaterThan(0);
    expect(f[0].step).toBeGreaterThan(20);
    expect(f.some((x) => x.severity === 'high')).toBe(true);
    expect((f[0].evidence as any).values.ratio).toBeGreaterThanOrEqual(1.5);
  });

  it('mismatch_growth: a background growing alike on every slice (bf16 rollout, policy sharpening) raises nothing', () => {
    // The demo's healthy all-token q99 climbs ~0.004 → 0.03 over 45 steps, on pre_tool and post_tool alike.
    const steps = Array.from({ length: 80 }, (_, i) => {
      const q = 0.004 * 1.05 ** i;
      return step(i + 1, { pair: 'old_vs_rollout', all: { abs_q99: q }, pre: { abs_q99: q }, post: { abs_q99: q * 1.1 } });
    });
    expect(raised(run(steps).out, 'mismatch_growth')).toEqual([]);
    // The same background with a post_tool-only climb on top from step 41 is found, on post_tool first.
    const grown = steps.map((s, i) => {
      if (i < 40) return s;
      const q = 0.004 * 1.05 ** i;
      return step(i + 1, { pair: 'old_vs_rollout', all: { abs_q99: q * 1.06 ** (i - 39) }, pre: { abs_q99: q }, post: { abs_q99: q * 1.1 * 1.1 ** (i - 39) } });
    });
    const f = raised(run(grown).out, 'mismatch_growth');
    expect(f.length).toBeGreaterThan(0);
    expect(f[0].step).toBeGreaterThan(40);
    expect(f.some((x) => x.severity === 'high' && x.slice === 'post_tool')).toBe(true);
    expect((f[0].evidence as any).values.background_growth).toBeGreaterThan(1.5);
  });

  it('mismatch_growth over a float-noise baseline: ratio against baseline_floor, same findings as without it', () => {
    // Rollout logprobs equal to the trainer's up to float noise, then a real mismatch from step 21.
    const steps = Array.from({ length: 60 }, (_, i) => {
      const n = i + 1;
      const q = n <= 20 ? 1.2e-7 * (1 + 0.1 * Math.sin(n)) : 0.01 * 1.1 ** (n - 20);
      return step(n, { pair: 'old_vs_rollout', all: { abs_q99: q }, post: { abs_q99: q } });
    });
    const floored = raised(run(steps).out, 'mismatch_growth');
    const bare = raised(run(steps, (p) => (p.detectors.mismatch_growth.baseline_floor = 0)).out, 'mismatch_growth');
    const story = (fs: Finding[]) => fs.map((f) => [f.step, f.slice, f.severity]);
    expect(floored.length).toBeGreaterThan(0);
    expect(story(floored)).toEqual(story(bare));
    const ev = (floored[0].evidence as any).values;
    expect(ev.baseline).toBeLessThan(1e-6); // the measured baseline is kept
    expect(ev.ratio).toBeLessThan(1000);
    expect(ev.ratio).toBeCloseTo(ev.recent / 0.005, 3);
    expect(floored[0].message).toMatch(/× the baseline floor 0\.005 \(baseline 1\.\d+e-7\)$/);
    expect((bare[0].evidence as any).values.ratio).toBeGreaterThan(1e4); // what the floor avoids
  });

  it('a healthy synthetic stream through the reference statistics raises nothing at warn or above', () => {
    const { out } = run(statsStream('healthy', 200, 0, 11, { seqsPerRank: 32 }));
    expect(out.filter((f) => f.severity !== 'info')).toEqual([]);
  });

  it('a synthetic post-tool tail growth is found by post_tool_tail_growth after onset, not before', () => {
    const { out } = run(statsStream('tail_growth', 130, 60, 5, { seqsPerRank: 32 }));
    const f = raised(out, 'post_tool_tail_growth');
    expect(f.length).toBeGreaterThan(0);
    expect(f[0].step).toBeGreaterThan(60);
    expect(f.some((x) => x.severity === 'high')).toBe(true);
  });

  it('post_tool_tail_growth: a growing but immaterial tail (|ℓ| below min_abs) stays info; the same growth at scale reaches high', () => {
    // The healthy demo's case: bf16 rounding moves the old_vs_rollout contrast 4× at |ℓ| q99 ~ 0.02.
    const stream = (scale: number) => Array.from({ length: 90 }, (_, i) => {
      const g = i < 30 ? 1 : 1 + (i - 30) * 0.05; // post_tool tail grows from step 31, pre_tool does not
      const post = { abs_q50: 0.05 * scale, abs_q99: 0.25 * scale * g, abs_q999: 0.4 * scale * g, abs_max: 0.5 * scale * g };
      const pre = { abs_q50: 0.05 * scale, abs_q99: 0.25 * scale, abs_q999: 0.4 * scale, abs_max: 0.5 * scale };
      return step(i + 1, { pair: 'old_vs_rollout', post, pre });
    });
    const sev = (fs: Finding[]) => new Set(fs.filter((f) => f.detector === 'post_tool_tail_growth').map((f) => f.severity));
    const small = sev(run(stream(0.025)).out); // q99 0.006 → 0.025, q999 0.01 → 0.04
    expect(small.has('info')).toBe(true);
    expect([...small].filter((s) => s !== 'info')).toEqual([]);
    expect(sev(run(stream(1)).out).has('high')).toBe(true);
  });

  it('snapshot and restore give the same findings as an uninterrupted run', () => {
    const steps = [...statsStream('tail_growth', 100, 40, 3, { seqsPerRank: 16 })];
    const a = run(steps).out;
    const p = defaultPolicy();
    const s1 = new DetectorSet(p.detectors);
    const out: Finding[] = [];
    for (const r of steps.slice(0, 60)) out.push(...s1.evaluate(r));
    const s2 = new DetectorSet(p.detectors);
    s2.restore(JSON.parse(JSON.stringify(s1.snapshot())));
    for (const r of steps.slice(60)) out.push(...s2.evaluate(r));
    expect(out).toEqual(a);
  });

  it('a detector that throws becomes an info finding, not a crash', () => {
    const r = step(1);
    (r as any).records[0] = null;
    const { out } = run([r]);
    expect(out.some((f) => f.severity === 'info' && f.message.startsWith('detector failed'))).toBe(true);
  });
});
