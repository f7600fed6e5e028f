import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PolicyError, deepMerge, defaultPolicy, loadPolicy } from '../src/policy/load.ts';
import { planTighten } from '../src/policy/tighten.ts';

const dir = mkdtempSync(join(tmpdir(), 'tg-policy-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const fail = (fn: () => unknown): PolicyError => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PolicyError);
    return e as PolicyError;
  }
  throw new Error('expected a PolicyError');
};

describe('policy file', () => {
  it('the shipped default is valid and complete', () => {
    const p = defaultPolicy();
    expect(p.mode).toBe('control');
    expect(Object.keys(p.detectors).sort()).toEqual(
      ['alpha_ramp', 'ess_collapse', 'exceedance', 'mismatch_growth', 'nonfinite', 'post_tool_tail_growth', 'rank_missing', 'rank_outlier'],
    );
  });

  it('a YAML file deep-merges over the default: maps merge, lists and scalars replace', () => {
    const p = loadPolicy(file('o.yaml', 'mode: observe\ndetectors:\n  ess_collapse:\n    ess: { warn: 0.6 }\n    slices: [post_tool]\n'));
    expect(p.mode).toBe('observe');
    expect(p.detectors.ess_collapse.ess).toEqual({ warn: 0.6, high: 0.2 });
    expect(p.detectors.ess_collapse.slices).toEqual(['post_tool']);
    expect(p.detectors.exceedance).toEqual(defaultPolicy().detectors.exceedance);
  });

  it('a JSON file works too', () => {
    const p = loadPolicy(file('o.json', JSON.stringify({ tighten: { max_tightens: 5 }, lag: 2 })));
    expect(p.tighten.max_tightens).toBe(5);
    expect(p.lag).toBe(2);
    expect(p.tighten.beta.factor).toBe(2);
  });

  it('errors name the key, the expected type and what was given', () => {
    const e = fail(() => loadPolicy(file('bad.yaml', 'lag: "two"\nmode: steer\ndetectors:\n  ess_collapse:\n    ess: { warn: abc }\n    bogus: 1\n')));
    expect(e.code).toBe('E_POLICY_INVALID');
    expect(e.errors).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/bad\.yaml: lag: expected integer, got string "two"/),
        expect.stringMatching(/mode: expected one of "observe", "control", got string "steer"/),
        expect.stringMatching(/detectors\.ess_collapse\.ess\.warn: expected number or null, got string "abc"/),
        expect.stringMatching(/detectors\.ess_collapse\.bogus: unknown key/),
      ]),
    );
  });

  it('unknown top-level keys and out-of-range values are refused', () => {
    const e = fail(() => loadPolicy(undefined, { tighten: { epsilon: { factor: 1.5 } }, colour: 'red' } as any));
    expect(e.errors.join('\n')).toMatch(/tighten\.epsilon\.factor: must be <= 1/);
    expect(e.errors.join('\n')).toMatch(/colour: unknown key/);
  });

  it('unreadable and unparsable files have their own codes', () => {
    expect(fail(() => loadPolicy(join(dir, 'missing.yaml'))).code).toBe('E_POLICY_READ');
    expect(fail(() => loadPolicy(file('broken.yaml', 'mode: [control\n'))).code).toBe('E_POLICY_PARSE');
    expect(fail(() => loadPolicy(file('list.yaml', '- a\n- b\n'))).code).toBe('E_POLICY_PARSE');
  });

  it('deepMerge does not touch its inputs', () => {
    const a = { x: { y: 1, z: [1, 2] } };
    const m = deepMerge(a, { x: { z: [3] } });
    expect(m).toEqual({ x: { y: 1, z: [3] } });
    expect(a.x.z).toEqual([1, 2]);
  });
});

describe('tighten targets', () => {
  const t = defaultPolicy().tighten;
  it('raises beta by the factor, shrinks epsilons and the IS clip, sets the off-policy mask', () => {
    const plan = planTighten({ beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28, is_clip_max: 2, off_policy_mask_threshold: null }, t, new Set());
    expect(plan.targets).toEqual({ beta: 0.08, epsilon_low: 0.15, epsilon_high: 0.21, is_clip_max: 1.5, off_policy_mask_threshold: 0.5 });
    expect(plan.previous).toMatchObject({ beta: 0.04, off_policy_mask_threshold: null });
  });

  it('respects bounds, skips knobs at their bound, absent or refused', () => {
    const plan = planTighten({ beta: 0.8, epsilon_low: 0.05, epsilon_high: 0.06, is_clip_max: null as unknown as undefined, off_policy_mask_threshold: 0.01 }, t, new Set(['epsilon_high']));
    expect(plan.targets).toEqual({ beta: 1 });
    expect(plan.skipped).toMatchObject({
      epsilon_low: 'at its bound',
      epsilon_high: 'refused by the trainer earlier',
      is_clip_max: 'no IS clip bound in use',
      off_policy_mask_threshold: 'at its bound',
    });
    expect(planTighten({}, t, new Set()).targets).toEqual({});
  });

  it('beta from 0 goes to from_zero (which a trainer without a reference model refuses)', () => {
    expect(planTighten({ beta: 0 }, t, new Set()).targets).toEqual({ beta: 0.04 });
    expect(planTighten({ beta: 0 }, { ...t, beta: { ...t.beta, from_zero: null } }, new Set()).targets).toEqual({});
  });
});
