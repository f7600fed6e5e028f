// The WebAssembly SIMD kernel (ts-core/wasm/kernel.ts → ts-core/src/stats/kernel.wasm) against the JS
// kernel it replaces: identical histograms, counts, candidates and per-sequence counts; sums equal to
// rounding (the SIMD lanes add in another order). And the shipped .wasm is what `npm run build:wasm`
// builds from the source.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kernelRuns, type Band, type Cand, type Runs } from '../src/stats/kernel.ts';
import { WASM_KERNEL, kernelStaged, stage } from '../src/stats/kernel-wasm.ts';
import { HIST_BINS, binOf } from '../src/stats/hist.ts';
import { emptySums } from '../src/stats/sums.ts';
import { gauss, mulberry32 } from '../bench/synthetic.ts';

const ROOT = join(import.meta.dirname, '..', '..');

function data(T: number, seed: number, scale: number): { x: Float32Array; R: Runs; nSeq: number } {
  const r = mulberry32(seed), x = new Float32Array(T);
  for (let i = 0; i < T; i++) x[i] = (scale * gauss(r)) / Math.sqrt(r() + 1e-3);
  const odd = [NaN, Infinity, -Infinity, 0, -0, 1e-30, 3.99, -3.99, 4, 5, -50, 299, 400, Math.log(1.5), Math.log(2), Math.log(3), Math.log(0.8), Math.log(1.28)];
  for (let k = 0; k < 200; k++) x[Math.floor(r() * T)] = odd[k % odd.length];
  const runs: number[] = [];
  let nSeq = 0;
  for (let t = 0; t < T; nSeq++) {
    const len = Math.min(T - t, 1 + Math.floor(r() * 300));
    for (let a = t; a < t + len; ) {
      const b = Math.min(t + len, a + 1 + Math.floor(r() * 60));
      runs.push(a, b, Math.floor(r() * 3), nSeq);
      a = b;
    }
    t += len;
  }
  return { x, R: { runs: Int32Array.from(runs), n: runs.length / 4 }, nSeq };
}

function both(x: Float32Array, R: Runs, nSeq: number, band: Band, clipLo: number) {
  const out = { js: [] as any[], wasm: [] as any[] };
  for (const k of ['js', 'wasm'] as const) {
    if (k === 'wasm') stage(x, R);
    for (let c = 0; c < 3; c++) {
      const sh = new Uint32Array(HIST_BINS), sums = emptySums(), L = new Float64Array(3 * nSeq), C = new Float64Array(3 * nSeq);
      const cand: Cand = { vals: new Float32Array(x.length), tags: new Uint8Array(x.length), n: 0 };
      if (k === 'js') kernelRuns(x, new Int32Array(x.buffer), R, c, sh, sums, clipLo, Math.log(1.28), L, C, c * nSeq, band, cand);
      else kernelStaged(x, R, c, sh, sums, clipLo, Math.log(1.28), L, C, c * nSeq, band, cand);
      const cv = Array.from(cand.vals.subarray(0, cand.n), (v, i) => `${v}/${cand.tags[i]}`).sort();
      out[k].push({ sh, sums, L, C, cv });
    }
  }
  return out;
}

describe('WebAssembly kernel', () => {
  it('is in use here (WebAssembly SIMD available)', () => expect(WASM_KERNEL).toBe(true));

  for (const [seed, scale] of [[1, 0.05], [2, 1e-8], [3, 2], [4, 60]] as const) {
    it(`agrees with the JS kernel (seed ${seed}, scale ${scale})`, () => {
      const { x, R, nSeq } = data(50_000, seed, scale);
      const band: Band = { bins: Int32Array.from([binOf(0.01 * scale), binOf(0.1 * scale), binOf(scale)]), bits: Uint8Array.from([1 | 8, 2, 15]), n: 3 };
      for (const clipLo of [Math.log(0.8), -Infinity]) {
        const o = both(x, R, nSeq, band, clipLo);
        for (let c = 0; c < 3; c++) {
          const a = o.js[c], b = o.wasm[c];
          expect(Array.from(b.sh)).toEqual(Array.from(a.sh));
          expect(Array.from(b.C)).toEqual(Array.from(a.C));
          expect(b.cv).toEqual(a.cv);
          for (let i = 0; i < a.sums.length; i++) {
            const u = a.sums[i], v = b.sums[i];
            if (!Number.isFinite(u) || u === 0) expect(v).toBe(u);
            else expect(Math.abs(v / u - 1)).toBeLessThan(1e-12);
          }
          for (let i = 0; i < a.L.length; i++) expect(Math.abs(b.L[i] - a.L[i])).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(a.L[i])));
        }
      }
    });
  }

  it('TAILGUARD_KERNEL=js selects the JS kernel', () => {
    const code = `import('${join(ROOT, 'ts-core/src/stats/kernel-wasm.ts')}').then((m) => process.stdout.write(String(m.WASM_KERNEL)))`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', code], { env: { ...process.env, TAILGUARD_KERNEL: 'js' }, encoding: 'utf8', cwd: ROOT });
    expect(out).toBe('false');
  });

  it('the shipped kernel.wasm is what npm run build:wasm builds', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tg-wasm-'));
    try {
      const args = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['build:wasm'].split(' ').slice(1);
      const o = args.indexOf('-o');
      args[o + 1] = join(dir, 'kernel.wasm');
      execFileSync(join(ROOT, 'node_modules/.bin/asc'), args, { cwd: ROOT });
      expect(readFileSync(join(dir, 'kernel.wasm')).equals(readFileSync(join(ROOT, 'ts-core/src/stats/kernel.wasm')))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
