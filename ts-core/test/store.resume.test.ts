// Resume after a crash: a real engine process, real ZeroMQ, kill -9, restart on the same run dir.
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SyntheticRun } from '../src/record/synthetic.ts';
import { readRun } from '../src/store/index.ts';
import { client, startEngine, stopEngine, tempDir } from './engine-process.ts';

describe('resume after an engine restart', () => {
  // --state-every 1: state.json after every step, so even a kill -9 is invisible (the default, 10, is
  // covered by store.state-every.test.ts).
  it('continues windows, step sequence and controller state after kill -9', async () => {
    const runDir = tempDir('tg-resume-');
    const run: SyntheticRun = { runId: 'resume-run', onset: 4 };

    const e1 = await startEngine(runDir, ['--state-every', '1']);
    const c1 = await client(e1.endpoint, run);
    expect(c1.welcome.type).toBe('welcome');
    expect(c1.welcome.resume).toBeNull();
    for (let s = 1; s <= 6; s++) await c1.step(s);
    c1.close();
    await stopEngine(e1.proc, 'SIGKILL');

    const before = readRun(path.join(runDir, 'resume-run'));
    expect(before.state?.last_step).toBe(6);
    expect(before.steps.records.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6]);

    const e2 = await startEngine(runDir, ['--state-every', '1']);
    const c2 = await client(e2.endpoint, run);
    expect(c2.welcome.resume).toEqual({ last_step: 6 });
    for (let s = 7; s <= 10; s++) await c2.step(s);
    c2.close();
    await stopEngine(e2.proc, 'SIGTERM');

    const after = readRun(path.join(runDir, 'resume-run'));
    expect(after.steps.records.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(after.meta?.sessions?.map((s) => s.resumed_from_step)).toEqual([null, 6]);
    // The window ending at step 8 spans steps 5..8: two of them were seen by the killed engine.
    const n = (step: number, slice: string) => after.metrics.records.find((m) => m.step === step && m.pair === 'policy_vs_ref' && m.slice === slice)!.n;
    for (const slice of ['pre_tool', 'post_tool'] as const) {
      const w8 = after.windows.records.find((w) => w.step === 8 && w.pair === 'policy_vs_ref' && w.slice === slice)!;
      expect(w8.first_step).toBe(5);
      expect(w8.n).toBe(n(5, slice) + n(6, slice) + n(7, slice) + n(8, slice));
    }
    // The same ten steps through one engine give the same windows: the restart is invisible.
    const runDir2 = tempDir('tg-resume-ref-');
    const e3 = await startEngine(runDir2);
    const c3 = await client(e3.endpoint, run);
    for (let s = 1; s <= 10; s++) await c3.step(s);
    c3.close();
    await stopEngine(e3.proc, 'SIGTERM');
    const ref = readRun(path.join(runDir2, 'resume-run'));
    const strip = (w: unknown) => JSON.stringify(w);
    expect(after.windows.records.map(strip)).toEqual(ref.windows.records.map(strip));
    expect(after.metrics.records.map(strip)).toEqual(ref.metrics.records.map(strip));
    expect(after.directives.records.map(strip)).toEqual(ref.directives.records.map(strip));
  });
});
