// The engine server over real ZeroMQ sockets (tcp, ipc, inproc), and the real `tailguard serve` process.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer } from 'zeromq';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader, encodeMessage, FNV_OFFSET, fnv1a, type TypedArray } from '../src/protocol/index.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import type { StepData } from '../src/types.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const tmp = mkdtempSync(join(tmpdir(), 'tg-srv-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const address = (proto: string) => (proto === 'tcp' ? 'tcp://127.0.0.1:*' : proto === 'ipc' ? `ipc://${tmp}/e${seq++}.sock` : `inproc://tg-${process.pid}-${seq++}`);

const V = [1, 0];
const hello = (run_id: string, rank = 0, world_size = 1, extra = {}) => encodeHeader({ type: 'hello', version: V, run_id, rank, world_size, trainer: 'synthetic', ...extra });

/** A step with deterministic content; seqLens gives sequence lengths, toolAt the in-sequence positions that are tool output. */
function makeStep(run_id: string, rank: number, world_size: number, step: number, seqLens: number[], opts: { chunk?: [number, number]; toolAt?: number[] } = {}) {
  const T = seqLens.reduce((a, b) => a + b, 0);
  const offsets = new Int32Array(seqLens.length + 1);
  seqLens.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  const cm = new Uint8Array(T).fill(1);
  const tm = new Uint8Array(T).fill(1);
  const toolAt = opts.toolAt ?? [2, 3];
  seqLens.forEach((n, s) => toolAt.forEach((p) => p < n && (tm[offsets[s] + p] = 0)));
  if (T > 0) cm[T - 1] = 0; // one padding token
  const lr = new Float32Array(T).map((_, i) => Math.sin(step * 31 + rank * 7 + i) * 0.5);
  const buffers: Record<string, TypedArray> = { policy_vs_ref: lr, completion_mask: cm, tool_mask: tm, offsets };
  const [index, count] = opts.chunk ?? [0, 1];
  const frames = encodeMessage({ type: 'step', version: V, run_id, rank, world_size, step, chunk: { index, count }, tokens: T, n_seqs: seqLens.length, knobs: { beta: 0.04 }, logs: { loss: 0.1 } }, buffers);
  return { frames, buffers };
}

/** Independent expectation of the `received` echo (a plain loop over sequences). */
function expectReceived(parts: Record<string, TypedArray>[]) {
  const s = { all: 0, pre_tool: 0, post_tool: 0, tool_output: 0 };
  let tokens = 0;
  let n_seqs = 0;
  let checksum = FNV_OFFSET;
  for (const b of parts) {
    const cm = b.completion_mask, tm = b.tool_mask, off = b.offsets;
    tokens += cm.length;
    n_seqs += off.length - 1;
    for (let q = 0; q + 1 < off.length; q++) {
      const firstTool = Array.from(tm.subarray(off[q], off[q + 1])).findIndex((v, k) => v === 0 && cm[off[q] + k] === 1);
      for (let t = off[q]; t < off[q + 1]; t++) {
        if (!cm[t]) continue;
        if (!tm[t]) s.tool_output++;
        else if (firstTool >= 0 && t - off[q] > firstTool) s.post_tool++;
        else s.pre_tool++;
      }
    }
    for (const a of Object.values(b)) checksum = fnv1a(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), checksum);
  }
  s.all = s.pre_tool + s.post_tool;
  return { tokens, n_seqs, slices: s, checksum };
}

class Client {
  readonly sock = new Dealer({ receiveTimeout: 10_000, linger: 0 });
  constructor(endpoint: string) {
    this.sock.connect(endpoint);
  }
  async send(frames: Uint8Array[]) {
    await this.sock.send(frames as Buffer[]);
  }
  async recv(): Promise<Record<string, any>> {
    const frames = await this.sock.receive();
    return decodeMessage(frames).header as Record<string, any>;
  }
  async request(frames: Uint8Array[]) {
    await this.send(frames);
    return this.recv();
  }
  close() {
    this.sock.close();
  }
}

