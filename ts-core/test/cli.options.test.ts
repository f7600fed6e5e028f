// Every serve option is checked when the command line is parsed: a bad value exits 2 with a message
// naming the option, before anything binds; half a CURVE configuration is refused either way round.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './engine-process.ts';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
const serve = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--run-dir', tempDir('tg-cli-'), '--log-level', 'error', ...args], { encoding: 'utf8', timeout: 60_000 });

describe('serve options', () => {
  it.each([
    ['--window', 'abc'],
    ['--window', '0'],
    ['--step-timeout', 'xyz'],
    ['--step-timeout', '1.5'],
    ['--state-every', '-1'],
    ['--max-runs', '1e3'],
    ['--run-idle-ms', ''],
    ['--delay-ms', 'soon'],
    ['--parent-pid', '0'],
    ['--max-pending-bytes', '10GB'],
    ['--max-runs-per-conn', 'many'],
    ['--retain-runs', 'x'],
    ['--retain-days', '-2'],
    ['--ui', '70000'],
  ])('%s %j exits 2 with a message', (opt, value) => {
    const r = serve(opt, value);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain(opt);
    expect(r.stderr).toMatch(/expected/);
  });

  it('half a CURVE configuration is refused either way round', () => {
    const dir = tempDir('tg-cli-curve-');
    const keys = path.join(dir, 'allow.pub');
    fs.writeFileSync(keys, 'rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\n');
    const onlyAllow = serve('--curve-allow', keys);
    expect(onlyAllow.status).toBe(2);
    expect(onlyAllow.stderr + onlyAllow.stdout).toMatch(/--curve-allow needs --curve-secret/);
    const onlySecret = serve('--curve-secret', keys);
    expect(onlySecret.status).toBe(2);
    expect(onlySecret.stderr + onlySecret.stdout).toMatch(/--curve-secret needs --curve-allow/);
  });
});
