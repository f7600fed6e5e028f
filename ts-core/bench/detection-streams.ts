// Seeded stream families for the detection benchmark (docs/detection.md): per-token log-ratios of
// two pairs (policy_vs_ref, old_vs_rollout) with pre_tool / tool_output / post_tool structure,
// generated as StepData and run through the engine's real statistics (RunStats). Each family
// changes one thing; the law of ℓ, α, tokens per rank-step and ranks vary by seed.
import { RunStats } from '../src/stats/index.ts';
import type { PairName, StepData, StepResult } from '../src/types.ts';
import { mulberry32 } from '../src/util/prng.ts';

export type Law = 'normal' | 't3' | 't4' | 't5' | 'laplace';
export const FAMILIES = ['healthy', 'weight_growth', 'tail_scale', 'benign_drift', 'alpha_ramp', 'seq_len', 'shape_wander', 'rank_outlier', 'mismatch', 'nonfinite'] as const;
export type Family = (typeof FAMILIES)[number];
/** Families on which any alarm is a false alarm. */
export const NUISANCE: Family[] = ['healthy', 'benign_drift', 'alpha_ramp', 'seq_len', 'shape_wander'];

export interface StreamSpec {
  family: Family;
  seed: number;
  steps: number;
  /** First changed step (growth families), the NaN step, the rank fault's start. */
  onset: number;
  alpha: number;
  /** Model + tool tokens per rank per step. */
  tokens: number;
  ranks: number;
  law: Law;
  /** weight_growth / mismatch: pp/step of the 10× component; tail_scale / benign_drift: %/step; rank_outlier: the factor. */
  rate: number;
}

/** One slice's law: scale σ of the base law, a fraction w of tokens at c·σ. */
export interface SliceLaw {
  sigma: number;
  w: number;
  c: number;
}

export interface StepLaw {
  alpha: number;
  seqLen: number;
  ref: { pre: SliceLaw; post: SliceLaw };
  roll: { pre: SliceLaw; post: SliceLaw };
  rank?: { rank: number; factor: number };
  nonfinite?: number;
}

const HEAVY = 10;
const sl = (sigma: number, w = 0, c = HEAVY): SliceLaw => ({ sigma, w, c });

/** The law of `spec` at `step`. The changed slice is always post_tool (policy_vs_ref, or old_vs_rollout for mismatch). */
export function lawAt(spec: StreamSpec, step: number): StepLaw {
  const after = Math.max(0, step - spec.onset + 1);
  const law: StepLaw = {
    alpha: spec.alpha,
    seqLen: 256,
    ref: { pre: sl(0.05), post: sl(0.08) },
    // Realistic background mismatch on every token (bf16 rollout logprobs): Laplace-like, small.
    roll: { pre: sl(0.02), post: sl(0.02) },
  };
  switch (spec.family) {
    case 'weight_growth':
      law.ref.post.w = Math.min(0.3, (spec.rate / 100) * after);
      break;
    case 'tail_scale':
      law.ref.post.w = 0.01;
      law.ref.post.c = 3 * (1 + spec.rate / 100) ** after;
      break;
    case 'mismatch':
      law.roll.post.w = Math.min(0.3, (spec.rate / 100) * after);
      break;
    case 'benign_drift': {
      const g = (1 + spec.rate / 100) ** step;
      for (const s of [law.ref.pre, law.ref.post, law.roll.pre, law.roll.post]) s.sigma *= g;
      break;
    }
    case 'alpha_ramp':
      law.alpha = spec.alpha + ((0.6 - spec.alpha) * step) / spec.steps;
      break;
    case 'seq_len':
      law.seqLen = [256, 64, 1024, 128][Math.floor((step * 4) / spec.steps) % 4];
      break;
    case 'shape_wander': {
      // A slow common wander of tail weight and scale in every slice, plus a small post-only one.
      const ph = (spec.seed % 7) / 7;
      const w = 0.004 * (1 + Math.sin(2 * Math.PI * (step / 500 + ph)));
      const g = 1 + 0.1 * Math.sin(2 * Math.PI * (step / 350 + ph));
      for (const s of [law.ref.pre, law.ref.post]) {
        s.w = w;
        s.sigma *= g;
      }
      law.ref.post.sigma *= 1 + 0.02 * Math.sin(2 * Math.PI * (step / 420 + 2 * ph));
      break;
    }
    case 'rank_outlier':
      if (after > 0) law.rank = { rank: 1, factor: spec.rate };
      break;
    case 'nonfinite':
      if (step === spec.onset) law.nonfinite = spec.seed % 2 ? Infinity : NaN;
      break;
  }
  return law;
}

// Box–Muller gives two normals per draw: keep the second (per rng, so streams stay independent).
const spare = new WeakMap<() => number, number>();
function normal(rng: () => number): number {
  const s = spare.get(rng);
  if (s !== undefined) {
    spare.delete(rng);
    return s;
  }
  let u = 0;
  while (u === 0) u = rng();
  const r = Math.sqrt(-2 * Math.log(u));
  const a = 2 * Math.PI * rng();
  spare.set(rng, r * Math.sin(a));
  return r * Math.cos(a);
}
const expo = (rng: () => number) => -Math.log(1 - rng());

/** Standardised draw of the base law. */
export function drawBase(rng: () => number, law: Law): number {
  if (law === 'normal') return normal(rng);
  if (law === 'laplace') return (rng() < 0.5 ? -1 : 1) * expo(rng);
  // Student-t: z / √(χ²_ν/ν), with χ²_2 = 2·Exp(1) and χ²_1 = z².
  const nu = law === 't3' ? 3 : law === 't4' ? 4 : 5;
  const chi = nu === 3 ? 2 * expo(rng) + normal(rng) ** 2 : nu === 4 ? 2 * (expo(rng) + expo(rng)) : 2 * (expo(rng) + expo(rng)) + normal(rng) ** 2;
  return normal(rng) / Math.sqrt(chi / nu);
}

