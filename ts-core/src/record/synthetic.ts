// Deterministic wire messages (hello + steps) of a synthetic tool-using run: post_tool tokens grow a
// heavy tail after `onset` while pre_tool stays narrow. Used by tests, the replay example and the
// screenshots, so they exercise the real codec, assembler, statistics and controller.
import { encodeHeader, encodeMessage } from '../protocol/index.ts';
import { gaussEps, mulberry32 } from '../util/prng.ts';

export interface SyntheticRun {
  runId: string;
  worldSize?: number;
  seqs?: number; // per rank per step
  seqLen?: number;
  onset?: number;
  seed?: number;
  /** Rank r's post_tool tail is (1 + rankSkew·r) times wider: per-rank attribution has something to find. */
  rankSkew?: number;
}

// Seed 0 maps to 1 (kept so existing replays stay byte-identical).
const rng = (seed: number) => mulberry32(seed >>> 0 || 1);

export function helloFrames(o: SyntheticRun, rank = 0): Buffer[] {
  return [encodeHeader({ type: 'hello', version: [1, 0], run_id: o.runId, rank, world_size: o.worldSize ?? 1, trainer: 'synthetic', mode: 'raw', config: { beta: 0.04, num_iterations: 2 }, client: { name: 'synthetic', version: '0' } })];
}

/** One rank's step message: each sequence has a tool call part-way through (tool_mask 0 span). */
export function stepFrames(o: SyntheticRun, step: number, rank = 0): Buffer[] {
  const seqs = o.seqs ?? 16, len = o.seqLen ?? 64, onset = o.onset ?? 10;
  const r = rng((o.seed ?? 1) * 100003 + step * 31 + rank);
  const T = seqs * len;
  const ref = new Float32Array(T), old = new Float32Array(T);
  const cm = new Uint8Array(T).fill(1), tm = new Uint8Array(T).fill(1);
  const offsets = new Int32Array(seqs + 1);
  const growth = Math.max(0, step - onset) / 8;
  const skew = 1 + (o.rankSkew ?? 0) * rank;
  for (let s = 0; s < seqs; s++) {
    offsets[s + 1] = (s + 1) * len;
    const toolAt = s * len + Math.floor(len * (0.25 + 0.3 * r()));
    const toolEnd = toolAt + 6;
    for (let t = s * len; t < (s + 1) * len; t++) {
      const g = gaussEps(r);
      if (t >= toolAt && t < toolEnd) tm[t] = 0;
      const post = t >= toolEnd;
      const wide = post && r() < 0.02 + 0.04 * growth;
      ref[t] = post ? (wide ? 0.35 * (1 + growth) * skew : 0.06) * g : 0.04 * g;
      old[t] = ref[t] * 0.3;
    }
    if (s === seqs - 1) for (let t = s * len + len - 4; t < (s + 1) * len; t++) cm[t] = 0; // padding
  }
  return encodeMessage(
    {
      type: 'step', version: [1, 0], run_id: o.runId, rank, world_size: o.worldSize ?? 1, step,
      chunk: { index: 0, count: 1 }, tokens: T, n_seqs: seqs, implicit: [],
      knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28 },
      logs: { loss: 0.4 / Math.sqrt(step) + 0.02, reward: 1 - 0.7 / Math.sqrt(step), kl: 0.001 * step },
      sent_at: 1_700_000_000 + step,
    },
    { policy_vs_ref: ref, policy_vs_old: old, completion_mask: cm, tool_mask: tm, offsets },
  );
}
