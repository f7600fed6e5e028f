// Fair scheduling: one run flooding steps must not delay another run's reply beyond its own turn, even
// when it floods from many connections (libzmq alone takes turns per connection: 8 flooding ranks got 8
// turns for every one of the quiet run). The flood's steps are made slow (a pipeline that works ~2 ms per
// step); the quiet run's single step, sent once the engine is busy with the flood, must be handled within
// a couple of flood steps. The test looks at the order in which the engine handled the steps, never at the clock.
import { Dealer } from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeHeader } from '../src/protocol/index.ts';
import { helloFrames, stepFrames } from '../src/record/synthetic.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import type { Pipeline } from '../src/engine/pipeline.ts';

const servers: EngineServer[] = [];
const socks: Dealer[] = [];
afterEach(async () => {
  for (const s of socks.splice(0)) s.close();
  for (const s of servers.splice(0)) await s.close();
});

describe('fair scheduling across runs', () => {
  it('a run flooding 320 steps from 8 connections does not hold back another run\'s step', async () => {
    const order: string[] = [];
    let floodStarted!: () => void;
    const started = new Promise<void>((r) => (floodStarted = r));
    const factory = ({ runId }: { runId: string }): Pipeline => ({
      addRankStep: (d) => {
        order.push(`${runId}/${d.step}`);
        if (runId === 'flood') {
          if (d.step === 0) floodStarted();
          const until = performance.now() + 2;
          while (performance.now() < until); // work the engine must do per flood step
        }
      },
    });
    const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory, runDir: 'unused', tickMs: 60_000 });
    servers.push(server);
    await server.start();
    const dealer = () => {
      const d = new Dealer({ linger: 0, receiveTimeout: 60_000, sendHighWaterMark: 10_000 });
      socks.push(d);
      d.connect(server.endpoint);
      return d;
    };
    const flood = { runId: 'flood', worldSize: 8, seqs: 2, seqLen: 8 };
    const ranks = Array.from({ length: 8 }, () => dealer());
    const b = dealer();
    for (const [r, a] of ranks.entries()) {
      await a.send(helloFrames(flood, r));
      expect(decodeHeader((await a.receive())[0]).type).toBe('welcome');
    }
    await b.send(helloFrames({ runId: 'quiet', seqs: 2, seqLen: 8 }));
    expect(decodeHeader((await b.receive())[0]).type).toBe('welcome');
    for (let s = 0; s < 40; s++) for (const [r, a] of ranks.entries()) await a.send(stepFrames(flood, s, r));
    await started;
    await b.send(stepFrames({ runId: 'quiet', seqs: 2, seqLen: 8 }, 0));
    expect(decodeHeader((await b.receive())[0])).toMatchObject({ type: 'directive', run_id: 'quiet', step: 0 });
    const floodBefore = order.indexOf('quiet/0');
    for (const a of ranks) for (let s = 0; s < 40; s++) await a.receive();
    // Turns per connection: the quiet step waited for one step of each of the 8 flooding connections.
    expect(floodBefore).toBeGreaterThan(0);
    expect(floodBefore).toBeLessThanOrEqual(4);
  });
});
