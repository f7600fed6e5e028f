// Why the engine keeps no t-digest (`npx tsx ts-core/bench/run-quantiles.ts`; docs/architecture.md "Dependencies").
// One synthetic heavy-tailed run (Student-t3 ℓ, drifting scale); for each slice, run-level quantiles of |ℓ| from
// (a) `tdigest` fed every value (the best a digest can do; the engine used to feed it coarser histogram groups),
// (b) a run-level bit histogram (the sum of the per-step histograms the engine builds anyway), against
// (c) the exact order statistics of every value (numpy "linear" ranks).
import tdigestPkg from 'tdigest';
import { HIST_BINS, binOf, histQuantile } from '../src/stats/hist.ts';
import { mulberry32 } from '../src/util/prng.ts';
import { refLabels, studentT3, synthStep } from '../test/stats-helpers.ts';

const { TDigest } = tdigestPkg as { TDigest: new (delta?: number, K?: number, CX?: number) => { push(x: number): void; compress(): void; percentile(p: number): number } };
const STEPS = 200, TOKENS = 20_000;
const PS = [0.5, 0.9, 0.99, 0.999];
const SLICES = { all: [0, 1], pre_tool: [0], post_tool: [1] } as const;

Math.random = mulberry32(7); // tdigest's compress() shuffles with Math.random: seeded for a reproducible table
const exact: Record<string, number[]> = {}, hist: Record<string, Float64Array> = {}, max: Record<string, number> = {};
const td: Record<string, InstanceType<typeof TDigest>> = {};
const ns = { digest: 0, hist: 0 };
for (const s of Object.keys(SLICES)) (exact[s] = []), (hist[s] = new Float64Array(HIST_BINS)), (max[s] = 0), (td[s] = new TDigest(0.01, 25, 1.1));
for (let step = 1; step <= STEPS; step++) {
  const d = synthStep({ tokens: TOKENS, seed: step, step, alpha: 0.3, gen: (r) => studentT3(r, 0.05 * (1 + step / STEPS)) });
  const lab = refLabels(d), x = d.pairs.policy_vs_ref!;
  for (const [s, codes] of Object.entries(SLICES)) {
    const vals: number[] = [];
    for (let t = 0; t < x.length; t++) if ((codes as readonly number[]).includes(lab[t]) && Number.isFinite(x[t])) vals.push(Math.abs(x[t]));
    exact[s].push(...vals);
    let t0 = process.hrtime.bigint();
    for (const a of vals) td[s].push(a);
    ns.digest += Number(process.hrtime.bigint() - t0);
    t0 = process.hrtime.bigint();
    const h = hist[s];
    for (const a of vals) (h[binOf(a)] += 1), a > max[s] && (max[s] = a);
    ns.hist += Number(process.hrtime.bigint() - t0);
  }
}

const rel = (a: number, b: number) => Math.abs(a - b) / b;
const n = Object.values(exact).reduce((s, v) => s + v.length, 0);
console.log(`${STEPS} steps × ${TOKENS} tokens (Student-t3), relative error of run-level |ℓ| quantiles against the exact values`);
console.log('| slice | p | exact | t-digest | error | run histogram | error |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
const worst = { digest: 0, hist: 0 };
for (const s of Object.keys(SLICES)) {
  const v = Float64Array.from(exact[s]).sort();
  td[s].compress();
  for (const p of PS) {
    const h = p * (v.length - 1), lo = Math.floor(h);
    const ex = v[lo] + (h - lo) * (v[Math.min(lo + 1, v.length - 1)] - v[lo]);
    const dq = td[s].percentile(p), hq = histQuantile(hist[s], p, max[s]);
    worst.digest = Math.max(worst.digest, rel(dq, ex));
    worst.hist = Math.max(worst.hist, rel(hq, ex));
    console.log(`| ${s} | ${p} | ${ex.toPrecision(5)} | ${dq.toPrecision(5)} | ${(100 * rel(dq, ex)).toFixed(2)}% | ${hq.toPrecision(5)} | ${(100 * rel(hq, ex)).toFixed(3)}% |`);
  }
}
console.log(`worst relative error: t-digest ${(100 * worst.digest).toFixed(2)}%, run histogram ${(100 * worst.hist).toFixed(3)}%`);
console.log(`cost per value: t-digest push ${(ns.digest / n).toFixed(0)} ns, histogram bin ${(ns.hist / n).toFixed(0)} ns (ratio ${(ns.digest / ns.hist).toFixed(0)}×)`);
