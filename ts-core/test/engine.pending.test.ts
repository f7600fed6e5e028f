// Run glue: what waits for each rank's next reply when several steps finalise between two of its messages
// (proto/README.md "Directive contract": every rank gets every control directive).
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Run } from '../src/engine/run.ts';
import type { Pipeline } from '../src/engine/pipeline.ts';
import type { Directive, StepData, StepResult } from '../src/types.ts';
import { step as stepResult } from './detect-helpers.ts';

const directive = (action: Directive['action'], step: number): Directive => ({
  id: `r/${step}/${action}`, action, step, apply_at_step: step + 1, params: {}, reason: '', evidence: {},
});

/** A pipeline whose finalizeReady hands over `ready` (StepResults) and whose decisions come from `decide`. */
function run(decide: Record<number, Directive>) {
  let ready: StepResult[] = [];
  const pipeline: Pipeline = {
    finalizeReady: () => [ready, (ready = [])][0],
    onStepResult: (r) => decide[r.step] ?? null,
  };
  const hello = { type: 'hello', run_id: 'r', rank: 0, world_size: 2, trainer: 'grpo' } as any;
  const r = new Run('r', hello, pipeline, {} as any, pino({ level: 'silent' }));
  const finalise = (...steps: number[]) => (ready = steps.map((n) => stepResult(n)));
  const rank = (rank: number, step: number) => r.ingestStep({ rank, step, receivedAt: 0 } as StepData);
  return { finalise, rank };
}

describe('Run: the directives waiting for each rank', () => {
  it('a warn finalised later does not displace a rollback no rank has received yet; every rank gets it once', () => {
    const { finalise, rank } = run({ 23: directive('rollback', 23), 24: directive('warn', 24) });
    expect(rank(0, 24).action).toBe('noop'); // rank 0 is ahead; steps 23, 24 wait for rank 1
    finalise(23, 24);
    // Decided while rank 1's step 24 is handled; rank 0 answered 24 already: it can meet 25 + D.
    expect(rank(1, 24)).toMatchObject({ action: 'rollback', step: 23, apply_at_step: 26 });
    expect(rank(0, 25)).toMatchObject({ action: 'rollback', step: 23, apply_at_step: 26 });
    expect(rank(0, 26).action).toBe('noop');
    expect(rank(1, 25).action).toBe('noop');
  });

  it('once a rank has a directive, a newer decision queues behind it instead of replacing it', () => {
    const { finalise, rank } = run({ 5: directive('tighten', 5), 6: directive('rollback', 6) });
    finalise(5);
    expect(rank(0, 5)).toMatchObject({ action: 'tighten', apply_at_step: 6 });
    finalise(6);
    // rank 1 has not collected the tighten: the rollback waits one more reply for it.
    expect(rank(0, 6)).toMatchObject({ action: 'rollback', apply_at_step: 8 });
    expect(rank(1, 5)).toMatchObject({ action: 'tighten' });
    expect(rank(1, 6)).toMatchObject({ action: 'rollback' });
  });

  it('a newer control directive or warn replaces an older warn', () => {
    const { finalise, rank } = run({ 5: directive('warn', 5), 6: directive('tighten', 6) });
    finalise(5, 6);
    expect(rank(0, 7)).toMatchObject({ action: 'tighten', step: 6 });
  });
});
