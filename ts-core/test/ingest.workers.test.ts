// Ingest workers (stats/ingest-pool.ts): the same rank steps through real worker threads give StepResults
// identical to the in-thread path (toEqual compares numbers with Object.is: bit for bit, NaN and -0
// included), and a worker that dies or hangs fails its job with E_WORKER and is replaced.
import { afterAll, describe, expect, it } from 'vitest';
import { IngestPool, type IngestResult } from '../src/stats/ingest-pool.ts';
import { RunStats, type RunStatsOptions } from '../src/stats/index.ts';
import type { StepData, StepResult } from '../src/types.ts';
import { mulberry32 } from '../src/util/prng.ts';
import { contaminated, splitRanks, synthStep } from './stats-helpers.ts';

const pools: IngestPool[] = [];
afterAll(async () => Promise.all(pools.map((p) => p.close())));
const pool = (n: number, o?: ConstructorParameters<typeof IngestPool>[1]) => (pools.push(new IngestPool(n, o)), pools.at(-1)!);

/** Rank steps of one step: NaN/±Inf sprinkled, a user slice table, token ids, an implicit pair. */
function rankSteps(step: number, world: number, o: { user?: boolean; tokens?: number } = {}): StepData[] {
  const d = synthStep({ tokens: o.tokens ?? 12_000, seed: 11 + step, alpha: 0.35, gen: (r) => contaminated(r, 0.05), pairs: ['policy_vs_ref', 'old_vs_rollout'], step });
  const r = mulberry32(step + 5);
  const x = d.pairs.policy_vs_ref!;
  for (let k = 0; k < 20; k++) x[Math.floor(r() * x.length)] = [NaN, Infinity, -Infinity, -0, 0][k % 5];
  d.implicit = ['policy_vs_old'];
  d.knobs = { epsilon_low: 0.2, epsilon_high: 0.28, beta: 0.04 };
  const T = x.length;
  d.tokenIds = Int32Array.from({ length: T }, (_, i) => (i * 7919) % 50_000);
  if (o.user) {
    d.sliceIds = Uint16Array.from({ length: T }, (_, i) => (i >> 6) % 3);
    d.sliceNames = ['search', 'python', 'turn_2'];
  }
  return splitRanks(d, world).map((s, rank) => withRankExtras({ ...s, step, logs: { loss: step } }, d, rank, world));
}

/** splitRanks copies pairs and masks only: cut token ids and slice ids the same way. */
function withRankExtras(s: StepData, d: StepData, rank: number, world: number): StepData {
  const n = d.offsets.length - 1;
  const a = d.offsets[Math.floor((rank * n) / world)], b = d.offsets[Math.floor(((rank + 1) * n) / world)];
  const out: StepData = { ...s, tokenIds: d.tokenIds!.slice(a, b) };
  if (d.sliceIds) (out.sliceIds = d.sliceIds.slice(a, b)), (out.sliceNames = d.sliceNames);
  return out;
}

/** Feed the same steps in-thread and through `p`, in the given order of (step, rank); results side by side. */
async function both(order: [number, number][], steps: Map<number, StepData[]>, p: IngestPool, opts: RunStatsOptions) {
  const a = new RunStats(opts), b = new RunStats(opts);
  const ra: StepResult[] = [], rb: StepResult[] = [];
  const ca: unknown[] = [], cb: unknown[] = [];
  // Start every job first (as the server does while workers run), merge in arrival order.
  const jobs = order.map(([s, r]) => b.startRankStep(steps.get(s)![r], p));
  for (let i = 0; i < order.length; i++) {
    const [s, r] = order[i];
    ca.push(a.addRankStep(steps.get(s)![r]));
    ra.push(...a.finalizeReady(0));
    const res: IngestResult = await jobs[i];
    cb.push(b.addRankResult(steps.get(s)![r], res, (sab) => p.shared.release(sab)));
    rb.push(...b.finalizeReady(0));
  }
  return { ra, rb, ca, cb, a, b };
}

