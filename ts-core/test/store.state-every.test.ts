// state.json every K steps (--state-every, default 10): a kill -9 between two saves loses none of the
// stored steps, welcome.resume still names the last stored step (from steps.jsonl), and steps the
// trainer sends again after the restart are never stored twice. Real engine process, real ZeroMQ.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SyntheticRun } from '../src/record/synthetic.ts';
import { readRun } from '../src/store/index.ts';
import { lastLine } from '../src/store/jsonl.ts';
import { client, startEngine, stopEngine, tempDir } from './engine-process.ts';

// No --state-every in startEngine: the default is what is tested.
describe('state.json every K steps', () => {
  it('kill -9 between saves: resume names the last stored step, resent steps are not stored twice', async () => {
    const runDir = tempDir('tg-stevery-');
    const run: SyntheticRun = { runId: 'every-run' }; // its first directive (a decision saves state too) comes at step 12
    const e1 = await startEngine(runDir);
    const c1 = await client(e1.endpoint, run);
    for (let s = 1; s <= 11; s++) await c1.step(s);
    c1.close();
    await stopEngine(e1.proc, 'SIGKILL');

    const before = readRun(path.join(runDir, 'every-run'));
    expect(before.directives.records).toEqual([]); // no decision yet
    expect(before.state?.last_step).toBe(10); // saved at step 10, not at 11
    expect(before.steps.records.map((e) => e.step)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));

    const e2 = await startEngine(runDir);
    const c2 = await client(e2.endpoint, run);
    expect(c2.welcome.resume).toEqual({ last_step: 11 });
    for (let s = 10; s <= 16; s++) await c2.step(s); // 10..11 again (a trainer resending), then new steps
    c2.close();
    await stopEngine(e2.proc, 'SIGTERM'); // graceful: the final state is saved

    const after = readRun(path.join(runDir, 'every-run'));
    expect(after.steps.records.map((e) => e.step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    const metricSteps = after.metrics.records.filter((m) => m.pair === 'policy_vs_ref' && m.slice === 'all').map((m) => m.step);
    expect(metricSteps).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(after.state?.last_step).toBe(16);
    expect(after.meta?.sessions?.map((s) => s.resumed_from_step)).toEqual([null, 10]); // where the statistics resumed
    // Windows go on after the restart (step 11 is missing from them: the documented cost of K > 1).
    expect(after.windows.records.some((w) => w.step === 16)).toBe(true);
  });

  it('lastLine reads the last complete line of a long file backwards', () => {
    const dir = tempDir('tg-lastline-');
    const f = path.join(dir, 'x.jsonl');
    expect(lastLine(f)).toBeNull();
    fs.writeFileSync(f, '');
    expect(lastLine(f)).toBeNull();
    const big = 'y'.repeat(200_000); // longer than the first backwards chunk
    fs.writeFileSync(f, `{"step":1}\n{"step":2,"pad":"${big}"}\n`);
    expect(JSON.parse(lastLine(f)!).step).toBe(2);
    fs.writeFileSync(f, `{"step":7,"pad":"${big}"}\n`);
    expect(JSON.parse(lastLine(f)!).step).toBe(7);
    fs.writeFileSync(f, `{"step":1}\n{"step":2}\n`);
    expect(lastLine(f)).toBe('{"step":2}');
  });
});
