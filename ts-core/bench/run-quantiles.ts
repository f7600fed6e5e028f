// Does the run-level t-digest earn its place? (`npx tsx ts-core/bench/run-quantiles.ts`)
// One synthetic heavy-tailed run (Student-t3 |ℓ|, drifting scale) through RunStats; for each slice, run-level
// quantiles of |ℓ| from (a) the engine's t-digest, (b) a run-level bit histogram (the sum of the per-step
// histograms the engine already builds), against (c) the exact order statistics of every value.
import { RunStats } from '../src/stats/index.ts';
import { HIST_BINS, binOf, histQuantile } from '../src/stats/hist.ts';
import { refLabels, studentT3, synthStep } from '../test/stats-helpers.ts';

const W = 10, STEPS = 200, TOKENS = 20_000; // STEPS a multiple of W: the digest has seen every step
const PS = [0.5, 0.9, 0.99, 0.999];
const SLICES = { all: [0, 1], pre_tool: [0], post_tool: [1] } as const;

const rs = new RunStats({ worldSize: 1, window: W });
const exact: Record<string, number[]> = {}, hist: Record<string, Float64Array> = {}, max: Record<string, number> = {};
for (const s of Object.keys(SLICES)) (exact[s] = []), (hist[s] = new Float64Array(HIST_BINS)), (max[s] = 0);
let histNs = 0;
for (let step = 1; step <= STEPS; step++) {
  const d = synthStep({ tokens: TOKENS, seed: step, step, alpha: 0.3, gen: (r) => studentT3(r, 0.05 * (1 + step / STEPS)) });
  const lab = refLabels(d), x = d.pairs.policy_vs_ref!;
  rs.addRankStep(d);
  rs.finalizeReady(Date.now());
  const t0 = process.hrtime.bigint();
  for (const [s, codes] of Object.entries(SLICES)) {
    for (let t = 0; t < x.length; t++) {
      if (!(codes as readonly number[]).includes(lab[t]) || !Number.isFinite(x[t])) continue;
      const a = Math.abs(x[t]);
      exact[s].push(a);
      hist[s][binOf(a)]++;
      if (a > max[s]) max[s] = a;
    }
  }
  histNs += Number(process.hrtime.bigint() - t0);
}

const rel = (a: number, b: number) => Math.abs(a - b) / b;
console.log(`${STEPS} steps × ${TOKENS} tokens, window ${W}; relative error of run-level |ℓ| quantiles vs exact`);
console.log('| slice | p | exact | t-digest | rel. error | run histogram | rel. error |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
const worst = { digest: 0, hist: 0 };
for (const s of Object.keys(SLICES)) {
  const v = Float64Array.from(exact[s]).sort();
  for (const p of PS) {
    const h = p * (v.length - 1), lo = Math.floor(h);
    const ex = v[lo] + (h - lo) * ((v[Math.min(lo + 1, v.length - 1)] ?? v[lo]) - v[lo]);
    const dq = rs.runQuantile('policy_vs_ref', s as 'all', p), hq = histQuantile(hist[s], p, max[s]);
    worst.digest = Math.max(worst.digest, rel(dq, ex));
    worst.hist = Math.max(worst.hist, rel(hq, ex));
    console.log(`| ${s} | ${p} | ${ex.toPrecision(5)} | ${dq.toPrecision(5)} | ${(100 * rel(dq, ex)).toFixed(2)}% | ${hq.toPrecision(5)} | ${(100 * rel(hq, ex)).toFixed(3)}% |`);
  }
}
const digestBytes = JSON.stringify((rs.snapshot() as { windows?: unknown }).windows ?? {}).length;
console.log(`worst relative error: t-digest ${(100 * worst.digest).toFixed(2)}%, run histogram ${(100 * worst.hist).toFixed(3)}%`);
console.log(`(snapshot windows incl. digests: ${digestBytes} bytes of JSON; run histogram build here: ${(histNs / 1e6).toFixed(0)} ms for 3 slices, unoptimised loop)`);
