// Run glue: what waits for rank 0's next reply when several steps finalise between two of its messages.
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

describe('Run: the directive waiting for rank 0', () => {
  it('a warn finalised later does not displace a rollback rank 0 has not received yet', () => {
    const { finalise, rank } = run({ 23: directive('rollback', 23), 24: directive('warn', 24) });
    expect(rank(0, 24).action).toBe('noop'); // rank 0 is ahead; steps 23, 24 wait for rank 1
    finalise(23, 24);
    expect(rank(1, 24).action).toBe('noop'); // rank 1 never gets directives
    expect(rank(0, 25)).toMatchObject({ action: 'rollback', step: 23 });
    expect(rank(0, 26).action).toBe('noop');
  });

  it('a newer control directive or warn replaces an older warn', () => {
    const { finalise, rank } = run({ 5: directive('warn', 5), 6: directive('tighten', 6) });
    finalise(5, 6);
    expect(rank(0, 7)).toMatchObject({ action: 'tighten', step: 6 });
  });
});