for (const proto of ['tcp', 'ipc', 'inproc']) {
  describe(`engine server over ${proto}`, () => {
    let server: EngineServer;
    let clients: Client[];
    const seen: StepData[] = [];
    const client = () => {
      const c = new Client(server.endpoint);
      clients.push(c);
      return c;
    };
    beforeEach(async () => {
      seen.length = 0;
      clients = [];
      // A pipeline hook that records what the engine assembled (copies: views are only valid in the call).
      server = new EngineServer({
        endpoint: address(proto),
        log: silentLogger(),
        factory: () => ({ addRankStep: (d) => void seen.push({ ...d, offsets: d.offsets.slice(), pairs: { policy_vs_ref: d.pairs.policy_vs_ref?.slice() }, toolMask: d.toolMask.slice() }) }),
      });
      await server.start();
    });
    afterEach(async () => {
      clients.forEach((c) => c.close());
      await server.close();
    });

    it('handshake: hello → welcome with limits; resume after the run has steps', async () => {
      const c = client();
      const w = await c.request([hello('run-h', 0, 1, { client: { name: 'test', version: '0' } })]);
      expect(w).toMatchObject({ type: 'welcome', version: [1, 0], run_id: 'run-h', rank: 0, resume: null, engine: { name: 'tailguard' } });
      expect(w.limits).toEqual({ max_message_bytes: 2 ** 26, max_frame_bytes: 2 ** 22, max_frames: 64, max_header_bytes: 65536, max_tokens_per_step: 2 ** 27, step_timeout_ms: 30000, max_step_bytes: 2 ** 29, max_step_chunks: 1024, max_runs: 64 });
      expect(w.session).toMatch(/^s-/);
      expect((await c.request(makeStep('run-h', 0, 1, 5, [4]).frames)).type).toBe('directive');
      const w2 = await c.request([hello('run-h')]);
      expect(w2.resume).toEqual({ last_step: 5 });
      expect(w2.session).not.toBe(w.session);
    });

    it('steps: each answered by a noop directive with the exact received echo', async () => {
      const c = client();
      await c.request([hello('run-s')]);
      for (let step = 0; step < 5; step++) {
        const { frames, buffers } = makeStep('run-s', 0, 1, step, [6, 3, 8], { toolAt: [1, 4] });
        const d = await c.request(frames);
        expect(d).toMatchObject({ type: 'directive', run_id: 'run-s', rank: 0, step, metrics: {}, metrics_step: null });
        expect(d.directive).toEqual({ id: `run-s/${step}/noop`, action: 'noop', step, apply_at_step: step + 1, params: {}, reason: '', evidence: {} });
        expect(d.received).toEqual(expectReceived([buffers]));
      }
      expect(d0(seen).map((s) => s.step)).toEqual([0, 1, 2, 3, 4]);
      expect(seen[0].knobs).toEqual({ beta: 0.04 });
    });

    it('a chunked step: no reply until the last chunk, then one directive over all chunks; data concatenated', async () => {
      const c = client();
      await c.request([hello('run-c')]);
      const parts = [makeStep('run-c', 0, 1, 3, [5, 2], { chunk: [0, 3] }), makeStep('run-c', 0, 1, 3, [4], { chunk: [1, 3] }), makeStep('run-c', 0, 1, 3, [6, 1], { chunk: [2, 3] })];
      await c.send(parts[0].frames);
      await c.send(parts[1].frames);
      const d = await c.request(parts[2].frames);
      expect(d.step).toBe(3);
      expect(d.received).toEqual(expectReceived(parts.map((p) => p.buffers)));
      expect(d.received.tokens).toBe(18);
      expect(seen).toHaveLength(1);
      expect(Array.from(seen[0].offsets)).toEqual([0, 5, 7, 11, 17, 18]);
      const lr = parts.flatMap((p) => Array.from(p.buffers.policy_vs_ref));
      expect(Array.from(seen[0].pairs.policy_vs_ref!)).toEqual(lr);
      // The next chunked step reuses scratch and is still right.
      const again = [makeStep('run-c', 0, 1, 4, [3], { chunk: [0, 2] }), makeStep('run-c', 0, 1, 4, [2, 2], { chunk: [1, 2] })];
      await c.send(again[0].frames);
      const d2 = await c.request(again[1].frames);
      expect(d2.received).toEqual(expectReceived(again.map((p) => p.buffers)));
      expect(Array.from(seen[1].offsets)).toEqual([0, 3, 5, 7]);
    });

    it('every must-reject vector gets its error code, and the engine keeps serving', async () => {
      const c = client();
      const vecDir = join(ROOT, 'proto', 'v1', 'vectors');
      let n = 0;
      for (const f of readdirSync(vecDir).sort()) {
        for (const cs of JSON.parse(readFileSync(join(vecDir, f), 'utf8')).cases) {
          if (cs.valid) continue;
          const frames = cs.frames.map((h: string) => Buffer.from(h, 'hex'));
          if (frames.length === 0) continue;
          const e = await c.request(frames);
          expect(e, `${f}: ${cs.description}`).toMatchObject({ type: 'error', code: cs.error });
          expect(typeof e.message).toBe('string');
          n++;
        }
      }
      expect(n).toBeGreaterThan(60);
      expect(server.counters.errors).toBe(n);
      expect((await c.request([hello('still-alive')])).type).toBe('welcome');
    });

    it('session rules: E_NO_SESSION, E_DUPLICATE, E_CHUNK, E_UNKNOWN_TYPE for engine types, E_RANK, bye → ack', async () => {
      const c = client();
      expect(await c.request(makeStep('run-x', 0, 1, 0, [3]).frames)).toMatchObject({ type: 'error', code: 'E_NO_SESSION', fatal: true, ref: { type: 'step', run_id: 'run-x', rank: 0, step: 0 } });
      await c.request([hello('run-x')]);
      expect((await c.request(makeStep('run-x', 0, 1, 0, [3]).frames)).type).toBe('directive');
      expect(await c.request(makeStep('run-x', 0, 1, 0, [3]).frames)).toMatchObject({ code: 'E_DUPLICATE', fatal: false });
      expect(await c.request(makeStep('run-x', 0, 1, 1, [3], { chunk: [1, 2] }).frames)).toMatchObject({ code: 'E_CHUNK' });
      await c.send(makeStep('run-x', 0, 1, 1, [3], { chunk: [0, 2] }).frames);
      expect(await c.request(makeStep('run-x', 0, 1, 1, [3], { chunk: [1, 3] }).frames)).toMatchObject({ code: 'E_CHUNK' });
      expect(await c.request(makeStep('run-x', 0, 2, 2, [3]).frames)).toMatchObject({ code: 'E_RANK' });
      expect(await c.request([hello('run-x', 1, 2)])).toMatchObject({ code: 'E_RANK', fatal: true });
      expect(await c.request([encodeHeader({ type: 'welcome', version: V })])).toMatchObject({ code: 'E_MISSING_FIELD' });
      const dir = { type: 'error', version: V, code: 'E_X', message: 'm', fatal: false };
      expect(await c.request([encodeHeader(dir)])).toMatchObject({ code: 'E_UNKNOWN_TYPE' });
      expect(await c.request([encodeHeader({ type: 'hello', version: [2, 0] })])).toMatchObject({ code: 'E_VERSION', fatal: true });
      expect(await c.request([encodeHeader({ type: 'step', version: V, run_id: 'run-x', rank: 0, world_size: 1, step: 9, chunk: { index: 0, count: 1 }, tokens: 0, n_seqs: 0, sketch: true, buffers: [] })])).toMatchObject({ code: 'E_SKETCH_LAYOUT' }); // no sketch pipeline here
      await c.send([encodeHeader({ type: 'ack', version: V, run_id: 'run-x', rank: 0, directive_id: 'run-x/0/noop', step: 1, applied: true })]);
      expect(await c.request([encodeHeader({ type: 'bye', version: V, run_id: 'run-x', rank: 0, last_step: 1 })])).toEqual({ type: 'ack', version: [1, 0], of: 'bye', run_id: 'run-x', rank: 0, recorded_through: null });
      expect(await c.request(makeStep('run-x', 0, 1, 5, [3]).frames)).toMatchObject({ code: 'E_NO_SESSION' });
      expect(await c.request([encodeHeader({ type: 'ack', version: V, run_id: 'nope', rank: 0, directive_id: 'd', step: 1, applied: true })])).toMatchObject({ code: 'E_NO_SESSION' });
    });

    it('two runs × two ranks concurrently, replies routed to the right client', async () => {
      const cs = ['ra', 'rb'].flatMap((run) => [0, 1].map((rank) => ({ run, rank, c: client() })));
      await Promise.all(cs.map(({ run, rank, c }) => c.request([hello(run, rank, 2)])));
      await Promise.all(
        cs.map(async ({ run, rank, c }) => {
          for (let step = 0; step < 10; step++) {
            const { frames, buffers } = makeStep(run, rank, 2, step, [3 + rank, 5 + step]);
            const d = await c.request(frames);
            expect(d).toMatchObject({ type: 'directive', run_id: run, rank, step });
            expect(d.received).toEqual(expectReceived([buffers]));
          }
        }),
      );
      expect(server.registry.size).toBe(2);
      expect(seen).toHaveLength(40);
    });
  });
}

