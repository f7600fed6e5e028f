// `--commit async` (issue 14/17: disk off the reply path): replies do not wait for fsync, and
// recorded_through only ever names steps that are on disk; a failed fsync still ends in E_STORE, and
// no reply ever claimed the steps it lost.
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames, type SyntheticRun } from '../src/record/synthetic.ts';
import { readRun, storeFaults } from '../src/store/index.ts';
import { tempDir } from './engine-process.ts';
import { inprocEngines } from './inproc-engine.ts';

const { engine, dealer } = inprocEngines();
afterEach(() => {
  storeFaults.hook = null;
});

async function setup(runDir: string) {
  const server = await engine(runDir, { options: { window: 4, commit: 'async', stateEvery: 3 } });
  return (await dealer(server.endpoint)).req;
}

describe('--commit async', () => {
  it('recorded_through trails the replies, never claims more than the disk holds, and the bye ack is final', async () => {
    const runDir = tempDir('tg-async-');
    const req = await setup(runDir);
    const run: SyntheticRun = { runId: 'async-run' };
    await req(helloFrames(run));
    let last = -1;
    for (let s = 0; s < 20; s++) {
      const d = await req(stepFrames(run, s));
      expect(d).toMatchObject({ type: 'directive', step: s });
      const r = d.recorded_through ?? -1;
      expect(r).toBeLessThanOrEqual(s);
      expect(r).toBeGreaterThanOrEqual(last);
      last = r;
      if (r >= 0) expect(readRun(path.join(runDir, 'async-run')).steps.records.map((x) => x.step)).toContain(r);
    }
    const bye = await req([encodeHeader({ type: 'bye', version: [1, 1], run_id: 'async-run', rank: 0 })]);
    expect(bye).toMatchObject({ type: 'ack', of: 'bye', recorded_through: 19 });
    expect(readRun(path.join(runDir, 'async-run')).steps.records.map((x) => x.step)).toEqual([...Array(20).keys()]);
  });

  it('a failed fsync becomes E_STORE; the steps it lost were never claimed and are stored once after the reopen', async () => {
    const runDir = tempDir('tg-async-eio-');
    const req = await setup(runDir);
    const run: SyntheticRun = { runId: 'async-eio' };
    await req(helloFrames(run));
    let claimed = -1;
    for (let s = 0; s < 5; s++) claimed = Math.max(claimed, (await req(stepFrames(run, s))).recorded_through ?? -1);
    storeFaults.hook = (op) => (op === 'fsync' ? Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }) : null);
    let code: string | undefined;
    for (let s = 5; s < 40 && !code; s++) {
      const h = await req(stepFrames(run, s));
      if (h.type === 'error') code = h.code;
      else claimed = Math.max(claimed, h.recorded_through ?? -1);
    }
    expect(code).toBe('E_STORE');
    storeFaults.hook = null;
    const w = await req(helloFrames(run));
    expect(w.type).toBe('welcome');
    const stored = readRun(path.join(runDir, 'async-eio')).steps.records.map((x) => x.step);
    expect(stored).toEqual([...Array((w.resume?.last_step ?? -1) + 1).keys()]);
    expect(w.resume.last_step).toBeGreaterThanOrEqual(claimed); // nothing claimed was lost
    for (let s = w.resume.last_step + 1; s < w.resume.last_step + 4; s++) expect(await req(stepFrames(run, s))).toMatchObject({ type: 'directive', step: s });
  });
});
