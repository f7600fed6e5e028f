// Store faults (docs/reliability.md, fault table): a full disk, EIO, corrupt or empty state.json, torn lines
// anywhere, and a kill between a step's commit and its state save. The engine is real (EngineServer with
// the serve pipeline over real files and sockets); a fault hook (store/jsonl.ts storeFaults) makes the
// writes fail the way a full disk does (a short write, then ENOSPC).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames, type SyntheticRun } from '../src/record/synthetic.ts';
import { readRun, storeFaults } from '../src/store/index.ts';
import { client, startEngine, stopEngine, tempDir } from './engine-process.ts';
import { inprocEngines } from './inproc-engine.ts';

const { engine: start, dealer, stop } = inprocEngines();
afterEach(() => {
  storeFaults.hook = null;
});

const engine = (runDir: string, options: Record<string, unknown> = {}) => start(runDir, { options: { window: 4, ...options } });

/** A client that returns whatever the engine answers (directive or error). */
async function rawClient(endpoint: string) {
  const { req } = await dealer(endpoint);
  return { req, hello: (run: SyntheticRun) => req(helloFrames(run)), step: (run: SyntheticRun, s: number) => req(stepFrames(run, s)) };
}

const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

/** Every line of every log parses and ends with a newline. */
function wholeLines(dir: string) {
  const run = readRun(dir);
  for (const name of ['metrics', 'windows', 'steps', 'directives'] as const) {
    expect(run[name].torn, name).toBeNull();
    expect(run[name].bad, name).toEqual([]);
  }
  return run;
}

describe('run store faults', () => {
  it('disk full: coded E_STORE reply, other runs served, no partial line, reopen and resend once space is back', async () => {
    const runDir = tempDir('tg-full-');
    const server = await engine(runDir);
    const a: SyntheticRun = { runId: 'full-a' };
    const b: SyntheticRun = { runId: 'full-b' };
    const ca = await rawClient(server.endpoint);
    const cb = await rawClient(server.endpoint);
    expect((await ca.hello(a)).type).toBe('welcome');
    expect((await cb.hello(b)).type).toBe('welcome');
    for (let s = 0; s < 5; s++) expect(await ca.step(a, s)).toMatchObject({ type: 'directive', step: s, recorded_through: s });

    // The disk fills: a metrics line of run a is half written, then ENOSPC.
    storeFaults.hook = (op, file) => (op === 'write' && file.includes('full-a') ? { partial: 37, error: enospc() } : null);
    const e = await ca.step(a, 5);
    expect(e).toMatchObject({ type: 'error', code: 'E_STORE', fatal: true });
    expect(e.message).toMatch(/ENOSPC/);
    expect(await ca.step(a, 6)).toMatchObject({ type: 'error', code: 'E_STORE' }); // never acked silently
    for (let s = 0; s < 3; s++) expect(await cb.step(b, s)).toMatchObject({ type: 'directive', recorded_through: s }); // run b unaffected
    wholeLines(path.join(runDir, 'full-a')); // rolled back to the last commit

    // Still full: the hello that reopens the run is refused with the same code.
    expect(await ca.hello(a)).toMatchObject({ type: 'error', code: 'E_STORE', fatal: true });
    // Space comes back: reopen from the store, resend what was not recorded.
    storeFaults.hook = null;
    expect(await ca.hello(a)).toMatchObject({ type: 'welcome', resume: { last_step: 4 } });
    for (let s = 5; s < 8; s++) expect(await ca.step(a, s)).toMatchObject({ type: 'directive', step: s, recorded_through: s });
    const run = wholeLines(path.join(runDir, 'full-a'));
    expect(run.steps.records.map((r) => r.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(new Set(run.metrics.records.map((r) => r.step))).toEqual(new Set([0, 1, 2, 3, 4, 5, 6, 7]));
  });

  it('EIO on fsync is E_STORE too, and the bye ack carries recorded_through', async () => {
    const runDir = tempDir('tg-eio-');
    const server = await engine(runDir);
    const a: SyntheticRun = { runId: 'eio' };
    const c = await rawClient(server.endpoint);
    await c.hello(a);
    for (let s = 0; s < 3; s++) await c.step(a, s);
    storeFaults.hook = (op) => (op === 'fsync' ? Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }) : null);
    expect(await c.step(a, 3)).toMatchObject({ type: 'error', code: 'E_STORE', fatal: true });
    storeFaults.hook = null;
    await c.hello(a);
    await c.step(a, 3);
    const bye = await c.req([encodeHeader({ type: 'bye', version: [1, 1], run_id: 'eio', rank: 0 })]);
    expect(bye).toMatchObject({ type: 'ack', of: 'bye', recorded_through: 3 });
  });

  it('a corrupt or empty state.json refuses the run loudly (E_STORE naming the file), never records nothing silently', async () => {
    for (const content of ['{"version":1,"last_st', '']) {
      const runDir = tempDir('tg-corrupt-');
      const run: SyntheticRun = { runId: 'corrupt' };
      let server = await engine(runDir);
      let c = await rawClient(server.endpoint);
      await c.hello(run);
      for (let s = 0; s < 3; s++) await c.step(run, s);
      await stop(server);
      fs.writeFileSync(path.join(runDir, 'corrupt', 'state.json'), content);
      server = await engine(runDir);
      c = await rawClient(server.endpoint);
      const e = await c.hello(run);
      expect(e).toMatchObject({ type: 'error', code: 'E_STORE', fatal: true });
      expect(e.message).toMatch(/state\.json/);
      expect(e.message).toMatch(content === '' ? /empty/ : /not JSON/);
    }
  });

  it('a torn line in the middle of a log (a line appended after a partial one) is quarantined at reopen', async () => {
    const runDir = tempDir('tg-torn-');
    const run: SyntheticRun = { runId: 'torn-mid' };
    let server = await engine(runDir);
    let c = await rawClient(server.endpoint);
    await c.hello(run);
    for (let s = 0; s < 4; s++) await c.step(run, s);
    await stop(server);
    const file = path.join(runDir, 'torn-mid', 'metrics.jsonl');
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    lines.splice(3, 0, '{"step":1,"pair":"policy_vs_ref","sl'); // what the old appender left after a full disk
    fs.writeFileSync(file, lines.join('\n'));
    expect(readRun(path.join(runDir, 'torn-mid')).metrics.bad.length).toBe(1);
    server = await engine(runDir);
    c = await rawClient(server.endpoint);
    expect(await c.hello(run)).toMatchObject({ type: 'welcome', resume: { last_step: 3 } });
    expect(await c.step(run, 4)).toMatchObject({ type: 'directive', recorded_through: 4 });
    wholeLines(path.join(runDir, 'torn-mid'));
    expect(fs.readFileSync(file + '.torn', 'utf8')).toContain('"sl');
  });

  it('a torn steps.jsonl line after the last commit: the step is cut everywhere and its resend is stored once', async () => {
    const runDir = tempDir('tg-tornstep-');
    const run: SyntheticRun = { runId: 'torn-step' };
    let server = await engine(runDir, { stateEvery: 100 });
    let c = await rawClient(server.endpoint);
    await c.hello(run);
    for (let s = 0; s < 4; s++) await c.step(run, s);
    await stop(server);
    // A crash in the middle of step 4's commit: its metrics are written, its step line is torn.
    const dir = path.join(runDir, 'torn-step');
    const m = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean);
    fs.appendFileSync(path.join(dir, 'metrics.jsonl'), m.slice(-2).map((l) => l.replace('"step":3', '"step":4')).join('\n') + '\n');
    fs.appendFileSync(path.join(dir, 'steps.jsonl'), '{"step":4,"world_si');
    server = await engine(runDir, { stateEvery: 100 });
    c = await rawClient(server.endpoint);
    expect(await c.hello(run)).toMatchObject({ type: 'welcome', resume: { last_step: 3 } });
    expect(await c.step(run, 4)).toMatchObject({ type: 'directive', recorded_through: 4 });
    const after = wholeLines(dir);
    expect(after.steps.records.map((r) => r.step)).toEqual([0, 1, 2, 3, 4]);
    expect(after.metrics.records.filter((r) => r.step === 4).length).toBe(after.metrics.records.filter((r) => r.step === 3).length);
  });
});

