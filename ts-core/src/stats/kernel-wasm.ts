// kernelRuns on WebAssembly SIMD (source: ts-core/wasm/kernel.ts, built by `npm run build:wasm` into
// kernel.wasm beside this file). Same inputs and outputs as kernel.ts's kernelRuns, in two calls:
// stage() copies one pair's values and the chunk's runs into the module's memory (one bulk copy per
// pair and chunk), then kernelStaged() runs one slice code over them. Falls back to the JS kernel where
// WebAssembly SIMD is missing, or with TAILGUARD_KERNEL=js (the tests run both and compare).
import { readFileSync } from 'node:fs';
import { HIST_BINS } from './hist.ts';
import { BAND_ALL, ETAB, FAST_LIMIT, T15, T2, T3, binAt, slowExpSums, type Band, type Cand, type Runs } from './kernel.ts';
import {
  S_ABS_MAX, S_CLIP, S_EXCEED_1_5, S_EXCEED_2, S_EXCEED_3, S_LSE_MAX, S_N, S_NONFINITE, S_SUM, S_SUM_ABS, S_SUM_K3, S_SUM_SQ, lseAdd,
} from './sums.ts';

type KernelFn = (
  xp: number, runsp: number, nRuns: number, code: number, sh: number, flag: number, etab: number, seqOut: number,
  cv: number, ct: number, out: number, clipLo: number, clipHi: number, t15: number, t2: number, t3: number,
  b15: number, b2: number, b3: number, bLo: number, bHi: number,
) => number;

// Fixed regions (bytes), then the per-chunk ones sized by stage().
const P_ETAB = 1024, P_FLAG = P_ETAB + ETAB.byteLength, P_SH = P_FLAG + ((HIST_BINS + 15) & ~15);
const P_OUT = P_SH + 4 * ((HIST_BINS + 3) & ~3), P_DYN = P_OUT + 256;
const PAGE = 65536;

let fn: KernelFn | null = null;
let mem: WebAssembly.Memory | null = null;
let u8 = new Uint8Array(0), f32 = new Float32Array(0), i32 = new Int32Array(0), u32 = new Uint32Array(0), f64 = new Float64Array(0);
// staged chunk: x at P_DYN, runs, per-run outputs, candidates
let pX = 0, pRuns = 0, pSeq = 0, pCv = 0, pCt = 0, stagedT = -1, stagedRuns = 0;

function views(): void {
  const b = mem!.buffer;
  (u8 = new Uint8Array(b)), (f32 = new Float32Array(b)), (i32 = new Int32Array(b)), (u32 = new Uint32Array(b)), (f64 = new Float64Array(b));
}

function load(): boolean {
  if (process.env.TAILGUARD_KERNEL === 'js') return false;
  try {
    const bytes = readFileSync(new URL('./kernel.wasm', import.meta.url));
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    mem = inst.exports.memory as WebAssembly.Memory;
    fn = inst.exports.kernel as KernelFn;
    mem.grow(Math.ceil(P_DYN / PAGE) + 1);
    views();
    f64.set(ETAB, P_ETAB / 8);
    return true;
  } catch {
    return false; // no WebAssembly SIMD here: the JS kernel runs
  }
}

/** True when the WebAssembly kernel is in use (false: kernel.ts's JS loop). */
export const WASM_KERNEL = load();

/** Copy x (T values) and the runs into the module; needed before kernelStaged. */
export function stage(x: Float32Array, R: Runs): void {
  const T = x.length, nr = R.n;
  pRuns = P_DYN;
  pSeq = pRuns + 16 * nr;
  pX = pSeq + 16 * nr;
  pCv = pX + 4 * T + 16;
  pCt = pCv + 4 * T;
  const need = pCt + T + 64;
  if (need > mem!.buffer.byteLength) {
    mem!.grow(Math.ceil((need - mem!.buffer.byteLength) / PAGE) + 16);
    views();
  }
  f32.set(x, pX / 4);
  i32.set(R.runs.subarray(0, 4 * nr), pRuns / 4);
  stagedT = T;
  stagedRuns = nr;
}

