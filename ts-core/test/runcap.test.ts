// The run cap (--max-runs) over a real socket with the real pipeline and run store: a hello for a new
// run beyond the cap closes an idle run (its store is released, a later hello resumes it) or gets E_LIMIT.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Dealer } from 'zeromq';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { decodeHeader, decodeMessage, encodeHeader, encodeMessage } from '../src/protocol/index.ts';
import { ERROR_CODES } from '../src/protocol/errors.ts';
import { EngineServer } from '../src/transport/server.ts';
import { buildPipeline } from '../src/engine/pipeline.ts';
import { silentLogger } from '../src/log.ts';

const tmp = mkdtempSync(join(tmpdir(), 'tg-cap-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const V = [1, 0];
const hello = (run_id: string, rank = 0) => [encodeHeader({ type: 'hello', version: V, run_id, rank, world_size: 1, trainer: 'synthetic' })];
const bye = (run_id: string) => [encodeHeader({ type: 'bye', version: V, run_id, rank: 0 })];
function step(run_id: string, s: number) {
  const T = 8;
  return encodeMessage({ type: 'step', version: V, run_id, rank: 0, world_size: 1, step: s, chunk: { index: 0, count: 1 }, tokens: T, n_seqs: 1, knobs: {}, logs: {} }, {
    policy_vs_ref: new Float32Array(T).map((_, i) => 0.01 * (i - 3)),
    completion_mask: new Uint8Array(T).fill(1),
    tool_mask: new Uint8Array(T).fill(1),
    offsets: Int32Array.from([0, T]),
  });
}

let servers: EngineServer[] = [];
let socks: Dealer[] = [];
afterEach(async () => {
  socks.forEach((s) => s.close());
  for (const s of servers) await s.close();
  servers = [];
  socks = [];
});

async function engine(name: string, maxRuns: number, runIdleMs?: number) {
  const runDir = join(tmp, name);
  const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory: buildPipeline, runDir, options: {}, maxRuns, runIdleMs });
  servers.push(server);
  await server.start();
  // One connection per run (a session belongs to the connection its hello came on).
  const conns = new Map<string, Dealer>();
  const request = async (frames: Uint8Array[]) => {
    const runId = String(decodeHeader(frames[0]).run_id);
    let sock = conns.get(runId);
    if (!sock) {
      sock = new Dealer({ receiveTimeout: 10_000, linger: 0 });
      socks.push(sock);
      sock.connect(server.endpoint);
      conns.set(runId, sock);
    }
    await sock.send(frames as Buffer[]);
    return decodeMessage(await sock.receive()).header as Record<string, any>;
  };
  const locked = (run: string) => existsSync(join(runDir, run, 'engine.lock')); // held while the run is open
  return { server, request, locked };
}

describe('--max-runs', () => {
  it('E_LIMIT is a documented error code', () => {
    expect(ERROR_CODES).toContain('E_LIMIT');
  });

  it('a new run beyond the cap gets E_LIMIT while every run is busy; a bye frees a slot; the closed run resumes later', async () => {
    const { server, request, locked } = await engine('busy', 2);
    const w = await request(hello('run-a'));
    expect(w).toMatchObject({ type: 'welcome', limits: { max_runs: 2 } });
    expect((await request(step('run-a', 0))).type).toBe('directive');
    expect((await request(hello('run-b'))).type).toBe('welcome');
    const refused = await request(hello('run-c'));
    expect(refused).toMatchObject({ type: 'error', code: 'E_LIMIT', fatal: true, ref: { type: 'hello', run_id: 'run-c' } });
    expect(server.registry.size).toBe(2);
    expect(locked('run-c')).toBe(false); // nothing opened for the refused run
    // An open run still takes hellos (a rank reconnecting is not a new run) and steps.
    expect((await request(hello('run-b'))).type).toBe('welcome');
    expect((await request(step('run-a', 1))).type).toBe('directive');

    // run-a's only rank says bye: run-a is idle, so run-c gets its slot and run-a's store is released.
    expect((await request(bye('run-a'))).type).toBe('ack');
    expect(locked('run-a')).toBe(true);
    expect((await request(hello('run-c'))).type).toBe('welcome');
    expect(locked('run-a')).toBe(false);
    expect(locked('run-c')).toBe(true);
    expect(server.registry.evicted).toBe(1);
    expect(await request(step('run-a', 2))).toMatchObject({ type: 'error', code: 'E_NO_SESSION', fatal: true });
    // Coming back needs a free slot again (b and c are busy) ...
    expect(await request(hello('run-a'))).toMatchObject({ type: 'error', code: 'E_LIMIT' });
    expect((await request(bye('run-b'))).type).toBe('ack');
    // ... and then resumes from its store: the steps it had are still there.
    expect(await request(hello('run-a'))).toMatchObject({ type: 'welcome', resume: { last_step: 1 } });
    expect((await request(step('run-a', 2))).type).toBe('directive');
  });

  it('a run whose ranks stay connected but send nothing for --run-idle-ms is closable', async () => {
    const { server, request, locked } = await engine('idle', 1, 150);
    expect((await request(hello('run-x'))).type).toBe('welcome');
    expect((await request(step('run-x', 0))).type).toBe('directive');
    await new Promise((r) => setTimeout(r, 400));
    expect((await request(hello('run-y'))).type).toBe('welcome');
    expect(locked('run-x')).toBe(false);
    expect(server.registry.size).toBe(1);
    // run-y is fresh (not idle): nothing can be closed for run-x now.
    expect(await request(hello('run-x'))).toMatchObject({ type: 'error', code: 'E_LIMIT' });
  });

  it('many distinct run ids never open more than the cap', async () => {
    const { server, request } = await engine('many', 3);
    const codes: string[] = [];
    for (let i = 0; i < 20; i++) codes.push((await request(hello(`flood-${i}`))).code ?? 'welcome');
    expect(codes.slice(0, 3)).toEqual(['welcome', 'welcome', 'welcome']);
    expect(new Set(codes.slice(3))).toEqual(new Set(['E_LIMIT']));
    expect(server.registry.size).toBe(3);
  });
});
