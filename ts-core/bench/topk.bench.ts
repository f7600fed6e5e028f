// Cost of the forensics top-k (stats/topk.ts) inside RunStats: ns/token of addRankStep + finalize with
// topK = 8 (the default) against topK = 0, interleaved in one process on the same steps (CPU time of
// this process). Run: `npx tsx ts-core/bench/topk.bench.ts [--tokens N] [--steps N]`.
import { RunStats } from '../src/stats/index.ts';
import { ingestStep } from './ingest-data.ts';

const arg = (k: string, d: number) => (process.argv.includes(k) ? Number(process.argv[process.argv.indexOf(k) + 1]) : d);
const T = arg('--tokens', 1_000_000), steps = arg('--steps', 12);
const d = ingestStep(T, 1);
d.tokenIds = Int32Array.from({ length: T }, (_, i) => i % 50_000);
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
};
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const make = (k: number) => new RunStats({ worldSize: 1, topK: k });
const runs = { off: make(0), on: make(8) };
const ns: Record<string, number[]> = { off: [], on: [] };
for (let s = 1; s <= steps + 2; s++) {
  for (const key of (s % 2 ? ['off', 'on'] : ['on', 'off']) as ('off' | 'on')[]) {
    const c0 = cpu();
    runs[key].addRankStep({ ...d, step: s });
    runs[key].finalizeReady(Infinity);
    if (s > 2) ns[key].push((cpu() - c0) / T);
  }
}
const off = median(ns.off), on = median(ns.on);
console.log(`top-k forensics, ${T} tokens/step (~30% post_tool, 2 pairs), median of ${steps} steps, CPU ns/token`);
console.log(`  topK=0 ${off.toFixed(2)}   topK=8 ${on.toFixed(2)}   ratio ${(on / off).toFixed(3)}   (+${(on - off).toFixed(2)} ns/token)`);
