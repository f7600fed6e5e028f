// Synthetic ingest workload for the benchmark: ~30% post-tool model tokens, Student-t ℓ,
// split into chunks of whole sequences that fit the 4 MiB frame limit.
import { readFileSync } from 'node:fs';
import type { StepData } from '../src/types.ts';
import { encodeMessage } from '../src/protocol/codec.ts';
import { mulberry32 } from '../src/util/prng.ts';

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

/** The step as the wire messages a client sends: chunks of whole sequences (≤ maxChunk tokens). */
export function stepFrames(d: StepData, step: number, maxChunk = 1_000_000, rank = 0, worldSize = 1): Buffer[][] {
  const ranges = chunkRanges(d.offsets, maxChunk);
  return ranges.map(([s0, s1], index) => {
    const a = d.offsets[s0], b = d.offsets[s1];
    const offsets = Int32Array.from(d.offsets.subarray(s0, s1 + 1), (o) => o - a);
    return encodeMessage(
      { type: 'step', version: [1, 0], run_id: 'bench', rank, world_size: worldSize, step, chunk: { index, count: ranges.length }, tokens: b - a, n_seqs: s1 - s0, knobs: d.knobs, logs: {}, implicit: [] },
      { policy_vs_ref: d.pairs.policy_vs_ref!.subarray(a, b), completion_mask: d.completionMask.subarray(a, b), tool_mask: d.toolMask.subarray(a, b), offsets },
    );
  });
}

/** CPU clock ticks (user + system, 10 ms each) of this process's main thread, from /proc; 0 where there is none. */
export function mainThreadTicks(): number {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}
