// The detection benchmark's reduced grid (npm run bench:detect runs the full one): every stream
// family through the real statistics and the default policy, the calibrated baselines and the oracle.
// Asserts detection and silence, never time.
import { describe, expect, it } from 'vitest';
import { loadPolicy } from '../src/policy/load.ts';
import { NUISANCE } from '../bench/detection-streams.ts';
import { buildGrid, runGrid, type Evaluation } from '../bench/detection-grid.ts';

let ev: Evaluation;
const grid = buildGrid({ seeds: 2, nuisanceSteps: 150, rates: [0.1], small: true });
const of = (f: string) => ev.scored.filter((s) => s.r.spec.family === f);
const delay = (s: Evaluation['scored'][number], step: number | null) => (step === null ? null : step - s.r.spec.onset);

describe('detection benchmark, reduced grid', () => {
  it('runs every family', { timeout: 600_000 }, () => {
    ev = runGrid(grid, loadPolicy());
    expect(new Set(ev.scored.map((s) => s.r.spec.family))).toEqual(new Set(['healthy', 'benign_drift', 'alpha_ramp', 'seq_len', 'shape_wander', 'weight_growth', 'tail_scale', 'mismatch', 'rank_outlier', 'nonfinite']));
  });

  it('nuisance streams: no finding at high or above, no control directive', () => {
    const nuisance = ev.scored.filter((s) => NUISANCE.includes(s.r.spec.family));
    expect(nuisance.flatMap((s) => s.r.raises.filter((x) => x.severity !== 'warn'))).toEqual([]);
    expect(nuisance.reduce((a, s) => a + s.controlDirectives, 0)).toBe(0);
    expect(ev.tgNuisanceHigh).toBe(0);
  });

  it('calibrated baselines stay silent on the nuisance streams they were calibrated on', () => {
    for (const s of ev.scored.filter((x) => NUISANCE.includes(x.r.spec.family))) {
      expect([s.base.mean_abs, s.base.kl_k3, s.base.q99_drift_aware]).toEqual([null, null, null]);
    }
  });

  it('post-tool growth (0.1 pp/step of a 10× component): high within 40 steps, never after a calibrated baseline, never cleared', () => {
    for (const s of of('weight_growth')) {
      const h = delay(s, s.tgHigh);
      expect(h).not.toBeNull();
      expect(h!).toBeLessThanOrEqual(40);
      for (const b of [s.base.mean_abs, s.base.kl_k3, s.base.q99_drift_aware]) if (b !== null) expect(s.tgHigh!).toBeLessThanOrEqual(b);
      expect(s.clearedWhileGrowing).toBe(false);
      expect(s.oracle).not.toBeNull(); // the oracle fires too, and no later than at its own horizon
    }
  });

  it('tail-scale growth and old_vs_rollout mismatch growth reach high', () => {
    for (const s of [...of('tail_scale'), ...of('mismatch')]) expect([s.r.spec.family, s.r.spec.law, s.r.spec.ranks, s.tgHigh]).not.toContain(null);
  });

  it('rank outliers ×3 and more reach high within 20 steps naming rank 1; NaN/Inf is critical at its step', () => {
    const ranks = of('rank_outlier').filter((x) => x.r.spec.rate >= 3);
    expect(ranks.length).toBeGreaterThan(0);
    for (const s of ranks) expect(delay(s, s.tgHigh) ?? Infinity).toBeLessThanOrEqual(20);
    for (const s of of('nonfinite')) expect(s.r.raises.find((x) => x.detector === 'nonfinite')).toMatchObject({ severity: 'critical', step: s.r.spec.onset });
  });
});
