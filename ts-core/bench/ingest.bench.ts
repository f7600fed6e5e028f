// Ingest throughput of the stats engine: ns/token for 1e6 and 1e7 tokens per step (~30% post-tool),
// (a) end to end through the real ZeroMQ socket (encode outside the timer; decode, validation,
// assembly, slices, all statistics, windows and the reply inside), (b) in process (RunStats only),
// against (c) a same-process baseline that pushes every |ℓ| into `tdigest` one value at a time
// (timed on a subsample and scaled per value). Run: `npm run bench` (or tsx ts-core/bench/ingest.bench.ts [--quick]).
import { Dealer } from 'zeromq';
import tdigestPkg from 'tdigest';
import { encodeHeader, encodeMessage, decodeMessage } from '../src/protocol/codec.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import { RunStats } from '../src/stats/index.ts';
import type { StepData } from '../src/types.ts';
import { chunkRanges, ingestStep } from './ingest-data.ts';

const { TDigest } = tdigestPkg as any;
const quick = process.argv.includes('--quick');
const V = [1, 0];
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const now = () => Number(process.hrtime.bigint());

function frames(d: StepData, step: number, maxChunk = 1_000_000): Buffer[][] {
  const ranges = chunkRanges(d.offsets, maxChunk);
  return ranges.map(([s0, s1], index) => {
    const a = d.offsets[s0], b = d.offsets[s1];
    const offsets = Int32Array.from(d.offsets.subarray(s0, s1 + 1), (o) => o - a);
    return encodeMessage(
      { type: 'step', version: V, run_id: 'bench', rank: 0, world_size: 1, step, chunk: { index, count: ranges.length }, tokens: b - a, n_seqs: s1 - s0, knobs: d.knobs, logs: {}, implicit: [] },
      { policy_vs_ref: d.pairs.policy_vs_ref!.subarray(a, b), completion_mask: d.completionMask.subarray(a, b), tool_mask: d.toolMask.subarray(a, b), offsets },
    );
  });
}

async function socketRun(d: StepData, steps: number): Promise<number[]> {
  const stats = new RunStats({ worldSize: 1 });
  const server = new EngineServer({
    endpoint: 'tcp://127.0.0.1:0', log: silentLogger(),
    factory: () => ({ addRankStep: (x) => stats.addRankStep(x), finalizeReady: (t) => stats.finalizeReady(t) }),
  });
  const ep = await server.start();
  const sock = new Dealer({ linger: 0, receiveTimeout: 120_000 });
  sock.connect(ep);
  await sock.send([encodeHeader({ type: 'hello', version: V, run_id: 'bench', rank: 0, world_size: 1, trainer: 'synthetic', mode: 'raw', checksum: false })]);
  await sock.receive();
  const out: number[] = [];
  for (let s = 1; s <= steps; s++) {
    const fr = frames(d, s); // encoding is the client's cost, outside the timer
    const t0 = now();
    for (const f of fr) await sock.send(f);
    const reply = decodeMessage(await sock.receive()).header as Record<string, any>;
    const dt = now() - t0;
    if (reply.type !== 'directive') throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
    if (reply.metrics_step !== s) throw new Error(`reply metrics for step ${reply.metrics_step}, expected ${s}`);
    out.push(dt / d.completionMask.length);
  }
  sock.close();
  await server.close();
  return out;
}

function inProcess(d: StepData, steps: number): number[] {
  const rs = new RunStats({ worldSize: 1 });
  const out: number[] = [];
  for (let s = 1; s <= steps; s++) {
    const t0 = now();
    rs.addRankStep({ ...d, step: s });
    const r = rs.finalizeReady(0);
    out.push((now() - t0) / d.completionMask.length);
    if (r.length !== 1) throw new Error('no result');
  }
  return out;
}

function tdigestBaseline(x: Float32Array, sample: number): number {
  const td = new TDigest();
  const n = Math.min(sample, x.length);
  const t0 = now();
  for (let i = 0; i < n; i++) td.push(Math.abs(x[i]));
  return (now() - t0) / n;
}

async function main() {
  const sizes = quick ? [1_000_000] : [1_000_000, 10_000_000];
  console.log(`# ingest benchmark (node ${process.version}, ${quick ? 'quick' : 'full'})`);
  for (const T of sizes) {
    const d = ingestStep(T, 7);
    const steps = T >= 1e7 ? (quick ? 2 : 5) : quick ? 4 : 9;
    inProcess(d, 2); // warm-up (JIT)
    const inproc = inProcess(d, steps).slice(1);
    const sock = (await socketRun(d, steps + 1)).slice(1);
    const base = tdigestBaseline(d.pairs.policy_vs_ref!, T >= 1e7 ? 200_000 : 200_000);
    const post = (() => { let p = 0, m = 0; const lab = d.toolMask, cm = d.completionMask; for (let s = 0; s + 1 < d.offsets.length; s++) { let seen = false; for (let t = d.offsets[s]; t < d.offsets[s + 1]; t++) { if (!cm[t]) continue; if (!lab[t]) seen = true; else (m++, seen && p++); } } return p / m; })();
    console.log(`T=${T.toExponential(0)} tokens/step, alpha=${post.toFixed(2)}, 1 pair, ${steps} steps (first dropped)`);
    console.log(`  end to end (socket): median ${median(sock).toFixed(1)} ns/token  [${sock.map((v) => v.toFixed(1)).join(', ')}]`);
    console.log(`  in process (RunStats): median ${median(inproc).toFixed(1)} ns/token  [${inproc.map((v) => v.toFixed(1)).join(', ')}]`);
    console.log(`  baseline tdigest.push per value (2e5-value subsample, scaled): ${base.toFixed(1)} ns/token`);
    console.log(`  ratio baseline / end to end: ${(base / median(sock)).toFixed(1)}x; baseline / in process: ${(base / median(inproc)).toFixed(1)}x`);
  }
}

await main();
