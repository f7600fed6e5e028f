// Synthetic step streams for detection tests and the detection-quality study: seeded per-token
// log-ratios with pre_tool / tool_output / post_tool structure, as StepData, run through the
// engine's real statistics (RunStats). Scenarios change one thing at a time.
import { RunStats } from '../src/stats/index.ts';
import type { PairName, StepData, StepResult } from '../src/types.ts';

import { gauss, mulberry32 } from '../src/util/prng.ts';

export { gauss, mulberry32 }; // fuzz.ts and load.ts import them from here

/** Distribution of ℓ in one slice: a contaminated normal (bulk σ, a fraction `tail` at `tailScale`·σ). */
export interface SliceLaw {
  sigma: number;
  tail: number;
  tailScale: number;
  /** Mean shift of ℓ (a drift of the centre). */
  shift?: number;
}

export interface StepLaw {
  alpha: number;
  pairs: Partial<Record<PairName, { pre: SliceLaw; post: SliceLaw }>>;
  /** rank -> multiplier of every post_tool ℓ on that rank. */
  rankScale?: Record<number, number>;
  /** Put one NaN into the first post_tool token of rank 0. */
  nan?: boolean;
}

export const SCENARIOS = ['healthy', 'tail_growth', 'benign_drift', 'alpha_ramp', 'mismatch_growth', 'rank_outlier', 'nonfinite'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

const PRE: SliceLaw = { sigma: 0.05, tail: 0.02, tailScale: 4 };
const POST: SliceLaw = { sigma: 0.08, tail: 0.02, tailScale: 4 };
const ROLL: SliceLaw = { sigma: 0.01, tail: 0.02, tailScale: 4 };

/**
 * The law at `step` of a scenario whose change begins at `onset`:
 * - healthy: stationary, α = 0.3.
 * - tail_growth: policy_vs_ref post_tool tail (fraction and scale) grows ~3%/step from onset; pre_tool flat.
 * - benign_drift: every slice's scale grows 0.15%/step from step 0 (the shape is unchanged).
 * - alpha_ramp: α rises 0.3 → 0.8 at 0.005/step from onset; each slice's law unchanged.
 * - mismatch_growth: old_vs_rollout post_tool scale grows 3%/step from onset.
 * - rank_outlier: rank 1's post_tool ℓ 4× from onset (world size 2).
 * - nonfinite: one NaN at `onset`.
 */
export function lawAt(name: ScenarioName, step: number, onset: number): StepLaw {
  const after = Math.max(0, step - onset);
  const law: StepLaw = { alpha: 0.3, pairs: { policy_vs_ref: { pre: { ...PRE }, post: { ...POST } }, old_vs_rollout: { pre: { ...ROLL }, post: { ...ROLL } } } };
  const ref = law.pairs.policy_vs_ref!;
  if (name === 'tail_growth' && after > 0) {
    const g = Math.exp(0.03 * after);
    ref.post.tail = Math.min(0.2, POST.tail * g);
    ref.post.tailScale = POST.tailScale * g;
  } else if (name === 'benign_drift') {
    const g = 1 + 0.0015 * step;
    for (const p of Object.values(law.pairs)) for (const s of [p!.pre, p!.post]) s.sigma *= g;
  } else if (name === 'alpha_ramp') {
    law.alpha = Math.min(0.8, 0.3 + 0.005 * after);
  } else if (name === 'mismatch_growth' && after > 0) {
    law.pairs.old_vs_rollout!.post.sigma = ROLL.sigma * Math.exp(0.03 * after);
  } else if (name === 'rank_outlier' && after > 0) {
    law.rankScale = { 1: 4 };
  } else if (name === 'nonfinite' && step === onset) {
    law.nan = true;
  }
  return law;
}

export interface GenOptions {
  seqsPerRank: number;
  seqLen: number;
  toolLen: number;
  worldSize: number;
}

export const GEN_DEFAULTS: GenOptions = { seqsPerRank: 64, seqLen: 64, toolLen: 8, worldSize: 1 };

function draw(rng: () => number, s: SliceLaw): number {
  const sc = rng() < s.tail ? s.sigma * s.tailScale : s.sigma;
  return (s.shift ?? 0) + sc * gauss(rng);
}

/** One rank's StepData under `law`. */
export function genRankStep(rng: () => number, law: StepLaw, runId: string, step: number, rank: number, o: GenOptions = GEN_DEFAULTS): StepData {
  const T = o.seqsPerRank * o.seqLen;
  const completionMask = new Uint8Array(T).fill(1);
  const toolMask = new Uint8Array(T);
  const offsets = new Int32Array(o.seqsPerRank + 1);
  const pairs: Partial<Record<PairName, Float32Array>> = {};
  for (const p of Object.keys(law.pairs) as PairName[]) pairs[p] = new Float32Array(T);
  const model = o.seqLen - o.toolLen;
  for (let s = 0; s < o.seqsPerRank; s++) {
    offsets[s] = s * o.seqLen;
    // α per sequence varies around the target so the step α is not constant.
    const a = Math.min(0.95, Math.max(0.05, law.alpha + 0.1 * (rng() - 0.5)));
    const nPost = Math.round(a * model);
    const nPre = model - nPost;
    for (let t = 0; t < o.seqLen; t++) {
      const i = s * o.seqLen + t;
      const region = t < nPre ? 'pre' : t < nPre + o.toolLen ? 'tool' : 'post';
      toolMask[i] = region === 'tool' ? 0 : 1;
      for (const p of Object.keys(law.pairs) as PairName[]) {
        if (region === 'tool') continue; // ℓ is 0 on tool output (masked by the trainer)
        let v = draw(rng, law.pairs[p]![region]);
        if (region === 'post') v *= law.rankScale?.[rank] ?? 1;
        pairs[p]![i] = v;
      }
    }
  }
  offsets[o.seqsPerRank] = T;
  if (law.nan && rank === 0) pairs.policy_vs_ref![o.seqLen - 1] = NaN;
  return {
    runId,
    rank,
    worldSize: o.worldSize,
    step,
    trainer: 'synthetic',
    pairs,
    implicit: [],
    completionMask,
    toolMask,
    offsets,
    knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28, is_clip_max: 2.0, off_policy_mask_threshold: null },
    logs: { loss: 0.1 },
    receivedAt: 0,
  };
}

/** A stream of StepResults for a scenario, through the engine's own statistics (RunStats). */
export function* statsStream(name: ScenarioName, steps: number, onset: number, seed: number, gen: Partial<GenOptions> = {}): Generator<StepResult> {
  const o = { ...GEN_DEFAULTS, ...gen, worldSize: name === 'rank_outlier' ? 2 : (gen.worldSize ?? 1) };
  const rng = mulberry32(seed);
  const stats = new RunStats({ worldSize: o.worldSize, window: 20, runId: `synthetic-${name}` });
  for (let step = 1; step <= steps; step++) {
    const law = lawAt(name, step, onset);
    for (let r = 0; r < o.worldSize; r++) stats.addRankStep(genRankStep(rng, law, `synthetic-${name}`, step, r, o));
    yield* stats.finalizeReady(Number.MAX_SAFE_INTEGER);
  }
}
