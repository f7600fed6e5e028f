// Windows, CDF snapshots, baselines, shape change, attribution, snapshot/restore.
import { describe, expect, it } from 'vitest';
import { CDF_GRID, RunStats, attribution, shapeChange } from '../src/stats/index.ts';
import type { StepResult } from '../src/types.ts';
import { refLabels, studentT3, synthStep } from './stats-helpers.ts';

const W = 4, K = 2;
function runSteps(
  rs: RunStats, from: number, to: number, scale: (s: number) => number, alpha: (s: number) => number = () => 0.3, post: (s: number) => number = () => 1,
): StepResult[] {
  const out: StepResult[] = [];
  for (let s = from; s <= to; s++) {
    const d = synthStep({ tokens: 20_000, seed: s, step: s, alpha: alpha(s), gen: (r) => studentT3(r, scale(s)) });
    const lab = refLabels(d), x = d.pairs.policy_vs_ref!;
    for (let t = 0; t < x.length; t++) if (lab[t] === 1) x[t] *= post(s);
    rs.addRankStep(d);
    out.push(...rs.finalizeReady(0));
  }
  return out;
}
const win = (r: StepResult, slice: string) => r.windows.find((w) => w.slice === slice)!;

describe('CDF grid and shape metrics', () => {
  it('grid has ≥64 ascending points, dense in the tail', () => {
    expect(CDF_GRID.length).toBeGreaterThanOrEqual(64);
    for (let i = 1; i < CDF_GRID.length; i++) expect(CDF_GRID[i]).toBeGreaterThan(CDF_GRID[i - 1]);
    expect(CDF_GRID.filter((p) => p >= 0.99).length).toBeGreaterThanOrEqual(20);
  });

  it('identical CDFs have zero change; a scaled CDF has W1 = log(scale) and tail stretch 1', () => {
    const q = CDF_GRID.map((p) => -Math.log(1 - p));
    const z = shapeChange(q, q);
    expect([z.ks, z.w1_log, z.dq99, z.tail_stretch]).toEqual([0, 0, 0, 1]);
    const s = shapeChange(q.map((x) => 2 * x), q);
    expect(s.w1_log).toBeCloseTo(Math.log(2) * (CDF_GRID.at(-1)! - CDF_GRID[0]), 12);
    expect(s.tail_stretch).toBeCloseTo(1, 12);
    expect(s.ks).toBeGreaterThan(0.1);
    expect(s.dq99).toBeCloseTo(q[CDF_GRID.indexOf(0.99)], 12);
  });

  it('attribution terms add up to the change in mean |ℓ|', () => {
    const a = attribution(0.2, 0.1, 0.3, 0.5, 0.12, 0.6);
    const mean = (al: number, pre: number, post: number) => (1 - al) * pre + al * post;
    expect(a.d_mean).toBeCloseTo(mean(0.5, 0.12, 0.6) - mean(0.2, 0.1, 0.3), 15);
    expect(a.alpha_term + a.pre_term + a.post_term).toBeCloseTo(a.d_mean, 15);
  });
});

