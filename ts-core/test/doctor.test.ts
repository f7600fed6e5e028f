import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
const PY = process.env.TAILGUARD_PYTHON ?? path.resolve('.venv/bin/python');

function doctor(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, 'doctor', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

describe('tailguard doctor', () => {
  it('passes on this machine with the venv Python', () => {
    const r = doctor('--python', PY);
    expect(r.out).toMatch(/^node\s+ok\s/m);
    expect(r.out).toMatch(/^zeromq\s+ok\s+zeromq\.js loads, libzmq \d/m);
    expect(r.out).toMatch(/^python\s+ok\s.*tailguard \d/m);
    expect(r.code).toBe(0);
  });

  it('fails with a clear row for a Python without tailguard', () => {
    const r = doctor('--python', '/nonexistent/python3');
    expect(r.out).toMatch(/^python\s+FAIL\s+\/nonexistent\/python3: /m);
    expect(r.out).toMatch(/1 check\(s\) failed: python/);
    expect(r.code).toBe(1);
  });

  it('fails when nothing answers at the endpoint', () => {
    const r = doctor('--endpoint', 'tcp://127.0.0.1:9', '--timeout-ms', '300');
    expect(r.out).toMatch(/^endpoint\s+FAIL\s+tcp:\/\/127\.0\.0\.1:9: no reply within 300 ms/m);
    expect(r.code).toBe(1);
  });

  it('gets a welcome from a real engine', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-doctor-'));
    const ready = path.join(dir, 'ready');
    const engine = spawn(process.execPath, [CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', dir, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    engine.stderr!.on('data', (d) => (err += d));
    try {
      for (let i = 0; i < 600 && !fs.existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
      const endpoint = fs.readFileSync(ready, 'utf8').trim();
      const r = spawnSync(process.execPath, [CLI, 'doctor', '--endpoint', endpoint, '--timeout-ms', '10000'], { encoding: 'utf8', timeout: 60_000 });
      expect(r.stdout).toMatch(new RegExp(`^endpoint\\s+ok\\s+${endpoint.replace(/[.]/g, '\\.')}: welcome from tailguard`, 'm'));
      expect(r.status).toBe(0);
      await new Promise((res) => setTimeout(res, 200));
      expect(err).not.toMatch(/E_[A-Z_]+/); // hello and bye were both valid
    } finally {
      engine.kill('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
