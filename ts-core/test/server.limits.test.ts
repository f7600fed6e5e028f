// Bounded engine memory (proto/README.md "Limits", E_TOO_LARGE, E_BUDGET): the chunk count, the bytes of a
// chunked step, and the budget for what waits between messages (chunks of incomplete steps, rank steps
// waiting for the other ranks). Real sockets, the real pipeline.
import { describe, expect, it } from 'vitest';
import { encodeMessage } from '../src/protocol/index.ts';
import { helloFrames, stepFrames, type SyntheticRun } from '../src/record/synthetic.ts';
import type { ServerOptions } from '../src/transport/server.ts';
import { tempDir } from './engine-process.ts';
import { inprocEngines } from './inproc-engine.ts';

const { engine: start, dealer: conn } = inprocEngines();
const engine = (o: Partial<ServerOptions>) => start(tempDir('tg-lim-'), o);

/** Chunk `index` of `count` of a step: 1 sequence of T tokens. */
function chunk(runId: string, step: number, index: number, count: number, T = 1000) {
  return encodeMessage(
    { type: 'step', version: [1, 1], run_id: runId, rank: 0, world_size: 1, step, chunk: { index, count }, tokens: T, n_seqs: 1 },
    { completion_mask: new Uint8Array(T).fill(1), tool_mask: new Uint8Array(T).fill(1), offsets: Int32Array.from([0, T]), policy_vs_ref: new Float32Array(T) },
  );
}

describe('bounded resources', () => {
  it('welcome announces the step limits; a chunk count beyond max_step_chunks is E_TOO_LARGE', async () => {
    const server = await engine({});
    const c = await conn(server.endpoint);
    const w = await c.req(helloFrames({ runId: 'lim' }));
    expect(w.limits).toMatchObject({ max_step_bytes: 512 * 1024 ** 2, max_step_chunks: 1024 });
    expect(await c.req(chunk('lim', 0, 0, Number.MAX_SAFE_INTEGER))).toMatchObject({ type: 'error', code: 'E_TOO_LARGE', fatal: false });
    expect(await c.req(chunk('lim', 0, 0, 1))).toMatchObject({ type: 'directive', step: 0 });
  });

  it('a chunked step beyond max_step_bytes is E_TOO_LARGE at the chunk that passes it; the next step is fine', async () => {
    const server = await engine({ limits: { max_step_bytes: 15_000 } }); // one chunk of 1000 tokens: 6,008 bytes
    const c = await conn(server.endpoint);
    await c.req(helloFrames({ runId: 'bytes' }));
    await c.send(chunk('bytes', 0, 0, 3));
    await c.send(chunk('bytes', 0, 1, 3));
    expect(await c.req(chunk('bytes', 0, 2, 3))).toMatchObject({ type: 'error', code: 'E_TOO_LARGE', ref: { step: 0 } });
    expect(server.registry.budget.held()).toBe(0); // the discarded chunks were given back
    await c.send(chunk('bytes', 1, 0, 2));
    expect(await c.req(chunk('bytes', 1, 1, 2))).toMatchObject({ type: 'directive', step: 1 });
  });

  it('chunks of incomplete steps count against the per-run budget (E_BUDGET, not fatal)', async () => {
    const server = await engine({ maxRunPendingBytes: 10_000 }); // one chunk: 6,008 bytes
    const c = await conn(server.endpoint);
    await c.req(helloFrames({ runId: 'chunks' }));
    await c.send(chunk('chunks', 0, 0, 4));
    expect(await c.req(chunk('chunks', 0, 1, 4))).toMatchObject({ type: 'error', code: 'E_BUDGET', fatal: false });
    expect(server.registry.budget.held()).toBe(0);
  });

  it('rank steps waiting for a missing rank are bounded per run; they are given back when the steps finalise', async () => {
    const server = await engine({ maxRunPendingBytes: 4 * 1024 ** 2 });
    const run: SyntheticRun = { runId: 'waiting', worldSize: 2 };
    const r0 = await conn(server.endpoint);
    const r1 = await conn(server.endpoint);
    await r0.req(helloFrames(run, 0));
    await r1.req(helloFrames(run, 1));
    const codes: string[] = [];
    for (let s = 0; s < 6; s++) {
      const h = await r0.req(stepFrames(run, s, 0));
      codes.push(h.type === 'error' ? h.code : h.type);
    }
    expect(codes.slice(0, 3)).toEqual(['directive', 'directive', 'directive']);
    expect(new Set(codes.slice(3))).toEqual(new Set(['E_BUDGET']));
    for (let s = 0; s < 3; s++) {
      const h = await r1.req(stepFrames(run, s, 1));
      expect(h, JSON.stringify(h)).toMatchObject({ type: 'directive', metrics_step: s });
    }
    expect(server.registry.budget.held()).toBe(0);
    // A refused step was not received: its resend is accepted once there is room (not E_DUPLICATE).
    expect(await r0.req(stepFrames(run, 3, 0))).toMatchObject({ type: 'directive', step: 3 });
  });
});
