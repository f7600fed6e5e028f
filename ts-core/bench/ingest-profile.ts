// Profiling driver for the end-to-end ingest path (socket only), for `node --cpu-prof` / `--trace-gc`:
//   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx ts-core/bench/ingest-profile.ts --tokens 1e6 --steps 20 [--checksum]
// Prints CPU and wall ns/token per step; no baseline (that is ingest.bench.ts).
import { loadavg } from 'node:os';
import { readdirSync, readFileSync } from 'node:fs';
import { Dealer } from 'zeromq';
import { encodeHeader, decodeMessage } from '../src/protocol/codec.ts';
import { EngineServer } from '../src/transport/server.ts';
import { silentLogger } from '../src/log.ts';
import { RunStats } from '../src/stats/index.ts';
import { ingestStep, stepFrames } from './ingest-data.ts';

const arg = (k: string, d: number) => (process.argv.includes(k) ? Number(process.argv[process.argv.indexOf(k) + 1]) : d);
const T = arg('--tokens', 1e6);
const steps = arg('--steps', 20);
const checksum = process.argv.includes('--checksum');
const noStats = process.argv.includes('--no-stats');
const V = [1, 0];

const d = ingestStep(T, 7);
const stats = new RunStats({ worldSize: 1 });
const server = new EngineServer({
  endpoint: 'tcp://127.0.0.1:0', log: silentLogger(),
  factory: () => (noStats ? {} : { addRankStep: (x) => stats.addRankStep(x), finalizeReady: (t) => stats.finalizeReady(t) }),
});
const ep = await server.start();
const sock = new Dealer({ linger: 0, receiveTimeout: 120_000 });
sock.connect(ep);
await sock.send([encodeHeader({ type: 'hello', version: V, run_id: 'bench', rank: 0, world_size: 1, trainer: 'synthetic', mode: 'raw', checksum })]);
await sock.receive();
// CPU ticks per thread name (/proc, 10 ms resolution): main thread vs zmq I/O vs V8 helpers.
const threads = () => {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const name = tid === String(process.pid) ? 'main' : readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      out.set(name, (out.get(name) ?? 0) + Number(f[11]) + Number(f[12]));
    } catch { /* thread exited */ }
  }
  return out;
};
let th0 = threads();
const cpus: number[] = [], walls: number[] = [];
for (let s = 1; s <= steps; s++) {
  if (s === 4) th0 = threads();
  const fr = stepFrames(d, s);
  const w0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  for (const f of fr) await sock.send(f);
  const reply = decodeMessage(await sock.receive()).header as Record<string, unknown>;
  const c = process.cpuUsage(c0);
  walls.push(Number(process.hrtime.bigint() - w0) / T);
  cpus.push(((c.user + c.system) * 1000) / T);
  if (reply.type !== 'directive') throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
}
const th1 = threads();
const per = (ticks: number) => ((ticks * 1e7) / (T * (steps - 3))).toFixed(1);
console.log('threads (ns/token over the timed steps): ' + [...th1].map(([k, v]) => `${k} ${per(v - (th0.get(k) ?? 0))}`).join(', '));
sock.close();
await server.close();
const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1].toFixed(1);
console.log(`T=${T} steps=${steps} checksum=${checksum} stats=${!noStats} load ${loadavg()[0].toFixed(1)}: cpu median ${med(cpus.slice(3))} wall median ${med(walls.slice(3))} ns/token (after 3 warm-up)`);
