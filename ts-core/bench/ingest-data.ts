// Synthetic ingest workload for the benchmark: ~30% post-tool model tokens, Student-t ℓ,
// split into chunks of whole sequences that fit the 4 MiB frame limit.
import type { StepData } from '../src/types.ts';
import { mulberry32 } from '../src/stats/digest.ts';

export function ingestStep(T: number, seed = 1): StepData {
  const rng = mulberry32(seed);
  const cm = new Uint8Array(T), tm = new Uint8Array(T), x = new Float32Array(T);
  const offs: number[] = [0];
  let t = 0;
  while (t < T) {
    const len = Math.min(T - t, 200 + Math.floor(rng() * 400));
    const hasTool = rng() < 0.6;
    const pre = hasTool ? Math.floor(len * 0.45) : len;
    const tool = hasTool ? Math.min(len - pre, 20) : 0;
    for (let i = 0; i < len; i++) {
      cm[t + i] = i < len - 2 ? 1 : 0;
      tm[t + i] = i >= pre && i < pre + tool ? 0 : 1;
    }
    t += len;
    offs.push(t);
  }
  // Student-t-ish tails without per-value Math.* cost in setup: ratio of uniforms
  for (let i = 0; i < T; i++) {
    const u = rng() - 0.5, v = rng() + 1e-3;
    x[i] = (0.05 * u) / Math.sqrt(v);
  }
  return {
    runId: 'bench', rank: 0, worldSize: 1, step: 1, trainer: 'synthetic', pairs: { policy_vs_ref: x }, implicit: [],
    completionMask: cm, toolMask: tm, offsets: Int32Array.from(offs), knobs: { epsilon_low: 0.2, epsilon_high: 0.2 }, logs: {}, receivedAt: 0,
  };
}

/** Sequence ranges [s0, s1) per chunk with at most maxTokens tokens each. */
export function chunkRanges(offsets: Int32Array, maxTokens: number): [number, number][] {
  const out: [number, number][] = [];
  const n = offsets.length - 1;
  let s0 = 0;
  for (let s = 1; s <= n; s++) {
    if (offsets[s] - offsets[s0] > maxTokens) {
      out.push([s0, s - 1]);
      s0 = s - 1;
    }
  }
  if (s0 < n) out.push([s0, n]);
  return out;
}
