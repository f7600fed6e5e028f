// The `received` echo over a real socket: slice counts come from the stats pass (RankStep.maskCounts)
// when a RunStats pipeline runs, from the engine's own pass otherwise (no stats, or a step stats
// refused as late); both must equal a naive count. The checksum is present only when hello asked.
import { Dealer } from 'zeromq';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeMessage, encodeHeader } from '../src/protocol/index.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import { RunStats } from '../src/stats/index.ts';
import { fnv1a, FNV_OFFSET } from '../src/protocol/checksum.ts';
import type { Pipeline } from '../src/engine/pipeline.ts';
import type { StepData } from '../src/types.ts';
import { ingestStep, stepFrames } from '../bench/ingest-data.ts';

const V = [1, 0];

/** Naive oracle: DESIGN §3 per token, with the first tool-output position found per sequence. */
function naive(d: StepData) {
  const s = { all: 0, pre_tool: 0, post_tool: 0, tool_output: 0 };
  const cm = d.completionMask, tm = d.toolMask, off = d.offsets;
  for (let q = 0; q + 1 < off.length; q++) {
    let first = -1;
    for (let t = off[q]; t < off[q + 1] && first < 0; t++) if (cm[t] && !tm[t]) first = t;
    for (let t = off[q]; t < off[q + 1]; t++) {
      if (!cm[t]) continue;
      if (!tm[t]) s.tool_output++;
      else (s.all++, first >= 0 && t > first ? s.post_tool++ : s.pre_tool++);
    }
  }
  return { tokens: cm.length, n_seqs: off.length - 1, slices: s };
}

const servers: EngineServer[] = [];
const socks: Dealer[] = [];
afterEach(async () => {
  socks.splice(0).forEach((s) => s.close());
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(factory: () => Pipeline) {
  const server = new EngineServer({ endpoint: 'tcp://127.0.0.1:*', log: silentLogger(), factory });
  servers.push(server);
  await server.start();
  return async (rank: number, worldSize: number, checksum?: boolean) => {
    const sock = new Dealer({ linger: 0, receiveTimeout: 10_000 });
    socks.push(sock);
    sock.connect(server.endpoint);
    const hello: Record<string, unknown> = { type: 'hello', version: V, run_id: 'bench', rank, world_size: worldSize, trainer: 'synthetic' };
    if (checksum !== undefined) hello.checksum = checksum;
    await sock.send([encodeHeader(hello)]);
    expect((decodeMessage(await sock.receive()).header as { type: string }).type).toBe('welcome');
    return async (frames: Buffer[][]) => {
      for (const f of frames) await sock.send(f);
      return decodeMessage(await sock.receive()).header as Record<string, any>;
    };
  };
}

const statsPipeline = (stats: RunStats): Pipeline => ({ addRankStep: (d) => stats.addRankStep(d), finalizeReady: (t) => stats.finalizeReady(t) });

describe('received echo', () => {
  const d = ingestStep(6000, 3);
  const want = naive(d);

  it('has tool spans in both halves of sequences (the test data exercises every slice)', () => {
    expect(want.slices.pre_tool).toBeGreaterThan(0);
    expect(want.slices.post_tool).toBeGreaterThan(0);
    expect(want.slices.tool_output).toBeGreaterThan(0);
  });

  for (const [name, chunk] of [['single chunk', 1e6], ['four chunks', 1600]] as const) {
    it(`${name}: stats counts, own counts and the naive count agree; checksum only on request`, async () => {
      let statsCalls = 0;
      const stats = new RunStats({ worldSize: 1 });
      const withStats = await start(() => ({ ...statsPipeline(stats), addRankStep: (x) => (statsCalls++, stats.addRankStep(x)) }));
      const noStats = await start(() => ({}));
      const frames = stepFrames(d, 1, chunk);
      expect(frames.length).toBe(chunk === 1e6 ? 1 : 4);
      let h = FNV_OFFSET;
      for (const f of frames) for (const b of f.slice(1)) h = fnv1a(b, h);
      const a = await (await withStats(0, 1))(frames); // hello without `checksum`: on
      const b = await (await noStats(0, 1, true))(frames);
      expect(statsCalls).toBe(1);
      expect(a.received).toEqual({ ...want, checksum: h });
      expect(b.received).toEqual({ ...want, checksum: h });
      const c = await (await noStats(0, 1, false))(stepFrames(d, 1, chunk));
      expect(c.received).toEqual({ ...want, checksum: null });
    });
  }

  it('a rank step stats refuses as late still gets exact counts (the own pass)', async () => {
    const stats = new RunStats({ worldSize: 2, stepTimeoutMs: 0 }); // rank 0's step finalises at once
    const send = await start(() => statsPipeline(stats));
    const r0 = await (await send(0, 2, false))(stepFrames(d, 1, 1e6, 0, 2));
    expect(r0.metrics_step).toBe(1);
    const r1 = await (await send(1, 2, false))(stepFrames(d, 1, 1600, 1, 2));
    expect(stats.late.count).toBe(1);
    expect(r1.received).toEqual({ ...want, checksum: null });
  });
});
