// Directive spacing after a refusal: a partly applied tighten keeps it (its knobs need time to act);
// a tighten with nothing applied releases it (the ladder moves on at the next finding).
import { describe, expect, it } from 'vitest';
import { Controller } from '../src/policy/controller.ts';
import { loadPolicy } from '../src/policy/load.ts';
import type { Directive, StepResult } from '../src/types.ts';
import { bad, step } from './detect-helpers.ts';

const knobs = { beta: 0, epsilon_low: 0.2, epsilon_high: 0.2 };
const range = (a: number, b: number, f: (n: number) => StepResult) => Array.from({ length: b - a + 1 }, (_, i) => f(a + i));

/** Healthy 1..20 with a certified checkpoint at 5, then a persistent failure; the tighten is acked as `ack`. */
function run(ack: { changes: { knob: string; old: number; new: number }[]; applied: boolean }) {
  const c = new Controller(loadPolicy(undefined, { tighten: { max_tightens: 1 }, checkpoints: { window: 5, certify_after: 5 } }));
  const out: Directive[] = [];
  for (const r of range(1, 20, (n) => step(n, { extra: { knobs } }))) {
    c.onStepResult(r);
    if (r.step === 5) c.onCheckpoint(5, '/ck/5');
  }
  // ESS collapses from 21 (tighten at 23); a second detector (exceedance) raises two steps later.
  const failing = (n: number) =>
    n < 23 ? bad(n, { knobs }) : step(n, { pair: 'old_vs_rollout', all: { ess: 0.1 }, post: { ess: 0.1, exceed_2: 0.2 }, extra: { knobs } });
  for (const r of range(21, 40, failing)) {
    const d = c.onStepResult(r).directive;
    if (!d || d.action === 'warn') continue;
    out.push(d);
    // The ack reaches the engine before the next step's data (acks are sent ahead of steps).
    if (d.action === 'tighten') c.onAck({ directive_id: d.id, rank: 0, step: d.apply_at_step, refused: 'E_NO_REF_MODEL: ...', ...ack });
  }
  return out.map((d) => [d.action, d.step] as const);
}

describe('directive spacing after a refusal', () => {
  it('a partly applied tighten (beta refused, epsilons applied) keeps min_steps_between_directives', () => {
    const ds = run({ applied: true, changes: [{ knob: 'epsilon_low', old: 0.2, new: 0.15 }, { knob: 'epsilon_high', old: 0.2, new: 0.15 }] });
    expect(ds[0][0]).toBe('tighten');
    expect(ds[1][0]).toBe('rollback');
    expect(ds[1][1] - ds[0][1]).toBeGreaterThanOrEqual(loadPolicy().min_steps_between_directives);
  });

  it('a tighten with nothing applied lets the ladder move on at the next finding', () => {
    const partly = run({ applied: true, changes: [{ knob: 'epsilon_low', old: 0.2, new: 0.15 }] });
    const none = run({ applied: false, changes: [] });
    expect(none[0]).toEqual(['tighten', 23]);
    expect(none[1]).toEqual(['rollback', 25]); // the exceedance finding, no spacing
    expect(partly[1][0]).toBe('rollback');
    expect(partly[1][1]).toBeGreaterThanOrEqual(23 + loadPolicy().min_steps_between_directives);
  });
});
