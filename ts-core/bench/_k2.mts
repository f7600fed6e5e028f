import { productStep } from './product.ts';
import { kernelRuns, foldHist, type Cand } from '../src/stats/kernel.ts';
import { stage, kernelStaged, WASM_KERNEL } from '../src/stats/kernel-wasm.ts';
import { HIST_BINS, binOf } from '../src/stats/hist.ts';
import { emptySums } from '../src/stats/sums.ts';
const T = 1e6, d = productStep(T);
const x = d.pairs.policy_vs_ref!; x[5] = NaN; x[77] = Infinity; x[1000] = 7.5; x[1001] = -12; x[999] = 1e-30;
const bits = new Int32Array(x.buffer);
const nS = 1000, runs = new Int32Array(4 * 3 * nS); let n = 0;
for (let s = 0; s < nS; s++) { const a = d.offsets[s], b = d.offsets[s + 1], m1 = a + ((b - a) * 0.45 | 0) + (s % 3), m2 = m1 + 20; for (const [p, q, c] of [[a, m1, 0], [m1, m2, 2], [m2, b, 1]]) { runs.set([p, q, c, s], 4 * n++); } }
const R = { runs, n };
const band = { bins: Int32Array.from([binOf(0.01), binOf(0.02), binOf(0.1)]), bits: Uint8Array.from([1 | 8, 2, 15]), n: 3 };
function run(wasm: boolean) {
  const out = [] as any[];
  for (let c = 0; c < 3; c++) {
    const sh = new Uint32Array(HIST_BINS), sums = emptySums(), L = new Float64Array(3 * nS), C = new Float64Array(3 * nS);
    const cand: Cand = { vals: new Float32Array(T), tags: new Uint8Array(T), n: 0 };
    if (wasm) { stage(x, R); kernelStaged(x, R, c, sh, sums, Math.log(0.8), Math.log(1.28), L, C, c * nS, band, cand); }
    else kernelRuns(x, bits, R, c, sh, sums, Math.log(0.8), Math.log(1.28), L, C, c * nS, band, cand);
    const hist = new Float64Array(HIST_BINS); foldHist(sh, hist, sums, Math.log(1.28));
    out.push({ sums, hist, L, C, cand: [...cand.vals.subarray(0, cand.n)].map((v, i) => v * 16 + cand.tags[i]).sort((a, b) => a - b) });
  }
  return out;
}
console.log('wasm', WASM_KERNEL);
const A = run(false), B = run(true);
for (let c = 0; c < 3; c++) {
  const a = A[c], b = B[c];
  const rel = [...a.sums].map((v: number, i: number) => (v === b.sums[i] ? 0 : Math.abs(v / b.sums[i] - 1)));
  console.log(c, 'sums rel', rel.map((r) => r.toExponential(1)).join(' '));
  console.log('  hist eq', a.hist.every((v: number, i: number) => v === b.hist[i]), 'cand eq', a.cand.length, b.cand.length, a.cand.every((v: number, i: number) => v === b.cand[i]), 'C eq', a.C.every((v: number, i: number) => v === b.C[i]), 'L maxrel', Math.max(...a.L.map((v: number, i: number) => v === b.L[i] ? 0 : Math.abs(v - b.L[i]) / Math.abs(v))));
}
for (const wasm of [false, true]) for (let rep = 0; rep < 8; rep++) {
  const sh = new Uint32Array(HIST_BINS), sums = emptySums(), L = new Float64Array(3 * nS), C = new Float64Array(3 * nS);
  const cand: Cand = { vals: new Float32Array(T), tags: new Uint8Array(T), n: 0 };
  const t0 = process.cpuUsage();
  if (wasm) stage(x, R);
  for (let c = 0; c < 3; c++) wasm ? kernelStaged(x, R, c, sh, sums, Math.log(0.8), Math.log(1.28), L, C, c * nS, band, cand) : kernelRuns(x, bits, R, c, sh, sums, Math.log(0.8), Math.log(1.28), L, C, c * nS, band, cand);
  const u = process.cpuUsage(t0);
  if (rep > 4) console.log(wasm ? 'wasm' : 'js', 'ns/token', ((u.user + u.system) * 1000 / T).toFixed(2), 'cand', cand.n);
}
