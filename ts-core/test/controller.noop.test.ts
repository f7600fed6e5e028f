import { describe, expect, it } from 'vitest';
import { Controller } from '../src/policy/controller.ts';
import { loadPolicy } from '../src/policy/load.ts';
import type { StepResult } from '../src/types.ts';
import { bad, step } from './detect-helpers.ts';

const ctl = () => new Controller(loadPolicy(undefined, { tighten: { max_tightens: 0 } }));
const range = (a: number, b: number, f: (n: number) => StepResult) => Array.from({ length: b - a + 1 }, (_, i) => f(a + i));

describe('noop params: the checkpoint verdicts the shim prunes its copies by', () => {
  it('lists certified checkpoints and the rejected ones newer than the newest certified', () => {
    const c = ctl();
    range(1, 10, step).forEach((r) => c.onStepResult(r));
    c.onCheckpoint(10, '/ck/10');
    range(11, 20, step).forEach((r) => c.onStepResult(r));
    c.onCheckpoint(20, '/ck/20');
    range(21, 22, step).forEach((r) => c.onStepResult(r));
    c.onCheckpoint(22, '/ck/22');
    expect(c.noop(22).params).toEqual({ certified_checkpoints: [{ step: 10, path: '/ck/10' }] }); // 20, 22 undecided
    [23, 24, 25].map((n) => bad(n)).forEach((r) => c.onStepResult(r));
    expect(c.noop(25).params).toEqual({
      certified_checkpoints: [{ step: 10, path: '/ck/10' }],
      rejected_checkpoints: [{ step: 20, path: '/ck/20' }, { step: 22, path: '/ck/22' }],
    });
  });

  it('lists checkpoints invalidated when the trainer went back; none while nothing is decided', () => {
    const c = ctl();
    expect(c.noop(1).params).toEqual({});
    range(1, 10, step).forEach((r) => c.onStepResult(r));
    c.onCheckpoint(10, '/ck/10');
    range(11, 25, step).forEach((r) => c.onStepResult(r));
    c.onCheckpoint(25, '/ck/25');
    range(26, 28, step).forEach((r) => c.onStepResult(r));
    c.onStepResult(step(12)); // a resume from checkpoint-11's trajectory: 25 belongs to an abandoned one
    expect(c.noop(12).params).toEqual({
      certified_checkpoints: [{ step: 10, path: '/ck/10' }],
      rejected_checkpoints: [{ step: 25, path: '/ck/25' }],
    });
  });
});
