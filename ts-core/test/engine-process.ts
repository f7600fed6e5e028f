// A real engine process (bin/tailguard.mjs serve) and a ZeroMQ client for it, for the tests that
// kill and restart the engine on one run dir. Processes and temp dirs are cleaned up after each test.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Dealer } from 'zeromq';
import { afterEach, expect } from 'vitest';
import { decodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames, type SyntheticRun } from '../src/record/synthetic.ts';

const CLI = path.resolve('ts-core/bin/tailguard.mjs');
const procs: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A temp dir removed after the test. */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** `serve --window 4` on a free port; resolves once the ready file names the endpoint. */
export async function startEngine(runDir: string, extra: string[] = []): Promise<{ proc: ChildProcess; endpoint: string }> {
  const ready = path.join(runDir, `ready-${Date.now()}`);
  const proc = spawn(process.execPath, [CLI, 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', runDir, '--window', '4', '--log-level', 'warn', ...extra], { stdio: ['ignore', 'ignore', 'inherit'] });
  procs.push(proc);
  for (let i = 0; i < 600 && !fs.existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
  return { proc, endpoint: fs.readFileSync(ready, 'utf8').trim() };
}

/** Sends `signal` to the engine and waits for it to exit. */
export async function stopEngine(proc: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill(signal);
  await exited;
}

/** Says hello for `run`; each step() expects a directive back. */
export async function client(endpoint: string, run: SyntheticRun) {
  const sock = new Dealer({ linger: 0, receiveTimeout: 20_000 });
  sock.connect(endpoint);
  await sock.send(helloFrames(run));
  const welcome = decodeHeader((await sock.receive())[0]);
  return {
    welcome,
    async step(step: number) {
      await sock.send(stepFrames(run, step));
      const h = decodeHeader((await sock.receive())[0]);
      expect(h.type, JSON.stringify(h)).toBe('directive');
      return h;
    },
    close: () => sock.close(),
  };
}
