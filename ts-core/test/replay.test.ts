// Replay determinism: the same capture and policy give byte-identical run files; a different policy
// changes the decisions (so the policy really drives them). Also replays a capture the Python shim wrote.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordingWriter } from '../src/record/index.ts';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';
import { replayToDir } from '../src/commands/replay.ts';
import { readRun } from '../src/store/index.ts';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
const PY = process.env.TAILGUARD_PYTHON ?? path.resolve('.venv/bin/python');
let dir: string;
let capture: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-replay-'));
  capture = path.join(dir, 'run.tgcap');
  const w = new RecordingWriter(capture);
  const run = { runId: 'cap-run', onset: 8 };
  let t = 1_700_000_000_000;
  w.write(helloFrames(run), t);
  for (let s = 1; s <= 30; s++) w.write(stepFrames(run, s), (t += 1000));
  w.write([Buffer.from([0xc1])], (t += 1)); // garbage header: rejected exactly as the live engine would
  w.close();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const FILES = ['metrics.jsonl', 'windows.jsonl', 'directives.jsonl', 'steps.jsonl'];

describe('tailguard replay', () => {
  it('gives identical metrics, windows and directives when run twice', async () => {
    const a = await replayToDir(capture, { runDir: path.join(dir, 'a'), window: '5' });
    const b = await replayToDir(capture, { runDir: path.join(dir, 'b'), window: '5' });
    expect(a.messages).toBe(32);
    expect(a.accepted).toBe(31);
    expect(a.rejected.map((r) => r.code)).toEqual(['E_HEADER_DECODE']);
    expect(a.runs[0]).toMatchObject({ run_id: 'cap-run', steps: 30 });
    for (const f of FILES) {
      const fa = fs.readFileSync(path.join(dir, 'a/cap-run', f));
      expect(fa.length, f).toBeGreaterThan(0);
      expect(fa.equals(fs.readFileSync(path.join(dir, 'b/cap-run', f))), f).toBe(true);
    }
    // The synthetic post_tool tail grows, so the default policy must have acted.
    expect(a.runs[0].findings).toBeGreaterThan(0);
    expect(Object.keys(a.runs[0].directives).length).toBeGreaterThan(0);
  });

  it('uses the given policy: observe mode issues no control directives', async () => {
    const policy = path.join(dir, 'observe.yaml');
    fs.writeFileSync(policy, 'mode: observe\n');
    const dflt = readRun(path.join(dir, 'a/cap-run'));
    const o = await replayToDir(capture, { runDir: path.join(dir, 'observe'), window: '5', policy });
    const obs = readRun(path.join(dir, 'observe/cap-run'));
    const actions = (r: typeof obs) => [...new Set(r.directives.records.filter((e) => e.kind === 'directive').map((e) => (e as { action: string }).action))].sort();
    expect(actions(dflt).some((a) => a !== 'warn')).toBe(true);
    expect(actions(obs).every((a) => a === 'warn')).toBe(true);
    // Statistics do not depend on the policy.
    expect(fs.readFileSync(path.join(dir, 'observe/cap-run/metrics.jsonl')).equals(fs.readFileSync(path.join(dir, 'a/cap-run/metrics.jsonl')))).toBe(true);
    expect(o.runs[0].steps).toBe(30);
  });

  it('the CLI refuses to overwrite a run directory unless --force, and replays a capture recorded by the Python shim', () => {
    const again = spawnSync(process.execPath, [CLI, 'replay', capture, '--run-dir', path.join(dir, 'a')], { encoding: 'utf8' });
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/already exists.*--force/);

    const pyCap = path.join(dir, 'py.tgcap');
    const py = `
import sys, numpy as np
from tailguard.wire import encode_step
from tailguard.record import StepRecorder
class C: run_id = "py-run"; rank = 0; world_size = 1; trainer = "grpo"; mode = "raw"; config = {"beta": 0.04}
rec = StepRecorder(sys.argv[1], C())
rng = np.random.default_rng(0)
for step in range(1, 9):
    T, n = 96, 4
    tm = np.ones(T, np.uint8); tm[10:14] = 0; tm[40:44] = 0
    arrays = {"policy_vs_ref": (rng.standard_normal(T) * 0.05 * step).astype(np.float32), "completion_mask": np.ones(T, np.uint8),
              "tool_mask": tm, "offsets": np.arange(0, T + 1, T // n, dtype=np.int32)}
    h = {"type": "step", "run_id": "py-run", "rank": 0, "world_size": 1, "step": step, "implicit": ["policy_vs_old"], "knobs": {"beta": 0.04}, "logs": {"loss": 1.0 / step}}
    rec.write_step(encode_step(h, arrays))
rec.close()
`;
    const r = spawnSync(PY, ['-c', py, pyCap], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const out = spawnSync(process.execPath, [CLI, 'replay', pyCap, '--run-dir', path.join(dir, 'py'), '--window', '4'], { encoding: 'utf8' });
    expect(out.stderr).toBe('');
    expect(out.stdout).toMatch(/replayed 9\/9 messages/);
    expect(out.stdout).toMatch(/py-run: 8 steps/);
    const run = readRun(path.join(dir, 'py/py-run'));
    expect(run.steps.records.map((s) => s.logs.loss)).toEqual([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7, 1 / 8]);
    const post = run.metrics.records.filter((m) => m.pair === 'policy_vs_ref' && m.slice === 'post_tool');
    expect(post.length).toBe(8);
    expect(post[7].abs_q99).toBeGreaterThan(post[0].abs_q99 * 3); // scale grows 8x over the run
    expect(run.meta?.trainer).toBe('grpo');
  });
});
