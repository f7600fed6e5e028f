// χ², ESS and KL k3 near ℓ = 0: the kernel's sums against references computed value by value with
// Math.exp / Math.expm1 and compensated sums. χ² within 1e-6 relative down to |ℓ| ~ 1e-8 (the old
// Σe^2ℓ form lost ~5e-5 there), ESS and k3 within 1e-9.
import { describe, expect, it } from 'vitest';
import { kernelRuns } from '../src/stats/kernel.ts';
import { kernelStaged, stage } from '../src/stats/kernel-wasm.ts';
import { HIST_BINS } from '../src/stats/hist.ts';
import { emptySums, metricsFromSums, mergeSums } from '../src/stats/sums.ts';
import { gauss, mulberry32 } from '../bench/synthetic.ts';

/** Neumaier-compensated Σ f(x[i]). */
function csum(x: Float32Array, f: (v: number) => number): number {
  let s = 0, c = 0;
  for (let i = 0; i < x.length; i++) {
    const v = f(x[i]), t = s + v;
    c += Math.abs(s) >= Math.abs(v) ? s - t + v : v - t + s;
    s = t;
  }
  return s + c;
}

function kernelSums(x: Float32Array, parts: number, wasm: boolean): Float64Array {
  const total = emptySums();
  const step = Math.ceil(x.length / parts);
  for (let a = 0; a < x.length; a += step) {
    const s = emptySums(), b = Math.min(x.length, a + step);
    const R = { runs: Int32Array.from([a, b, 0, 0]), n: 1 }, sh = new Uint32Array(HIST_BINS), L = new Float64Array(1), C = new Float64Array(1);
    if (wasm) {
      stage(x, R);
      kernelStaged(x, R, 0, sh, s, -Infinity, 0.2, L, C, 0);
    } else kernelRuns(x, new Int32Array(x.buffer), R, 0, sh, s, -Infinity, 0.2, L, C, 0);
    mergeSums(total, s);
  }
  return total;
}

describe('precision near ℓ = 0', () => {
  for (const scale of [1e-8, 1e-7, 1e-6, 1e-4, 1e-2, 0.5, 2]) {
    it(`χ², ESS, k3 at |ℓ| ~ ${scale}`, () => {
      const N = 200_000, r = mulberry32(11), x = new Float32Array(N);
      for (let i = 0; i < N; i++) x[i] = scale * (gauss(r) + 0.3);
      for (const [parts, wasm] of [[1, false], [7, false], [1, true], [7, true]] as const) {
        const m = metricsFromSums(kernelSums(x, parts, wasm));
        const chi2 = csum(x, (v) => Math.expm1(2 * v)) / N;
        const s1 = csum(x, Math.exp), s2 = csum(x, (v) => Math.exp(2 * v));
        const k3 = csum(x, (v) => Math.expm1(v) - v) / N;
        expect(Math.abs(m.chi2 / chi2 - 1)).toBeLessThan(1e-6);
        expect(Math.abs(m.ess / ((s1 * s1) / s2 / N) - 1)).toBeLessThan(1e-9);
        expect(Math.abs(m.kl_k3 / k3 - 1)).toBeLessThan(1e-9);
      }
    });
  }
});
