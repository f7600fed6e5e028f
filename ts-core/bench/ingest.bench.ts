// Ingest throughput of the stats engine: ns/token for 1e6 and 1e7 tokens per step (~30% post-tool),
// (a) end to end through the real ZeroMQ socket (encode outside the timer; decode, validation,
// assembly, slices, all statistics, windows and the reply inside), (b) in process (RunStats only),
// against (c) a same-process baseline that pushes every |ℓ| into `tdigest` one value at a time
// (timed on a subsample and scaled per value). Each is reported as wall time and as this process's
// CPU time (all its threads: zmq I/O, GC), because on a shared machine wall time mostly measures the
// neighbours; end to end also as the main (event-loop) thread's CPU alone, with the echo checksum off and on.
// Run: `npm run bench` (or tsx ts-core/bench/ingest.bench.ts [--quick] [--steps N] [--write-doc]).
import { Dealer } from 'zeromq';
import tdigestPkg from 'tdigest';
import { encodeHeader, decodeMessage } from '../src/protocol/codec.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import { RunStats } from '../src/stats/index.ts';
import type { StepData } from '../src/types.ts';
import { ingestStep, mainThreadTicks, stepFrames } from './ingest-data.ts';
import { loadAvg, runLine, writeSection } from './doc-section.ts';

const { TDigest } = tdigestPkg as any;
const quick = process.argv.includes('--quick');
const stepsArg = Number(process.argv[process.argv.indexOf('--steps') + 1]);
const V = [1, 0];
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const wall = () => Number(process.hrtime.bigint());
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};
interface Sample { wall: number; cpu: number } // ns per token
const timed = (f: () => void, per: number): Sample => {
  const w0 = wall(), c0 = cpu();
  f();
  return { wall: (wall() - w0) / per, cpu: (cpu() - c0) / per };
};

async function socketRun(d: StepData, steps: number, checksum: boolean, warm = 2): Promise<{ samples: Sample[]; mainNs: number }> {
  const stats = new RunStats({ worldSize: 1 });
  const server = new EngineServer({
    endpoint: 'tcp://127.0.0.1:0', log: silentLogger(),
    factory: () => ({ addRankStep: (x) => stats.addRankStep(x), finalizeReady: (t) => stats.finalizeReady(t) }),
  });
  const ep = await server.start();
  const sock = new Dealer({ linger: 0, receiveTimeout: 120_000 });
  sock.connect(ep);
  await sock.send([encodeHeader({ type: 'hello', version: V, run_id: 'bench', rank: 0, world_size: 1, trainer: 'synthetic', mode: 'raw', checksum })]);
  await sock.receive();
  const T = d.completionMask.length;
  const samples: Sample[] = [];
  let ticks = 0;
  for (let s = 1; s <= steps; s++) {
    const fr = stepFrames(d, s); // encoding is the client's cost, outside the timer
    const t0 = mainThreadTicks();
    const w0 = wall(), c0 = cpu();
    for (const f of fr) await sock.send(f);
    const reply = decodeMessage(await sock.receive()).header as Record<string, any>;
    samples.push({ wall: (wall() - w0) / T, cpu: (cpu() - c0) / T });
    if (s > warm) ticks += mainThreadTicks() - t0;
    if (reply.type !== 'directive') throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
    if (reply.metrics_step !== s) throw new Error(`reply metrics for step ${reply.metrics_step}, expected ${s}`);
  }
  sock.close();
  await server.close();
  return { samples: samples.slice(warm), mainNs: (ticks * 1e7) / (T * (steps - warm)) };
}

function inProcess(d: StepData, steps: number, rs = new RunStats({ worldSize: 1 })): { samples: Sample[]; stats: RunStats } {
  const T = d.completionMask.length;
  const samples: Sample[] = [];
  const first = rs.lastFinal + 1;
  for (let s = first; s < first + steps; s++) {
    let r: unknown[] = [];
    samples.push(timed(() => {
      rs.addRankStep({ ...d, step: s });
      r = rs.finalizeReady(0);
    }, T));
    if (r.length !== 1) throw new Error('no result');
  }
  return { samples, stats: rs };
}

function tdigestBaseline(x: Float32Array, sample: number, reps: number): Sample[] {
  const n = Math.min(sample, x.length);
  const out: Sample[] = [];
  for (let k = 0; k < reps; k++) {
    const td = new TDigest();
    out.push(timed(() => {
      for (let i = 0; i < n; i++) td.push(Math.abs(x[i]));
    }, n));
  }
  return out;
}

const fmt = (a: Sample[], k: 'wall' | 'cpu') => `${median(a.map((s) => s[k])).toFixed(1)} (min ${Math.min(...a.map((s) => s[k])).toFixed(1)})`;

interface Row { T: number; steps: number; sock: Sample[]; sockMain: number; sum: Sample[]; inproc: Sample[]; base: Sample[]; paths: string }
const med = (a: Sample[], k: 'wall' | 'cpu') => median(a.map((s) => s[k]));