const LGAMMA_T: Record<number, number> = {};
/** log density of the standardised base law. */
export function logPdf(x: number, law: Law): number {
  if (law === 'normal') return -0.5 * x * x - 0.9189385332046727;
  if (law === 'laplace') return -Math.abs(x) - Math.LN2;
  const nu = law === 't3' ? 3 : law === 't4' ? 4 : 5;
  // log Γ((ν+1)/2) − log Γ(ν/2) − ½ log(νπ), for ν = 3, 4, 5.
  const c = (LGAMMA_T[nu] ??= nu === 3 ? Math.log(2 / (Math.PI * Math.sqrt(3))) : nu === 4 ? Math.log(3 / 8) : Math.log(8 / (3 * Math.PI * Math.sqrt(5))));
  return c - ((nu + 1) / 2) * Math.log1p((x * x) / nu);
}

/** log density of ℓ under a slice law (mixture). */
export function sliceLogPdf(x: number, s: SliceLaw, law: Law): number {
  const a = Math.log(1 - s.w) + logPdf(x / s.sigma, law) - Math.log(s.sigma);
  if (s.w <= 0) return a;
  const b = Math.log(s.w) + logPdf(x / (s.c * s.sigma), law) - Math.log(s.c * s.sigma);
  const m = Math.max(a, b);
  return m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

function draw(rng: () => number, s: SliceLaw, law: Law): number {
  const sc = s.w > 0 && rng() < s.w ? s.sigma * s.c : s.sigma;
  return sc * drawBase(rng, law);
}

/** Tokens of the changed slice (post_tool of the changed pair), for the oracle. */
export type Sink = (v: number) => void;

const withRoll = (spec: StreamSpec) => spec.family === 'mismatch' || NUISANCE.includes(spec.family);

/** One rank's StepData under `law`. */
export function rankStep(rng: () => number, spec: StreamSpec, law: StepLaw, step: number, rank: number, sink?: Sink): StepData {
  const L = Math.min(law.seqLen, spec.tokens);
  const nSeq = Math.max(1, Math.round(spec.tokens / L));
  const T = nSeq * L;
  const toolLen = Math.max(2, Math.round(L / 16));
  const completionMask = new Uint8Array(T).fill(1);
  const toolMask = new Uint8Array(T);
  const offsets = new Int32Array(nSeq + 1);
  const ref = new Float32Array(T);
  const roll = withRoll(spec) ? new Float32Array(T) : null;
  const model = L - toolLen;
  const factor = law.rank?.rank === rank ? law.rank.factor : 1;
  const changedRoll = spec.family === 'mismatch';
  for (let s = 0; s < nSeq; s++) {
    offsets[s] = s * L;
    const a = Math.min(0.95, Math.max(0.02, law.alpha + 0.1 * (rng() - 0.5)));
    const nPost = Math.round(a * model);
    const nPre = model - nPost;
    for (let t = 0; t < L; t++) {
      const i = s * L + t;
      if (t >= nPre && t < nPre + toolLen) continue; // tool output: ℓ is 0 and masked
      const post = t >= nPre + toolLen;
      const r1 = draw(rng, post ? law.ref.post : law.ref.pre, spec.law) * (post ? factor : 1);
      const r2 = roll ? draw(rng, post ? law.roll.post : law.roll.pre, 'laplace') : 0;
      ref[i] = r1;
      if (roll) roll[i] = r2;
      if (post && sink) sink(changedRoll ? r2 : r1);
    }
    for (let t = 0; t < L; t++) if (!(t >= nPre && t < nPre + toolLen)) toolMask[s * L + t] = 1;
  }
  offsets[nSeq] = T;
  if (law.nonfinite !== undefined && rank === 0) ref[T - 1] = law.nonfinite;
  // old_vs_rollout rides along where its alarms are scored (nuisance streams, mismatch): half the cost elsewhere.
  const pairs: Partial<Record<PairName, Float32Array>> = roll ? { policy_vs_ref: ref, old_vs_rollout: roll } : { policy_vs_ref: ref };
  return {
    runId: 'bench', rank, worldSize: spec.ranks, step, trainer: 'synthetic', pairs, implicit: [],
    completionMask, toolMask, offsets,
    knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28, is_clip_max: 2.0, off_policy_mask_threshold: null },
    logs: { loss: 0.1 }, receivedAt: 0,
  };
}

/** The changed slice's law of a spec at `step` (for the oracle's likelihood ratios). */
export function changedLaw(spec: StreamSpec, step: number): SliceLaw {
  const l = lawAt(spec, step);
  return spec.family === 'mismatch' ? l.roll.post : l.ref.post;
}
export const changedLawName = (spec: StreamSpec): Law => (spec.family === 'mismatch' ? 'laplace' : spec.law);

/** StepResults of a spec through RunStats; `sink` sees every token of the changed slice. */
export function* specStream(spec: StreamSpec, sink?: (step: number) => Sink | undefined): Generator<StepResult> {
  const rng = mulberry32(spec.seed);
  const stats = new RunStats({ worldSize: spec.ranks, window: 20, runId: `bench-${spec.family}-${spec.seed}` });
  for (let step = 1; step <= spec.steps; step++) {
    const law = lawAt(spec, step);
    const k = sink?.(step);
    for (let r = 0; r < spec.ranks; r++) stats.addRankStep(rankStep(rng, spec, law, step, r, k));
    yield* stats.finalizeReady(Number.MAX_SAFE_INTEGER);
  }
}
