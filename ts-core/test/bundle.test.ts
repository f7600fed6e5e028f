// The packaged engine (scripts/build-engine.mjs → dist/engine, what the wheel and the npm package ship) runs on
// its own: a file the sources read at run time by a computed path (a schema, the policy, the wasm kernel, the
// UI worker) must be bundled or copied beside the chunks, or the installed engine dies at start while every
// source test still passes. The slow end-to-end check (install, train, report) is test/test_packaging.py.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve('.');
const BUNDLED_CLI = path.join(ROOT, 'dist', 'engine', 'cli.mjs');

describe('bundled engine', () => {
  it('builds, and serves with the live page from outside the checkout', async () => {
    const b = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-engine.mjs'), '--no-types'], { encoding: 'utf8', timeout: 120_000 });
    expect(b.status, b.stderr).toBe(0);
    for (const f of ['cli.mjs', 'index.mjs', 'ui-worker.mjs', 'kernel.wasm', 'policy/default.yaml']) expect(fs.existsSync(path.join(ROOT, 'dist', 'engine', f)), f).toBe(true);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-bundle-'));
    const ready = path.join(dir, 'ready');
    const engine = spawn(process.execPath, [BUNDLED_CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', 'runs', '--ui', '0', '--log-level', 'info'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
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
    } finally {
      engine.kill('SIGTERM');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
