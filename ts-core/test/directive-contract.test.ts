// The directive contract (proto/README.md "Directive contract") over real sockets: 4 ranks in lockstep
// (a barrier stands in for the DDP collective), rank 3's sends lag a step behind (a slow I/O thread),
// and a pipeline that decides a control directive on every final step. Each rank waits at the boundary
// of step b only for its replies to steps <= b - D, then applies what is due: no directive may be due
// before it arrived (late), and every rank must apply the same ids at the same boundaries (divergent).
import { Dealer } from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader, encodeMessage } from '../src/protocol/index.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import type { Pipeline } from '../src/engine/pipeline.ts';
import type { StepResult } from '../src/types.ts';

const V = [1, 1];
const WORLD = 4;
const STEPS = 1100;
const SLOW = 3;

/** Finalises a step when all ranks are in; decides a tighten (apply next step) on every one of them. */
function manyDirectives(): Pipeline {
  const ranksIn = new Map<number, number>();
  return {
    addRankStep: (d) => void ranksIn.set(d.step, (ranksIn.get(d.step) ?? 0) + 1),
    finalizeReady: () => {
      const done = [...ranksIn].filter(([, n]) => n === WORLD).map(([s]) => s).sort((a, b) => a - b);
      for (const s of done) ranksIn.delete(s);
      return done.map((step) => ({ runId: 'dc', step, records: [], windows: [], perRank: [] }) as unknown as StepResult);
    },
    // Ignores minApplyAt on purpose: the engine must raise apply_at_step itself.
    onStepResult: (r) => ({ id: `dc/${r.step}/t`, action: 'tighten', step: r.step, apply_at_step: r.step + 1, params: { beta: 0.1 }, reason: 'test', evidence: {} }),
  };
}

const stepFrames = (rank: number, step: number) =>
  encodeMessage(
    { type: 'step', version: V, run_id: 'dc', rank, world_size: WORLD, step, chunk: { index: 0, count: 1 }, tokens: 1, n_seqs: 1 },
    { completion_mask: new Uint8Array([1]), tool_mask: new Uint8Array([1]), offsets: new Int32Array([0, 1]) },
  );

/** A reusable barrier for WORLD parties (the collective at each step boundary). */
function barrier(n: number) {
  let waiting: (() => void)[] = [];
  return () =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === n) {
        const w = waiting;
        waiting = [];
        for (const f of w) f();
      }
    });
}

const servers: EngineServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});

describe('directive contract', () => {
  it('4 ranks, one slow, >= 1000 directives: 0 late, 0 divergent', async () => {
    const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory: manyDirectives });
    servers.push(server);
    await server.start();
    const atBoundary = barrier(WORLD);
    let lag = 1;
    const applied: Map<string, number>[] = [];
    const late: string[] = [];

    async function rank(r: number) {
      const sock = new Dealer({ receiveTimeout: 20_000, linger: 0 });
      sock.connect(server.endpoint);
      await sock.send([encodeHeader({ type: 'hello', version: V, run_id: 'dc', rank: r, world_size: WORLD, trainer: 'synthetic', resume: false })]);
      const welcome = decodeMessage(await sock.receive()).header as Record<string, any>;
      expect(welcome.type).toBe('welcome');
      lag = welcome.directive_lag ?? 1;
      const got = new Map<string, { apply: number }>(); // directive id -> apply_at_step
      const mine = new Map<string, number>(); // id -> boundary applied
      applied[r] = mine;
      let answered = -1; // replies arrive in send order on one connection
      let unsent: Buffer[][] = [];
      const readReply = async () => {
        const h = decodeMessage(await sock.receive()).header as Record<string, any>;
        expect(h.type).toBe('directive');
        answered = h.step;
        const d = h.directive;
        if (d.action !== 'noop') got.set(d.id, { apply: d.apply_at_step });
      };
      for (let b = 0; b < STEPS; b++) {
        // The slow rank's I/O thread sends step b only at the next boundary (before waiting on b - D there).
        if (r === SLOW) {
          for (const f of unsent) await sock.send(f);
          unsent = [stepFrames(r, b)];
        } else await sock.send(stepFrames(r, b));
        while (answered < b - lag) await readReply(); // the client's rule: replies to steps <= b - D
        for (const [id, d] of got) {
          if (mine.has(id) || d.apply > b) continue;
          if (d.apply < b) late.push(`rank ${r} ${id}: apply_at_step ${d.apply}, applied at ${b}`);
          mine.set(id, b);
        }
        await atBoundary();
      }
      for (const f of unsent) await sock.send(f);
      while (answered < STEPS - 1) await readReply();
      sock.close();
    }

    await Promise.all(Array.from({ length: WORLD }, (_, r) => rank(r)));
    expect(late).toEqual([]);
    const ref = [...applied[0]].sort();
    expect(ref.length).toBeGreaterThanOrEqual(1000);
    for (let r = 1; r < WORLD; r++) expect([...applied[r]].sort()).toEqual(ref); // same ids, same boundaries
  }, 120_000);
});