describe('rolling windows', () => {
  it('window = last W steps: running sum equals a fresh merge; baselines appear on schedule', () => {
    const rs = new RunStats({ worldSize: 1, window: W, fixedBaselineWindows: K });
    const res = runSteps(rs, 1, 14, () => 0.05);
    const w5 = win(res[4], 'all');
    expect([w5.first_step, w5.step]).toEqual([2, 5]);
    // n of the window = sum of the last W steps' n
    const nAll = res.map((r) => r.records.find((x) => x.slice === 'all')!.n);
    expect(win(res[9], 'all').n).toBe(nAll.slice(6, 10).reduce((a, b) => a + b));
    // a fresh RunStats fed only steps 7..10 has the same window CDF as the ring after eviction
    const fresh = runSteps(new RunStats({ worldSize: 1, window: W }), 7, 10, () => 0.05);
    expect(win(fresh[3], 'all').cdf.q).toEqual(win(res[9], 'all').cdf.q);
    // fixed baseline after K·W steps; drift-aware after the first tumbling window
    expect(win(res[K * W - 1], 'all').shape?.fixed).toBeUndefined();
    expect(win(res[K * W], 'all').shape?.fixed).toBeDefined();
    expect(win(res[W - 1], 'all').shape?.drift_aware).toBeUndefined();
    expect(win(res[W], 'all').shape?.drift_aware).toBeDefined();
    expect(win(res[13], 'all').alpha).toBeGreaterThan(0.1);
  });

  it('a post-tool tail blow-up shows in the post_tool shape vs the fixed baseline, not in pre_tool', () => {
    const rs = new RunStats({ worldSize: 1, window: W, fixedBaselineWindows: K });
    const res = runSteps(rs, 1, 16, () => 0.05, () => 0.3, (s) => (s > 12 ? 4 : 1));
    const post = win(res[15], 'post_tool').shape!.fixed!;
    const pre = win(res[15], 'pre_tool').shape!.fixed!;
    const calm = win(res[11], 'post_tool').shape!.fixed!;
    expect(post.ks).toBeGreaterThan(calm.ks + 0.3);
    expect(post.w1_log).toBeGreaterThan(0.9 * Math.log(4) * 0.99);
    expect(post.dq99).toBeGreaterThan(0);
    expect(pre.ks).toBeLessThan(0.1);
    expect(pre.w1_log).toBeLessThan(0.1);
    const a = win(res[15], 'all').attribution!;
    expect(a.post_term).toBeGreaterThan(10 * Math.abs(a.alpha_term));
    expect(a.post_term).toBeGreaterThan(10 * Math.abs(a.pre_term));
    const hot = res.slice(12);
    expect(win(hot[3], 'all').attribution).toBeDefined();
  });

  it('attribution separates more tool use from within-slice change', () => {
    const rs = new RunStats({ worldSize: 1, window: W, fixedBaselineWindows: K });
    const res = runSteps(rs, 1, 16, () => 0.05, (s) => (s > 8 ? 0.7 : 0.2));
    const a = win(res[15], 'all').attribution!;
    expect(Math.abs(a.alpha_term + a.pre_term + a.post_term - a.d_mean)).toBeLessThan(1e-15);
    expect(win(res[15], 'all').alpha).toBeGreaterThan(win(res[7], 'all').alpha);
  });
});

describe('snapshots', () => {
  it('snapshot → JSON → restore continues identically', () => {
    const a = new RunStats({ worldSize: 1, window: W, fixedBaselineWindows: K });
    runSteps(a, 1, 10, () => 0.05);
    const snap = JSON.parse(JSON.stringify(a.snapshot()));
    const b = RunStats.restore(snap, { worldSize: 1 });
    expect(b.lastFinal).toBe(10);
    const ra = runSteps(a, 11, 14, (s) => 0.05 + s / 100);
    const rb = runSteps(b, 11, 14, (s) => 0.05 + s / 100);
    expect(JSON.stringify(rb.map((r) => r.windows))).toBe(JSON.stringify(ra.map((r) => r.windows)));
    // late data for a step before the snapshot is counted, not merged
    b.addRankStep(synthStep({ tokens: 100, seed: 1, step: 3, alpha: 0.3 }));
    expect(b.late.count).toBe(1);
  });

  it('snapshotText (cached ring slots) is exactly JSON.stringify(snapshot()), before and after the ring wraps', () => {
    const a = new RunStats({ worldSize: 1, window: W, fixedBaselineWindows: K });
    for (const [from, to] of [[1, 2], [3, 3], [4, 9], [10, 10], [11, 17]]) {
      runSteps(a, from, to, (s) => 0.05 + s / 50);
      expect(a.snapshotText()).toBe(JSON.stringify(a.snapshot())); // twice: the second from the cache
      expect(a.snapshotText()).toBe(JSON.stringify(a.snapshot()));
    }
    const b = RunStats.restore(JSON.parse(a.snapshotText()), { worldSize: 1 });
    expect(b.snapshotText()).toBe(a.snapshotText());
    runSteps(a, 18, 19, () => 0.07);
    runSteps(b, 18, 19, () => 0.07);
    expect(b.snapshotText()).toBe(a.snapshotText());
    expect(b.snapshotText()).toBe(JSON.stringify(b.snapshot()));
  });
});