/** docs/benchmarks.md "Ingest throughput": every figure of this run beside its tdigest baseline. */
function writeDoc(rows: Row[], load0: string): void {
  const f = (x: number) => x.toFixed(1);
  const lines = rows.flatMap((r) => {
    const b = med(r.base, 'cpu'), row = (path: string, a: Sample[], main = '') =>
      `| ${r.T.toExponential(0)} | ${path} | ${f(med(a, 'cpu'))} | ${main} | ${f(med(a, 'wall'))} | ${f(b)} | **${(b / med(a, 'cpu')).toFixed(1)}×** |`;
    return [row('end to end, checksum off', r.sock, f(r.sockMain)), row('end to end, checksum on', r.sum), row('in process (`RunStats` only)', r.inproc)];
  });
  writeSection('ingest', `## Ingest throughput (generated by \`npm run bench -- --write-doc\`)

One pair (\`policy_vs_ref\`), α ≈ 0.31, Student-t-like ℓ, chunks of whole sequences encoded outside the timer.
**End to end**: an in-process \`EngineServer\` on tcp loopback with a stats-only pipeline (no store, no detectors:
for the full \`serve\` see "Product path"), from the first chunk sent by a DEALER to the \`directive\` reply.
**In process**: \`RunStats.addRankStep\` + \`finalizeReady\` alone. **Baseline**: \`tdigest.push(|ℓ|)\` one value at a
time on a 2e5-value subsample of the same values, 5 runs, in the same process. CPU is this process's (all
threads); "main" is the event-loop thread alone. Medians over the timed steps (warm-up steps untimed).

| tokens/step | path | CPU ns/token | main thread | wall ns/token | tdigest CPU ns/value | tdigest ÷ path (CPU) |
|---|---|---:|---:|---:|---:|---:|
${lines.join('\n')}

Exact quantiles came from: ${rows.map((r) => `${r.T.toExponential(0)}: ${r.paths}`).join('; ')}.
${runLine(load0)}`);
}

async function main() {
  const load0 = loadAvg(), rows: Row[] = [];
  const sizes = quick ? [1_000_000] : [1_000_000, 10_000_000];
  console.log(`# ingest benchmark (node ${process.version}, ${quick ? 'quick' : 'full'}); load average ${loadAvg()}`);
  console.log('# ns/token: median (min) over the timed steps; warm-up steps are not timed');
  for (const T of sizes) {
    const d = ingestStep(T, 7);
    const steps = Number.isFinite(stepsArg) && stepsArg > 0 ? stepsArg : T >= 1e7 ? (quick ? 3 : 7) : quick ? 8 : 15;
    const warm = inProcess(d, 3); // JIT, pools, window rings
    const inproc = inProcess(d, steps, warm.stats);
    const sock = await socketRun(d, steps + 2, false);
    const sockS = sock.samples;
    const sum = await socketRun(d, Math.max(3, steps >> 1) + 2, true);
    const base = tdigestBaseline(d.pairs.policy_vs_ref!, 200_000, 5);
    const post = (() => { let p = 0, m = 0; const lab = d.toolMask, cm = d.completionMask; for (let s = 0; s + 1 < d.offsets.length; s++) { let seen = false; for (let t = d.offsets[s]; t < d.offsets[s + 1]; t++) { if (!cm[t]) continue; if (!lab[t]) seen = true; else (m++, seen && p++); } } return p / m; })();
    const qp = inproc.stats.quantilePaths;
    rows.push({ T, steps, sock: sockS, sockMain: sock.mainNs, sum: sum.samples, inproc: inproc.samples, base, paths: `band ${qp.band}, rescan ${qp.scan}, histogram ${qp.hist}` });
    console.log(`T=${T.toExponential(0)} tokens/step, alpha=${post.toFixed(2)}, 1 pair, ${steps} timed steps; exact quantiles from the band ${qp.band}, rescan ${qp.scan}, histogram ${qp.hist}`);
    console.log(`  end to end (socket), checksum off: wall ${fmt(sockS, 'wall')}  cpu ${fmt(sockS, 'cpu')}  main thread ${sock.mainNs.toFixed(1)} ns/token`);
    console.log(`  end to end (socket), checksum on:  wall ${fmt(sum.samples, 'wall')}  cpu ${fmt(sum.samples, 'cpu')}  main thread ${sum.mainNs.toFixed(1)} ns/token`);
    console.log(`  in process (RunStats): wall ${fmt(inproc.samples, 'wall')}  cpu ${fmt(inproc.samples, 'cpu')} ns/token`);
    console.log(`  baseline tdigest.push per value (2e5-value subsample, 5 runs): wall ${fmt(base, 'wall')}  cpu ${fmt(base, 'cpu')} ns/value`);
    const r = (k: 'wall' | 'cpu', a: Sample[]) => (median(base.map((s) => s[k])) / median(a.map((s) => s[k]))).toFixed(1);
    console.log(`  ratio baseline / end to end: wall ${r('wall', sockS)}x, cpu ${r('cpu', sockS)}x (checksum on: cpu ${r('cpu', sum.samples)}x); baseline / in process: wall ${r('wall', inproc.samples)}x, cpu ${r('cpu', inproc.samples)}x`);
  }
  console.log(`# load average at the end ${loadAvg()}`);
  if (process.argv.includes('--write-doc')) writeDoc(rows, load0);
}

await main();
