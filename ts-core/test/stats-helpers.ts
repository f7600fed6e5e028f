// Synthetic steps and an exact (sort + float64) reference for the stats tests and the benchmark.
import type { PairName, StepData } from '../src/types.ts';
import { mulberry32 } from '../src/util/prng.ts';

export function normal(rng: () => number): () => number {
  return () => {
    const u = Math.max(rng(), 1e-300), v = rng();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** Scaled Student-t with 3 d.o.f. */
export function studentT3(rng: () => number, scale: number): () => number {
  const z = normal(rng);
  return () => {
    const a = z(), b = z(), c = z(), d = z();
    return (scale * a) / Math.sqrt((b * b + c * c + d * d) / 3);
  };
}

/** 97% N(0, s), 3% N(0, 20 s), plus rare shifted outliers. */
export function contaminated(rng: () => number, s: number): () => number {
  const z = normal(rng);
  return () => {
    const u = rng();
    return u < 0.97 ? s * z() : u < 0.999 ? 20 * s * z() : 3 + 2 * rng();
  };
}

export interface SynthOpts {
  tokens: number;
  seed: number;
  /** Share of model tokens after the first tool output, roughly. */
  alpha: number;
  gen?: (rng: () => number) => () => number;
  pairs?: PairName[];
  rank?: number;
  worldSize?: number;
  step?: number;
}

/** A step of whole sequences: [pre-tool model tokens][tool output][post-tool model tokens][padding]. */
export function synthStep(o: SynthOpts): StepData {
  const rng = mulberry32(o.seed);
  const T = o.tokens;
  const cm = new Uint8Array(T), tm = new Uint8Array(T);
  const offs: number[] = [0];
  let t = 0;
  while (t < T) {
    const len = Math.min(T - t, 64 + Math.floor(rng() * 400));
    const pad = Math.floor(rng() * 8);
    const body = Math.max(0, len - pad);
    const hasTool = rng() < Math.min(1, o.alpha * 1.6);
    const pre = hasTool ? Math.floor(body * (1 - Math.min(0.95, o.alpha / Math.min(1, o.alpha * 1.6) + 0.05))) : body;
    const tool = hasTool ? Math.min(body - pre, 8 + Math.floor(rng() * 24)) : 0;
    for (let i = 0; i < body; i++) {
      cm[t + i] = 1;
      tm[t + i] = i >= pre && i < pre + tool ? 0 : 1;
    }
    t += len;
    offs.push(t);
  }
  const pairs: Partial<Record<PairName, Float32Array>> = {};
  for (const [k, p] of (o.pairs ?? ['policy_vs_ref']).entries()) {
    const g = (o.gen ?? ((r) => studentT3(r, 0.05)))(mulberry32(o.seed * 31 + k + 7));
    const a = new Float32Array(T);
    for (let i = 0; i < T; i++) a[i] = g();
    pairs[p] = a;
  }
  return {
    runId: 'test', rank: o.rank ?? 0, worldSize: o.worldSize ?? 1, step: o.step ?? 1, trainer: 'synthetic',
    pairs, implicit: [], completionMask: cm, toolMask: tm, offsets: Int32Array.from(offs),
    knobs: { epsilon_low: 0.2, epsilon_high: 0.28 }, logs: {}, receivedAt: 0,
  };
}

/** Split a step into `k` rank steps of whole sequences (contiguous blocks). */
export function splitRanks(d: StepData, k: number): StepData[] {
  const n = d.offsets.length - 1;
  const out: StepData[] = [];
  for (let r = 0; r < k; r++) {
    const s0 = Math.floor((r * n) / k), s1 = Math.floor(((r + 1) * n) / k);
    const a = d.offsets[s0], b = d.offsets[s1];
    const pairs: StepData['pairs'] = {};
    for (const [p, v] of Object.entries(d.pairs)) pairs[p as PairName] = v!.slice(a, b);
    out.push({
      ...d, rank: r, worldSize: k, pairs, completionMask: d.completionMask.slice(a, b), toolMask: d.toolMask.slice(a, b),
      offsets: Int32Array.from(d.offsets.subarray(s0, s1 + 1), (x) => x - a),
    });
  }
  return out;
}

/** Per-token slice of a step, computed the obvious way: 0 pre, 1 post, 2 tool, 3 none. */
export function refLabels(d: StepData): Uint8Array {
  const lab = new Uint8Array(d.completionMask.length).fill(3);
  for (let s = 0; s + 1 < d.offsets.length; s++) {
    let seen = false;
    for (let t = d.offsets[s]; t < d.offsets[s + 1]; t++) {
      if (!d.completionMask[t]) continue;
      if (!d.toolMask[t]) (seen = true), (lab[t] = 2);
      else lab[t] = seen ? 1 : 0;
    }
  }
  return lab;
}

/** log Σ exp(x), shifted by the max. */
export function lse(xs: number[]): number {
  let mx = -Infinity;
  for (const x of xs) if (x > mx) mx = x;
  let s = 0;
  for (const x of xs) s += Math.exp(x - mx);
  return mx + Math.log(s);
}

/** Exact reference for one slice of one pair (codes: which labels belong to the slice). */
export function reference(d: StepData, pair: PairName, codes: number[], eps = { lo: 0.2, hi: 0.28 }) {
  const lab = refLabels(d);
  const x = d.pairs[pair]!;
  const vals: number[] = [];
  let nonfinite = 0;
  const seqL: number[] = [], seqN: number[] = [];
  for (let s = 0; s + 1 < d.offsets.length; s++) {
    let L = 0, c = 0;
    for (let t = d.offsets[s]; t < d.offsets[s + 1]; t++) {
      if (!codes.includes(lab[t])) continue;
      if (!Number.isFinite(x[t])) { nonfinite++; continue; }
      vals.push(x[t]); L += x[t]; c++;
    }
    if (c > 0) (seqL.push(L), seqN.push(c));
  }
  const n = vals.length;
  const abs = Float64Array.from(vals, Math.abs).sort();
  const quant = (p: number) => {
    const h = p * (n - 1), lo = Math.floor(h), hi = Math.min(lo + 1, n - 1);
    return abs[lo] + (h - lo) * (abs[hi] - abs[lo]);
  };
  let sum = 0, sq = 0, k3 = 0, clip = 0;
  for (const v of vals) {
    sum += v; sq += v * v; k3 += Math.expm1(v) - v;
    const w = Math.exp(v);
    if (w < 1 - eps.lo || w > 1 + eps.hi) clip++;
  }
  const essOf = (xs: number[]) => Math.exp(2 * lse(xs) - lse(xs.map((v) => 2 * v)) - Math.log(xs.length));
  return {
    n, nonfinite, abs, quant, mean: sum / n,
    ess: essOf(vals), ess_seq: essOf(seqL), ess_seq_norm: essOf(seqL.map((l, i) => l / seqN[i])),
    chi2: Math.expm1(lse(vals.map((v) => 2 * v)) - Math.log(n)),
    kl_k2: sq / (2 * n), kl_k3: k3 / n, clip_frac: clip / n,
    exceed: [1.5, 2, 3].map((c) => vals.filter((v) => Math.abs(v) > Math.log(c)).length / n),
    abs_max: n ? abs[n - 1] : NaN,
  };
}
