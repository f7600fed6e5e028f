// A session belongs to its connection; a new hello takes it over explicitly; a run id is never reused
// silently (proto/README.md, hello; codes E_NO_SESSION, E_SESSION, E_RUN_EXISTS).
import { describe, expect, it } from 'vitest';
import { decodeHeader, encodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames, type SyntheticRun } from '../src/record/synthetic.ts';
import * as fs from 'node:fs';
import { tempDir } from './engine-process.ts';
import { inprocEngines } from './inproc-engine.ts';

const { engine, dealer, stop } = inprocEngines();
const conn = async (endpoint: string) => (await dealer(endpoint)).req;

const hello = (run: SyntheticRun, resume?: boolean) => [encodeHeader({ ...decodeHeader(helloFrames(run)[0]), ...(resume === undefined ? {} : { resume }) })];

describe('sessions and run ids', () => {
  it('a socket that never said hello cannot send into another connection\'s session', async () => {
    const server = await engine(tempDir('tg-sess-'));
    const run: SyntheticRun = { runId: 'owned' };
    const owner = await conn(server.endpoint);
    const intruder = await conn(server.endpoint);
    expect((await owner(helloFrames(run))).type).toBe('welcome');
    expect(await owner(stepFrames(run, 0))).toMatchObject({ type: 'directive', step: 0 });
    expect(await intruder(stepFrames(run, 1))).toMatchObject({ type: 'error', code: 'E_NO_SESSION', fatal: true });
    const ack = encodeHeader({ type: 'ack', version: [1, 1], run_id: 'owned', rank: 0, directive_id: 'constructor', step: 1, applied: true });
    expect(await intruder([ack])).toMatchObject({ type: 'error', code: 'E_NO_SESSION' });
    expect(await owner(stepFrames(run, 1))).toMatchObject({ type: 'directive', step: 1 }); // untouched
  });

  it('a new hello takes the session over explicitly; the old connection gets E_SESSION', async () => {
    const server = await engine(tempDir('tg-take-'));
    const run: SyntheticRun = { runId: 'taken' };
    const a = await conn(server.endpoint);
    const b = await conn(server.endpoint);
    await a(helloFrames(run));
    await a(stepFrames(run, 0));
    expect((await b(hello(run, true))).type).toBe('welcome');
    expect(await a(stepFrames(run, 1))).toMatchObject({ type: 'error', code: 'E_SESSION', fatal: true });
    expect(await b(stepFrames(run, 1))).toMatchObject({ type: 'directive', step: 1 });
    // a bye from the old connection does not end the new owner's session
    expect(await a([encodeHeader({ type: 'bye', version: [1, 1], run_id: 'taken', rank: 0 })])).toMatchObject({ type: 'ack', of: 'bye' });
    expect(await b(stepFrames(run, 2))).toMatchObject({ type: 'directive', step: 2 });
  });

  it('run id reuse: resume false over stored steps is E_RUN_EXISTS (also after a restart); resume true continues', async () => {
    const runDir = tempDir('tg-exists-');
    let server = await engine(runDir);
    const run: SyntheticRun = { runId: 'reused' };
    let c = await conn(server.endpoint);
    expect((await c(hello(run, false))).type).toBe('welcome'); // a new run
    for (let s = 0; s < 3; s++) await c(stepFrames(run, s));
    await c([encodeHeader({ type: 'bye', version: [1, 1], run_id: 'reused', rank: 0 })]);
    const e = await c(hello(run, false));
    expect(e).toMatchObject({ type: 'error', code: 'E_RUN_EXISTS', fatal: true });
    expect(e.message).toMatch(/steps up to 2.*new run_id.*resume: true/);
    await stop(server);
    server = await engine(runDir);
    c = await conn(server.endpoint);
    expect(await c(hello(run, false))).toMatchObject({ type: 'error', code: 'E_RUN_EXISTS' });
    expect(await c(hello(run, true))).toMatchObject({ type: 'welcome', resume: { last_step: 2 } });
    expect(await c(stepFrames(run, 3))).toMatchObject({ type: 'directive', step: 3 });
  });

  it('one connection cannot take every run slot: hellos for more than --max-runs-per-conn runs get E_LIMIT', async () => {
    const server = await engine(tempDir('tg-perconn-'), { maxRunsPerConn: 3 });
    const flood = await conn(server.endpoint);
    const codes: string[] = [];
    for (let i = 0; i < 10; i++) codes.push((await flood(helloFrames({ runId: `flood-${i}` }))).code ?? 'welcome');
    expect(codes).toEqual(['welcome', 'welcome', 'welcome', ...Array(7).fill('E_LIMIT')]);
    expect((await flood(helloFrames({ runId: 'flood-1' }))).type).toBe('welcome'); // a run it holds: fine
    const other = await conn(server.endpoint);
    expect((await other(helloFrames({ runId: 'someone-else' }))).type).toBe('welcome');
  });

  it('retention: --retain-runs keeps the newest run directories; a run that stored nothing leaves no directory', async () => {
    const runDir = tempDir('tg-retain-');
    let server = await engine(runDir);
    for (const id of ['old-1', 'old-2', 'new-1', 'new-2']) {
      const c = await conn(server.endpoint);
      await c(helloFrames({ runId: id }));
      await c(stepFrames({ runId: id }, 0));
      await c([encodeHeader({ type: 'bye', version: [1, 1], run_id: id, rank: 0 })]);
      await new Promise((r) => setTimeout(r, 20)); // distinct mtimes: the order is what is tested, not the time
    }
    const c = await conn(server.endpoint);
    await c(helloFrames({ runId: 'hello-only' }));
    await stop(server);
    expect(fs.readdirSync(runDir).sort()).toEqual(['new-1', 'new-2', 'old-1', 'old-2']);
    server = await engine(runDir, { retain: { runs: 2 } });
    expect(fs.readdirSync(runDir).sort()).toEqual(['new-1', 'new-2']);
  });
});
