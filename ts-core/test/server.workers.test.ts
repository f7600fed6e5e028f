// The engine with ingest workers (serve --ingest-workers) against the engine without, over real sockets:
// the same messages in the same order give the same replies, in the same order, and the same run store;
// a worker that dies answers its step with E_WORKER (retryable), the resend is counted, the run goes on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeHeader, encodeMessage } from '../src/protocol/index.ts';
import { IngestPool } from '../src/stats/ingest-pool.ts';
import type { StepData } from '../src/types.ts';
import { mulberry32 } from '../src/util/prng.ts';
import { tempDir } from './engine-process.ts';
import { inprocEngines } from './inproc-engine.ts';
import { contaminated, splitRanks, synthStep } from './stats-helpers.ts';

const { engine, dealer, stop } = inprocEngines();
const pools: IngestPool[] = [];
afterAll(async () => Promise.all(pools.map((p) => p.close())));
const pool = (n: number, o?: ConstructorParameters<typeof IngestPool>[1]) => (pools.push(new IngestPool(n, o)), pools.at(-1)!);

const RUN = 'workers', WORLD = 4;
const hello = (rank: number, resume?: boolean) =>
  [encodeHeader({ type: 'hello', version: [1, 0], run_id: RUN, rank, world_size: WORLD, trainer: 'synthetic', mode: 'raw', checksum: false, ...(resume !== undefined && { resume }) })];

/** One rank's step as `chunks` messages of whole sequences: NaN/±Inf, token ids, user slices on even steps, an implicit pair. */
function rankMessages(step: number, rank: number, chunks = 2): Buffer[][] {
  const d = synthStep({ tokens: 16_000, seed: 3 + step, alpha: 0.35, gen: (r) => contaminated(r, 0.05), step });
  const r = mulberry32(step);
  const x = d.pairs.policy_vs_ref!;
  for (let k = 0; k < 12; k++) x[Math.floor(r() * x.length)] = [NaN, Infinity, -Infinity][k % 3];
  d.tokenIds = Int32Array.from({ length: x.length }, (_, i) => (i * 31) % 9000);
  if (step % 2 === 0) d.sliceIds = Uint16Array.from({ length: x.length }, (_, i) => (i >> 5) % 2);
  const rs = part(d, rank, WORLD);
  return Array.from({ length: chunks }, (_, i) => {
    const c = part(rs, i, chunks);
    const bufs: Record<string, Float32Array | Uint8Array | Int32Array | Uint16Array> = {
      policy_vs_ref: c.pairs.policy_vs_ref!, completion_mask: c.completionMask, tool_mask: c.toolMask, offsets: c.offsets, token_ids: c.tokenIds!,
    };
    if (c.sliceIds) bufs.slice_ids = c.sliceIds;
    return encodeMessage({
      type: 'step', version: [1, 0], run_id: RUN, rank, world_size: WORLD, step, chunk: { index: i, count: chunks },
      tokens: c.completionMask.length, n_seqs: c.offsets.length - 1, implicit: ['policy_vs_old'],
      knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28 }, logs: { loss: 1 / step }, ...(c.sliceIds && { slice_names: ['search', 'python'] }),
    }, bufs);
  });
}

/** Part i of k of a step's sequences, every per-token array cut alike (splitRanks cuts pairs and masks only). */
function part(d: StepData, i: number, k: number): StepData {
  const n = d.offsets.length - 1;
  const a = d.offsets[Math.floor((i * n) / k)], b = d.offsets[Math.floor(((i + 1) * n) / k)];
  const out: StepData = { ...splitRanks(d, k)[i], tokenIds: d.tokenIds!.slice(a, b) };
  if (d.sliceIds) out.sliceIds = d.sliceIds.slice(a, b);
  return out;
}

/** Everything one connection sends for steps [from, to]: ranks interleaved, step s+1's first ranks before s's last. */
function stream(from: number, to: number): Buffer[][] {
  const out: Buffer[][] = [];
  for (let s = from; s <= to; s++) for (const r of [2, 0, 3, 1]) out.push(...rankMessages(s, r));
  // rank 1 of step s after rank 2 of step s+1
  for (let i = 0; i + 8 < out.length; i += 8) [out[i + 6], out[i + 7], out[i + 8], out[i + 9]] = [out[i + 8], out[i + 9], out[i + 6], out[i + 7]];
  return out;
}

/** Send all of it on one socket (so the arrival order is fixed) without waiting, then read the replies. */
async function drive(endpoint: string, msgs: Buffer[][], expectReplies: number) {
  const c = await dealer(endpoint);
  for (const m of msgs) await c.send(m);
  const replies: Record<string, any>[] = [];
  for (let i = 0; i < expectReplies; i++) replies.push(await c.recv());
  return replies.map(({ session, ...h }) => h); // session ids are random
}

const helloAll = (resume?: boolean) => [0, 1, 2, 3].map((r) => hello(r, resume));
const STEPS = 6;
const byeAll = [0, 1, 2, 3].map((r) => [encodeHeader({ type: 'bye', version: [1, 0], run_id: RUN, rank: r, last_step: STEPS })]);

function store(runDir: string): Record<string, string[]> {
  const dir = path.join(runDir, RUN);
  const out: Record<string, string[]> = {};
  for (const f of ['metrics.jsonl', 'windows.jsonl', 'steps.jsonl', 'directives.jsonl']) {
    const p = path.join(dir, f);
    out[f] = fs.existsSync(p) ? fs.readFileSync(p, 'utf8').split('\n').filter(Boolean).map(stripTimes) : [];
  }
  return out;
}
const stripTimes = (line: string) => JSON.stringify(JSON.parse(line), (k, v) => (/(_at|_ms|time)$/.test(k) ? undefined : v));