describe('restart between a commit and its state save (--state-every 1)', () => {
  it('gives the findings, windows and metrics of an uninterrupted run', async () => {
    const run: SyntheticRun = { runId: 'se1', onset: 4 };
    const runDir = tempDir('tg-se1-');
    const e1 = await startEngine(runDir, ['--state-every', '1']);
    const c1 = await client(e1.endpoint, run);
    for (let s = 1; s <= 5; s++) await c1.step(s);
    const state5 = fs.readFileSync(path.join(runDir, 'se1', 'state.json'));
    await c1.step(6); // committed and answered
    c1.close();
    await stopEngine(e1.proc, 'SIGKILL');
    // The kill came after step 6's logs were fsynced and before its state was saved: no reply went out.
    fs.writeFileSync(path.join(runDir, 'se1', 'state.json'), state5);
    const e2 = await startEngine(runDir, ['--state-every', '1']);
    const c2 = await client(e2.endpoint, run);
    expect(c2.welcome.resume).toEqual({ last_step: 5 }); // step 6 was never answered: the trainer resends it
    for (let s = 6; s <= 12; s++) await c2.step(s);
    c2.close();
    await stopEngine(e2.proc, 'SIGTERM');

    const refDir = tempDir('tg-se1-ref-');
    const e3 = await startEngine(refDir, ['--state-every', '1']);
    const c3 = await client(e3.endpoint, run);
    for (let s = 1; s <= 12; s++) await c3.step(s);
    c3.close();
    await stopEngine(e3.proc, 'SIGTERM');
    const after = readRun(path.join(runDir, 'se1'));
    const ref = readRun(path.join(refDir, 'se1'));
    const strip = (w: unknown) => JSON.stringify(w);
    expect(after.steps.records.map((r) => r.step)).toEqual(ref.steps.records.map((r) => r.step));
    expect(after.windows.records.map(strip)).toEqual(ref.windows.records.map(strip));
    expect(after.metrics.records.map(strip)).toEqual(ref.metrics.records.map(strip));
    expect(after.directives.records.map(strip)).toEqual(ref.directives.records.map(strip));
  });
});
