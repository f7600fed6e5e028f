// The packaged engine (scripts/build-engine.mjs → dist/engine, what the wheel and the npm package ship) runs on
// its own: a file the sources read at run time by a computed path (a schema, the policy, the wasm kernel, the
// UI worker) must be bundled or copied beside the chunks, or the installed engine dies at start while every
// source test still passes. The slow end-to-end check (install, train, report) is test/test_packaging.py.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Dealer } from 'zeromq';
import { decodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';

const ROOT = path.resolve('.');
const BUNDLED_CLI = path.join(ROOT, 'dist', 'engine', 'cli.mjs');

describe('bundled engine', () => {
  it('builds, and serves with the live page from outside the checkout', async () => {
    const b = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-engine.mjs'), '--no-types'], { encoding: 'utf8', timeout: 120_000 });
    expect(b.status, b.stderr).toBe(0);
    for (const f of ['cli.mjs', 'index.mjs', 'ui-worker.mjs', 'ingest-worker.mjs', 'kernel.wasm', 'policy/default.yaml']) expect(fs.existsSync(path.join(ROOT, 'dist', 'engine', f)), f).toBe(true);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-bundle-'));
    const ready = path.join(dir, 'ready');
    const engine = spawn(process.execPath, [BUNDLED_CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', 'runs', '--ui', '0', '--ingest-workers', '2', '--log-level', 'info'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    engine.stdout.on('data', (d) => (out += d));
    engine.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => engine.on('exit', (code) => resolve(code)));
    try {
      // Ready file and the dashboard's line, or the engine's exit: whichever comes first (hang guard: the test timeout).
      const up = (async () => {
        while (!(fs.existsSync(ready) && fs.statSync(ready).size > 0 && out.includes('dashboard listening'))) await new Promise((r) => setTimeout(r, 50));
        return 'ready';
      })();
      const first = await Promise.race([up, exited.then((c) => `exited ${c}`)]);
      expect(first, out).toBe('ready');
      const doctor = spawnSync(process.execPath, [BUNDLED_CLI, 'doctor', '--endpoint', fs.readFileSync(ready, 'utf8').trim()], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      expect(doctor.stdout).toMatch(/^endpoint\s+ok\s/m);
      expect(doctor.status, doctor.stdout).toBe(0);
      // A step through the bundled ingest worker (dist/engine/ingest-worker.mjs).
      const sock = new Dealer({ linger: 0, receiveTimeout: 30_000 });
      sock.connect(fs.readFileSync(ready, 'utf8').trim());
      const run = { runId: 'bundle', worldSize: 2 };
      for (const r of [0, 1]) await sock.send(helloFrames(run, r));
      for (const r of [0, 1]) expect(decodeHeader((await sock.receive())[0]).type).toBe('welcome');
      for (const r of [0, 1]) await sock.send(stepFrames(run, 1, r));
      const replies = [decodeHeader((await sock.receive())[0]), decodeHeader((await sock.receive())[0])];
      sock.close();
      expect(replies.map((h) => [h.type, h.rank]), JSON.stringify(replies)).toEqual([['directive', 0], ['directive', 1]]);
      expect(replies[1].metrics_step).toBe(1);
    } finally {
      engine.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