describe('ingest workers give the in-thread results', () => {
  it('4 ranks × 6 steps, NaN/Inf, tool and user slices, token ids, an implicit pair; ranks interleaved across steps', async () => {
    const p = pool(2);
    const world = 4;
    const steps = new Map([1, 2, 3, 4, 5, 6].map((s) => [s, rankSteps(s, world, { user: s % 2 === 0 })]));
    // Ranks out of order, and step s+1's first ranks before step s's last.
    const order: [number, number][] = [];
    for (const s of steps.keys()) for (const r of [2, 0, 3]) order.push([s, r]);
    const tail = [...steps.keys()].map((s) => [s, 1] as [number, number]);
    const mixed: [number, number][] = [];
    order.forEach((o, i) => (mixed.push(o), i % 3 === 2 && mixed.push(tail.shift()!)));
    const { ra, rb, ca, cb, a, b } = await both(mixed, steps, p, { worldSize: world, window: 3, runId: 'w' });
    expect(ra.length).toBe(6);
    expect(rb).toEqual(ra);
    expect(cb).toEqual(ca);
    expect(ra.some((r) => r.records.some((m) => m.slice.startsWith('user:')))).toBe(true);
    expect(ra[0].records.find((m) => m.pair === 'policy_vs_ref' && m.slice === 'all')!.nonfinite).toBeGreaterThan(0);
    expect(ra[0].topTokens?.['policy_vs_ref/all']?.length).toBeGreaterThan(0);
    expect(JSON.stringify(b.snapshot())).toBe(JSON.stringify(a.snapshot()));
    expect(p.counters.failed).toBe(0);
  });

  it('late and duplicate rank steps, and kept values dropped past exactMaxValues, count the same', async () => {
    const p = pool(2);
    const steps = new Map([1, 2, 3].map((s) => [s, rankSteps(s, 2)]));
    // step 2 finalises (both ranks), then step 1's rank 1 arrives late; step 3 rank 0 twice.
    const order: [number, number][] = [[1, 0], [2, 0], [2, 1], [1, 1], [3, 0], [3, 0], [3, 1]];
    const { ra, rb, ca, cb, a, b } = await both(order, steps, p, { worldSize: 2, exactMaxValues: 15_000, runId: 'w' });
    expect(rb).toEqual(ra);
    expect(cb).toEqual(ca);
    expect(b.late).toEqual(a.late);
    expect(b.duplicates).toBe(a.duplicates);
    expect(a.duplicates).toBe(1);
    expect(b.quantilePaths.hist).toBe(a.quantilePaths.hist);
    expect(a.quantilePaths.hist).toBeGreaterThan(0);
  });

  it('resumes from a snapshot the same way', async () => {
    const p = pool(1);
    const steps = new Map([1, 2, 3, 4].map((s) => [s, rankSteps(s, 2, { user: true })]));
    const first = await both([[1, 0], [1, 1], [2, 1], [2, 0]], steps, p, { worldSize: 2, window: 2 });
    const snap = JSON.parse(first.a.snapshotText());
    const a = RunStats.restore(snap, { worldSize: 2 }), b = RunStats.restore(snap, { worldSize: 2 });
    const ra: StepResult[] = [], rb: StepResult[] = [];
    for (const s of [3, 4]) {
      for (const r of [0, 1]) {
        a.addRankStep(steps.get(s)![r]);
        b.addRankResult(steps.get(s)![r], await b.startRankStep(steps.get(s)![r], p), (sab) => p.shared.release(sab));
      }
      ra.push(...a.finalizeReady(0));
      rb.push(...b.finalizeReady(0));
    }
    expect(ra.map((r) => r.step)).toEqual([3, 4]);
    expect(rb).toEqual(ra);
  });
});

describe('a worker that dies', () => {
  it('fails its job with E_WORKER, is replaced, and the next jobs give the in-thread results', async () => {
    let kill = true;
    const p = pool(1, { fault: () => (kill ? ((kill = false), 'exit') : undefined) });
    const [d0, d1] = rankSteps(1, 2);
    const b = new RunStats({ worldSize: 2 });
    await expect(b.startRankStep(d0, p)).rejects.toMatchObject({ code: 'E_WORKER' });
    expect(p.counters).toMatchObject({ failed: 1, replaced: 1 });
    const a = new RunStats({ worldSize: 2 });
    for (const d of [d0, d1]) {
      a.addRankStep(d);
      b.addRankResult(d, await b.startRankStep(d, p), (sab) => p.shared.release(sab));
    }
    expect(b.finalizeReady(0)).toEqual(a.finalizeReady(0));
  });

  it('a hung worker is killed after the job timeout: E_WORKER, then the pool serves again', async () => {
    let hang = true;
    const p = pool(1, { jobTimeoutMs: 1500, fault: () => (hang ? ((hang = false), 'hang') : undefined) });
    const [d0] = rankSteps(1, 1, { tokens: 3000 });
    const b = new RunStats({ worldSize: 1 });
    await expect(b.startRankStep(d0, p)).rejects.toMatchObject({ code: 'E_WORKER', message: expect.stringMatching(/no answer within 1500 ms/) });
    const res = await b.startRankStep(d0, p);
    expect(b.addRankResult(d0, res, (sab) => p.shared.release(sab))).toMatchObject({ pre_tool: expect.any(Number) });
    expect(b.finalizeReady(0)).toHaveLength(1);
  });
});