/** kernelRuns (kernel.ts) over the staged values: same arguments except x/bits/R, same effects. */
export function kernelStaged(
  x: Float32Array, R: Runs, code: number, sh: Uint32Array, sums: Float64Array, clipLo: number, clipHi: number,
  seqL: Float64Array, seqC: Float64Array, seqBase: number, band: Band | null = null, cand: Cand | null = null,
): number {
  if (stagedT !== x.length || stagedRuns !== R.n) throw new Error('kernelStaged: stage() this chunk first');
  const b15 = binAt(T15), b2 = binAt(T2), b3 = binAt(T3);
  const bLo = clipLo === -Infinity ? HIST_BINS : binAt(-clipLo), bHi = binAt(clipHi);
  const F = P_FLAG;
  u8[F + b15] = u8[F + b2] = u8[F + b3] = u8[F + bHi] = 1;
  if (bLo < HIST_BINS) u8[F + bLo] = 1;
  if (band && cand) {
    const own = 1 << code, all = code < 2 ? BAND_ALL : 0;
    for (let i = 0; i < band.n; i++) {
      const bb = band.bits[i];
      u8[F + band.bins[i]] |= (bb & own ? 2 : 0) | (bb & all ? 4 : 0);
    }
  }
  const n = fn!(pX, pRuns, R.n, code, P_SH, P_FLAG, P_ETAB, pSeq, pCv, pCt, P_OUT, clipLo, clipHi, T15, T2, T3, b15, b2, b3, bLo, bHi);
  u8[F + b15] = u8[F + b2] = u8[F + b3] = u8[F + bHi] = 0;
  if (bLo < HIST_BINS) u8[F + bLo] = 0;
  if (band) for (let i = 0; i < band.n; i++) u8[F + band.bins[i]] = 0;
  // histogram counts: add into the slice's and zero the module's
  const S = P_SH / 4;
  for (let b = 0; b < HIST_BINS; b++) {
    const c = u32[S + b];
    if (c !== 0) (sh[b] += c), (u32[S + b] = 0);
  }
  const o = P_OUT / 8;
  if (cand) {
    const cn = f64[o + 15];
    if (cn > 0) {
      if (cand.vals.length < cand.n + cn) throw new Error('kernelStaged: candidate buffer too small');
      cand.vals.set(f32.subarray(pCv / 4, pCv / 4 + cn), cand.n);
      cand.tags.set(u8.subarray(pCt, pCt + cn), cand.n);
      cand.n += cn;
    }
  }
  const runs = R.runs, sq = pSeq / 8;
  for (let ri = 0; ri < R.n; ri++) {
    if (runs[4 * ri + 2] !== code) continue;
    const s = seqBase + runs[4 * ri + 3];
    seqL[s] += f64[sq + 2 * ri];
    seqC[s] += f64[sq + 2 * ri + 1];
  }
  sums[S_NONFINITE] += f64[o + 1];
  if (n === 0) return 0;
  sums[S_N] += n;
  sums[S_SUM] += f64[o + 2];
  sums[S_SUM_ABS] += f64[o + 3];
  sums[S_SUM_SQ] += f64[o + 4];
  sums[S_SUM_K3] += f64[o + 5];
  sums[S_EXCEED_1_5] += f64[o + 6];
  sums[S_EXCEED_2] += f64[o + 7];
  sums[S_EXCEED_3] += f64[o + 8];
  sums[S_CLIP] += f64[o + 9] + f64[o + 10] - f64[o + 11];
  const amax = f64[o + 12];
  if (amax > sums[S_ABS_MAX]) sums[S_ABS_MAX] = amax;
  if (amax <= FAST_LIMIT) lseAdd(sums, S_LSE_MAX, 0, n + f64[o + 13], n + f64[o + 14]);
  else slowExpSums(sums, x, R, code);
  return n;
}