const d0 = (s: StepData[]) => s.filter((x) => x.rank === 0);

describe('tailguard serve (a real process)', () => {
  let proc: ChildProcess | null = null;
  afterEach(() => {
    if (proc && proc.exitCode === null) proc.kill('SIGKILL');
  });
  const start = async (args: string[]) => {
    const dir = mkdtempSync(join(tmp, 'p'));
    const ready = join(dir, 'ready');
    let out = '';
    proc = spawn(process.execPath, [join(ROOT, 'ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', 'tcp://127.0.0.1:0', '--ready-file', ready, '--run-dir', dir, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout!.on('data', (b) => (out += b));
    proc.stderr!.on('data', (b) => (out += b));
    const exited = new Promise<number | null>((r) => proc!.on('exit', (code) => r(code)));
    for (let i = 0; i < 600 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
    return { endpoint: readFileSync(ready, 'utf8').trim(), exited, out: () => out };
  };

  it('writes the ready file with the real port, serves, and exits 0 on SIGTERM after flushing its log', async () => {
    const { endpoint, exited, out } = await start(['--delay-ms', '20']);
    expect(endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect(endpoint).not.toMatch(/:0$/);
    const c = new Client(endpoint);
    expect((await c.request([hello('proc-run')])).type).toBe('welcome');
    expect((await c.request(makeStep('proc-run', 0, 1, 0, [5]).frames)).type).toBe('directive');
    c.close();
    proc!.kill('SIGTERM');
    expect(await exited).toBe(0);
    const lines = out().trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.find((l) => l.msg === 'hello')).toMatchObject({ run_id: 'proc-run', rank: 0 });
    expect(lines.at(-1)).toMatchObject({ msg: 'engine stopped', steps: 1, errors: 0 });
  });

  it('exits by itself when --parent-pid is gone', async () => {
    const parent = spawn('sleep', ['60']);
    const { exited } = await start(['--parent-pid', String(parent.pid)]);
    parent.kill('SIGKILL');
    expect(await exited).toBe(0);
  });

  it('refuses a non-loopback bind without --insecure', async () => {
    const p = spawn(process.execPath, [join(ROOT, 'ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', 'tcp://0.0.0.0:0'], { stdio: 'ignore' });
    expect(await new Promise((r) => p.on('exit', r))).toBe(2);
  });
});
