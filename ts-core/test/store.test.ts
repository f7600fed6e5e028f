import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RawJson, RunStore, checkRunId, readRun, runWarnings, StoreError } from '../src/store/index.ts';
import { syntheticStepResult } from '../src/report/synthetic.ts';

let root: string;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-store-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('run ids', () => {
  it.each(['a', 'run-1', 'A.b_c-9', 'x'.repeat(128)])('accepts %s', (id) => {
    expect(checkRunId(id)).toBe(id);
  });
  it.each(['', '.', '..', '../x', 'a/b', '-a', '.hidden', 'a b', 'x'.repeat(129), 'a\0b', 'ü'])('rejects %j', (id) => {
    expect(() => RunStore.open(root, id)).toThrow(StoreError);
    expect(fs.readdirSync(root)).toEqual([]);
  });
});

describe('RunStore', () => {
  it('writes the layout and reads it back', () => {
    const s = RunStore.open(root, 'r1');
    s.writeRunJson({ trainer: 'grpo', world_size: 2, config: { beta: 0.04 } });
    for (let step = 1; step <= 3; step++) s.appendStepResult(syntheticStepResult('r1', step, { worldSize: 2 }));
    s.appendDirective({ kind: 'checkpoint', step: 2, path: '/ckpt/2', certified: true });
    s.commitStep({ last_step: 3, stats: { a: 1 }, controller: null, certified_checkpoints: [{ step: 2, path: '/ckpt/2' }] });
    s.close();

    const run = readRun(s.dir);
    expect(run.meta?.run_id).toBe('r1');
    expect(run.meta?.versions.node).toBe(process.version);
    expect(run.steps.records.map((e) => e.step)).toEqual([1, 2, 3]);
    expect(run.steps.records[0].ranks_present).toEqual([0, 1]);
    expect(run.metrics.records.length).toBe(3 * syntheticStepResult('r1', 1).records.length);
    expect(run.windows.records.every((w) => Array.isArray(w.cdf.q))).toBe(true);
    expect(run.directives.records[0]).toMatchObject({ kind: 'checkpoint', step: 2 });
    expect(run.state?.certified_checkpoints).toEqual([{ step: 2, path: '/ckpt/2' }]);
    expect(runWarnings(run)).toEqual([]);
    expect(fs.existsSync(path.join(s.dir, 'engine.lock'))).toBe(false);
  });

  it('encodes non-finite numbers as null, never NaN/Infinity literals', () => {
    const s = RunStore.open(root, 'nf');
    const r = syntheticStepResult('nf', 1);
    r.records[0].abs_max = Infinity;
    r.records[0].mean = NaN;
    s.appendStepResult(r);
    s.commitStep();
    s.close();
    const text = fs.readFileSync(path.join(s.dir, 'metrics.jsonl'), 'utf8');
    expect(text).not.toMatch(/NaN|Infinity/);
    expect(readRun(s.dir).metrics.records[0]).toMatchObject({ abs_max: null, mean: null });
  });

  it('tolerates and reports a torn last line, keeps every committed line, and appends cleanly after it', () => {
    const s = RunStore.open(root, 'torn');
    s.appendStepResult(syntheticStepResult('torn', 1));
    s.appendStepResult(syntheticStepResult('torn', 2));
    s.commitStep();
    s.close();
    const file = path.join(s.dir, 'steps.jsonl');
    const before = fs.readFileSync(file, 'utf8');
    fs.appendFileSync(file, '{"step": 3, "world_si'); // crash mid-append

    const run = readRun(s.dir);
    expect(run.steps.records.map((e) => e.step)).toEqual([1, 2]);
    expect(run.steps.torn?.bytes).toBe('{"step": 3, "world_si'.length);
    expect(runWarnings(run)[0]).toMatch(/steps\.jsonl: torn last line/);

    const s2 = RunStore.open(root, 'torn');
    expect(s2.recovery).toEqual([{ file: 'steps.jsonl', torn: expect.objectContaining({ offset: before.length }) }]);
    s2.appendStepResult(syntheticStepResult('torn', 3));
    s2.commitStep();
    s2.close();
    const after = readRun(s.dir);
    expect(after.steps.records.map((e) => e.step)).toEqual([1, 2, 3]);
    expect(after.steps.torn).toBeNull();
    expect(fs.readFileSync(file + '.torn', 'utf8')).toContain('"world_si');
  });

  it('reports a corrupt line in the middle without losing the lines around it', () => {
    const dir = path.join(root, 'mid');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'steps.jsonl'), '{"step":1}\n{oops\n{"step":2}\n');
    const run = readRun(dir);
    expect(run.steps.records).toEqual([{ step: 1 }, { step: 2 }]);
    expect(run.steps.bad).toEqual([{ line: 2, error: expect.any(String) }]);
  });

  it('keeps fsynced lines when the writing process is killed with SIGKILL', () => {
    // A child process appends and commits 5 steps, writes half a line, then SIGKILLs itself.
    const script = `
      import { RunStore } from ${JSON.stringify(path.resolve('ts-core/src/store/index.ts'))};
      import { syntheticStepResult } from ${JSON.stringify(path.resolve('ts-core/src/report/synthetic.ts'))};
      import * as fs from 'node:fs';
      const s = RunStore.open(${JSON.stringify(root)}, 'killed');
      for (let i = 1; i <= 5; i++) { s.appendStepResult(syntheticStepResult('killed', i)); s.commitStep({ last_step: i, stats: { i }, controller: null, certified_checkpoints: [] }); }
      fs.appendFileSync(s.path('metrics'), '{"step":6,"pa');
      process.kill(process.pid, 'SIGKILL');
    `;
    const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(res.signal).toBe('SIGKILL');
    const run = readRun(path.join(root, 'killed'));
    expect(run.steps.records.map((e) => e.step)).toEqual([1, 2, 3, 4, 5]);
    expect(run.metrics.torn).not.toBeNull();
    expect(run.state).toMatchObject({ last_step: 5, stats: { i: 5 } });
    // The stale lock of the dead process is taken over.
    const s = RunStore.open(root, 'killed');
    expect(s.recovery.map((r) => r.file)).toEqual(['metrics.jsonl']);
    s.close();
  });

  it('refuses a second live writer', () => {
    const s = RunStore.open(root, 'busy');
    fs.writeFileSync(s.path('lock'), String(process.ppid)); // a live process that is not us
    expect(() => RunStore.open(root, 'busy')).toThrow(/in use/);
    s.close();
  });
});

describe('state.json with a pre-serialised snapshot (RawJson)', () => {
  it('splices the text in: the same file as stringifying the object, placeholders never leak', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-rawjson-'));
    try {
      const store = RunStore.open(root, 'raw', { durable: false });
      const stats = { version: 1, windows: { 'a/b': { ring: [[[1, 2], [3, 4.5]]], q: [0.1, null] } }, note: 'tg-raw-x:"0"' };
      const controller = { version: 1, s: ['$1', '$&', '\\u0000'] };
      const plain = store.stateJson({ last_step: 3, stats, controller, certified_checkpoints: [], state_every: 10 });
      const raw = store.stateJson({ last_step: 3, stats: new RawJson(JSON.stringify(stats)), controller: new RawJson(JSON.stringify(controller)), certified_checkpoints: [], state_every: 10 });
      const strip = (t: string) => t.replace(/"saved_at":"[^"]*"/, '');
      expect(strip(raw)).toBe(strip(plain));
      expect(JSON.parse(raw).stats).toEqual(stats);
      store.close();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