describe('engine with ingest workers', () => {
  it('same replies in the same order and the same run store as in-thread (4 ranks, chunked steps, a duplicate, bye)', async () => {
    const msgs = [...helloAll(), ...stream(1, STEPS)];
    msgs.splice(20, 0, msgs[12]); // a chunk again: E_DUPLICATE, answered in its place in line
    msgs.push(...byeAll);
    const expected = 4 + WORLD * STEPS + 1 + 4;
    const ref = tempDir('tg-w-ref-'), par = tempDir('tg-w-par-');
    const e0 = await engine(ref);
    const e1 = await engine(par, { options: { window: 4, ingestPool: pool(2) } });
    const r0 = await drive(e0.endpoint, msgs, expected);
    const r1 = await drive(e1.endpoint, msgs, expected);
    expect(r0.filter((h) => h.type === 'error').map((h) => h.code)).toEqual(['E_DUPLICATE']);
    expect(r0.filter((h) => h.type === 'directive')).toHaveLength(WORLD * STEPS);
    expect(r1).toEqual(r0);
    await stop(e0);
    await stop(e1);
    const s0 = store(ref);
    expect(s0['steps.jsonl']).toHaveLength(STEPS);
    expect(store(par)).toEqual(s0);
    expect(pools[0].counters.jobs).toBe(WORLD * STEPS);
  });

  it('resumes: steps 1..3 on one engine with workers, 4..6 after a restart on another, equal to 1..6 in-thread', async () => {
    const ref = tempDir('tg-w-ref-'), par = tempDir('tg-w-par-');
    const e0 = await engine(ref);
    await drive(e0.endpoint, [...helloAll(), ...stream(1, STEPS), ...byeAll], 4 + WORLD * STEPS + 4);
    await stop(e0);
    const p = pool(2);
    const e1 = await engine(par, { options: { window: 4, ingestPool: p } });
    await drive(e1.endpoint, [...helloAll(), ...stream(1, 3)], 4 + WORLD * 3);
    await stop(e1);
    const e2 = await engine(par, { options: { window: 4, ingestPool: p } });
    const welcome = await drive(e2.endpoint, [...helloAll(true), ...stream(4, STEPS), ...byeAll], 4 + WORLD * 3 + 4);
    expect(welcome[0].resume).toEqual({ last_step: 3 });
    await stop(e2);
    expect(store(par)['metrics.jsonl']).toEqual(store(ref)['metrics.jsonl']);
    expect(store(par)['windows.jsonl']).toEqual(store(ref)['windows.jsonl']);
  });

  it('a worker that dies: that rank step gets E_WORKER (retryable), the engine keeps serving, the resend is counted', async () => {
    let crash = true;
    const p = pool(2, { fault: (rank, step) => (crash && rank === 1 && step === 2 ? ((crash = false), 'exit') : undefined) });
    const par = tempDir('tg-w-crash-'), ref = tempDir('tg-w-ref-');
    const e1 = await engine(par, { options: { window: 4, ingestPool: p } });
    const c = await dealer(e1.endpoint);
    for (const h of helloAll()) expect((await c.req(h)).type).toBe('welcome');
    const replies: Record<string, any>[] = [];
    for (let s = 1; s <= 3; s++) {
      for (const r of [0, 1, 2, 3]) for (const m of rankMessages(s, r)) await c.send(m);
      const got = [];
      for (let i = 0; i < WORLD; i++) got.push(await c.recv());
      replies.push(...got);
      // The dead worker's queued jobs (other ranks of the step it held) fail with it, each answered alike.
      for (const err of got.filter((h) => h.type === 'error')) {
        expect(err).toMatchObject({ code: 'E_WORKER', fatal: false, retryable: true, ref: { step: 2 } });
        expect(err.message).toMatch(/ingest worker .* died .*resend the step/);
        for (const m of rankMessages(s, err.ref.rank)) await c.send(m);
        expect(await c.recv()).toMatchObject({ type: 'directive', step: 2, rank: err.ref.rank });
      }
    }
    const errors = replies.filter((h) => h.type === 'error');
    expect(errors.map((h) => h.ref.rank)).toContain(1);
    expect(p.counters).toMatchObject({ failed: errors.length, replaced: 1 });
    await stop(e1);
    const e0 = await engine(ref);
    await drive(e0.endpoint, [...helloAll(), ...stream(1, 3)], 4 + WORLD * 3);
    await stop(e0);
    expect(store(par)['metrics.jsonl']).toEqual(store(ref)['metrics.jsonl']);
  });

  it('a step does not time out while a rank step is with a slow worker (the tick waits; in-thread it could not happen)', async () => {
    const p = pool(2, { fault: (rank) => (rank === 1 ? 'slow' : undefined) });
    const dir = tempDir('tg-w-slow-');
    const e = await engine(dir, { options: { window: 4, stepTimeout: 300, ingestPool: p }, tickMs: 50 });
    const c = await dealer(e.endpoint);
    for (const h of helloAll()) expect((await c.req(h)).type).toBe('welcome');
    for (const r of [0, 1, 2, 3]) for (const m of rankMessages(1, r)) await c.send(m);
    const got = [];
    for (let i = 0; i < WORLD; i++) got.push(await c.recv());
    expect(got.map((h) => h.type)).toEqual(['directive', 'directive', 'directive', 'directive']);
    expect(got[3].metrics_step).toBe(1);
    await stop(e);
    const steps = store(dir)['steps.jsonl'].map((l) => JSON.parse(l));
    expect(steps.map((x) => [x.step, x.ranks_present, x.ranks_missing])).toEqual([[1, [0, 1, 2, 3], []]]);
  });
});
