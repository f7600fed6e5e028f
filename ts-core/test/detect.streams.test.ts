// Each detector on short seeded streams through the engine's real statistics (RunStats) and the
// default policy: detection after onset, silence on the nuisances (common scale drift, α ramp,
// sequence-length changes, shape wander), and the properties the controller relies on.
import { describe, expect, it } from 'vitest';
import { Controller } from '../src/policy/controller.ts';
import { loadPolicy } from '../src/policy/load.ts';
import type { Directive, Finding } from '../src/types.ts';
import { specStream, type StreamSpec } from '../bench/detection-streams.ts';

const base: StreamSpec = { family: 'healthy', seed: 1, steps: 140, onset: 70, alpha: 0.3, tokens: 3000, ranks: 2, law: 't3', rate: 0 };

function run(over: Partial<StreamSpec>) {
  const spec = { ...base, ...over };
  const c = new Controller(loadPolicy());
  const findings: Finding[] = [];
  const directives: Directive[] = [];
  for (const r of specStream(spec)) {
    const d = c.onStepResult(r);
    findings.push(...d.findings);
    if (d.directive) directives.push(d.directive);
  }
  return { spec, findings, directives };
}
const ev = (f: Finding) => (f.evidence as any).event as string;
const atLeast = (fs: Finding[], sev: Finding['severity'][]) => fs.filter((f) => sev.includes(f.severity) && ev(f) !== 'clear');

describe('detectors on seeded streams (real statistics, default policy)', () => {
  it('post_tool heavy-component growth: high after onset on policy_vs_ref, nothing before, never cleared while it grows', () => {
    const { findings } = run({ family: 'weight_growth', rate: 0.1, seed: 3 });
    const g = findings.filter((f) => f.detector === 'post_tool_tail_growth');
    const high = g.find((f) => f.severity === 'high');
    expect(high).toBeDefined();
    expect(high!.pair).toBe('policy_vs_ref');
    expect(high!.step).toBeGreaterThanOrEqual(70);
    expect(high!.step - 70).toBeLessThanOrEqual(40);
    expect(findings.filter((f) => f.step < 70 && f.severity !== 'info')).toEqual([]);
    expect(g.filter((f) => ev(f) === 'clear')).toEqual([]);
    expect((high!.evidence as any).values).toMatchObject({ mode: 'contrast' });
    expect(high!.message).toMatch(/pre_tool within its band/);
  });

  it('growth of the tail component scale is found too', () => {
    const { findings } = run({ family: 'tail_scale', rate: 2, seed: 4, law: 'laplace' });
    const high = findings.find((f) => f.detector === 'post_tool_tail_growth' && f.severity === 'high');
    expect(high?.step).toBeGreaterThanOrEqual(70);
  });

  it('old_vs_rollout mismatch growing in post_tool over a background mismatch on every token is found on that pair', () => {
    const { findings } = run({ family: 'mismatch', rate: 0.2, seed: 5 });
    const high = findings.find((f) => f.detector === 'post_tool_tail_growth' && f.severity === 'high');
    expect(high).toMatchObject({ pair: 'old_vs_rollout', slice: 'post_tool' });
    expect(high!.step).toBeGreaterThanOrEqual(70);
  });

  it.each([
    ['benign scale drift of every slice (0.2 %/step)', { family: 'benign_drift', rate: 0.2 }],
    ['α ramp 0.1 → 0.6 with stationary slices', { family: 'alpha_ramp', alpha: 0.1 }],
    ['sequence-length changes', { family: 'seq_len' }],
    ['slow shape wander', { family: 'shape_wander', law: 't4' }],
    ['healthy, normal ℓ, one rank', { family: 'healthy', law: 'normal', ranks: 1, tokens: 6000 }],
  ] as [string, Partial<StreamSpec>][])('silent on %s: no finding at warn or above, no directive', (_name, over) => {
    const { findings, directives } = run({ ...over, steps: 160, seed: 7 });
    expect(atLeast(findings, ['warn', 'high', 'critical'])).toEqual([]);
    expect(directives).toEqual([]);
  });

  it('the α ramp itself is reported as info only', () => {
    const { findings } = run({ family: 'alpha_ramp', alpha: 0.1, steps: 90, seed: 8 }); // 0.0056/step
    const ramp = findings.filter((f) => f.detector === 'alpha_ramp');
    expect(ramp.length).toBeGreaterThan(0);
    expect(ramp.every((f) => f.severity === 'info')).toBe(true);
  });

  it('a ×3 rank outlier reaches high within 20 steps, naming the rank', () => {
    const { findings } = run({ family: 'rank_outlier', rate: 3, ranks: 4, seed: 9, steps: 100 });
    const high = findings.find((f) => f.detector === 'rank_outlier' && f.severity === 'high');
    expect(high).toMatchObject({ rank: 1, slice: 'post_tool' });
    expect(high!.step - 70).toBeLessThanOrEqual(20);
    expect(findings.filter((f) => f.detector === 'rank_outlier' && f.rank !== 1 && f.severity !== 'info')).toEqual([]);
  });

  it('NaN gives critical at its own step', () => {
    const { findings } = run({ family: 'nonfinite', seed: 2, steps: 80 });
    expect(findings.find((f) => f.detector === 'nonfinite')).toMatchObject({ severity: 'critical', step: 70 });
  });
});
