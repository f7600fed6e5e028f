// Synthetic step streams for detection tests and the detection-quality study: seeded per-token
// log-ratios with pre_tool / tool_output / post_tool structure, as StepData (what the real stats
// module ingests), plus a small exact reference statistics pass (`ExactStats`) that turns them into
// StepResults when the real `RunStats` is not available. Scenarios change one thing at a time.
import type { MetricRecord, PairName, ShapeChange, SliceName, StepData, StepResult, WindowRecord } from '../src/types.ts';

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function gauss(rng: () => number): number {
  let u = 0;
  while (u === 0) u = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}

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

// ---------------------------------------------------------------------------------------------
// Exact reference statistics (sort-based quantiles, log-space ESS, a log-|ℓ| histogram per step
// for windows and a drift-aware EWMA baseline). Used when the real stats module is unavailable.

const SLICES: SliceName[] = ['all', 'pre_tool', 'post_tool'];
const QS = [0.5, 0.9, 0.95, 0.99, 0.999];
const LOG_MIN = -14;
const LOG_MAX = 6;
const NB = 1000;
const BW = (LOG_MAX - LOG_MIN) / NB;

function quantileSorted(s: Float64Array, p: number): number {
  if (!s.length) return NaN;
  const h = p * (s.length - 1);
  const lo = Math.floor(h);
  const hi = Math.min(s.length - 1, lo + 1);
  return s[lo] + (h - lo) * (s[hi] - s[lo]);
}

function lse(xs: ArrayLike<number>, k = 1): number {
  let m = -Infinity;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, k * xs[i]);
  if (!Number.isFinite(m)) return m;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += Math.exp(k * xs[i] - m);
  return m + Math.log(s);
}

interface SliceTokens {
  l: number[];
  seqSums: number[];
  seqLens: number[];
}

function sliceOf(pre: boolean, tool: boolean): SliceName | null {
  return tool ? null : pre ? 'pre_tool' : 'post_tool';
}

function collect(d: StepData, pair: PairName, into: Record<string, SliceTokens>, rankInto?: Record<string, SliceTokens>): void {
  const x = d.pairs[pair];
  if (!x) return;
  for (let s = 0; s + 1 < d.offsets.length; s++) {
    let seenTool = false;
    const sums: Record<string, number> = {};
    const lens: Record<string, number> = {};
    for (let i = d.offsets[s]; i < d.offsets[s + 1]; i++) {
      if (!d.completionMask[i]) continue;
      const tool = d.toolMask[i] === 0;
      if (tool) seenTool = true;
      const sl = sliceOf(!seenTool, tool);
      if (!sl) continue;
      for (const name of [sl, 'all']) {
        for (const tgt of rankInto ? [into, rankInto] : [into]) (tgt[name] ??= { l: [], seqSums: [], seqLens: [] }).l.push(x[i]);
        sums[name] = (sums[name] ?? 0) + (Number.isFinite(x[i]) ? x[i] : 0);
        lens[name] = (lens[name] ?? 0) + 1;
      }
    }
    for (const name of Object.keys(sums)) {
      into[name].seqSums.push(sums[name]);
      into[name].seqLens.push(lens[name]);
    }
  }
}

function record(step: number, pair: PairName, slice: SliceName, t: SliceTokens, alpha: number, knobs: StepData['knobs']): MetricRecord {
  const fin = t.l.filter((v) => Number.isFinite(v));
  const n = fin.length;
  const abs = Float64Array.from(fin, Math.abs).sort();
  let mean = 0;
  let absMean = 0;
  let sq = 0;
  let k3 = 0;
  let clip = 0;
  const lo = 1 - (knobs.epsilon_low ?? 0.2);
  const hi = 1 + (knobs.epsilon_high ?? 0.2);
  let e15 = 0;
  let e2 = 0;
  let e3 = 0;
  for (const v of fin) {
    mean += v;
    absMean += Math.abs(v);
    sq += v * v;
    const w = Math.exp(v);
    k3 += w - 1 - v;
    if (w < lo || w > hi) clip++;
    const a = Math.abs(v);
    if (a > Math.log(1.5)) e15++;
    if (a > Math.log(2)) e2++;
    if (a > Math.log(3)) e3++;
  }
  const nn = Math.max(n, 1);
  mean /= nn;
  absMean /= nn;
  const std = Math.sqrt(Math.max(0, sq / nn - mean * mean));
  const essOf = (xs: number[]) => (xs.length ? Math.exp(2 * lse(xs) - lse(xs, 2)) / xs.length : NaN);
  const q = QS.map((p) => quantileSorted(abs, p));
  return {
    step,
    pair,
    slice,
    n,
    nonfinite: t.l.length - n,
    mean,
    abs_mean: absMean,
    std,
    abs_q50: q[0],
    abs_q90: q[1],
    abs_q95: q[2],
    abs_q99: q[3],
    abs_q999: q[4],
    abs_max: abs.length ? abs[abs.length - 1] : NaN,
    exceed_1_5: e15 / nn,
    exceed_2: e2 / nn,
    exceed_3: e3 / nn,
    ess: essOf(fin),
    ess_seq: essOf(t.seqSums),
    ess_seq_norm: essOf(t.seqSums.map((s, i) => s / Math.max(1, t.seqLens[i]))),
    chi2: fin.length ? Math.exp(lse(fin, 2) - Math.log(n)) - 1 : NaN,
    kl_k1: -mean,
    kl_k2: sq / nn / 2,
    kl_k3: k3 / nn,
    clip_frac: clip / nn,
    alpha,
  };
}

function logHist(abs: number[]): Float64Array {
  const h = new Float64Array(NB);
  for (const a of abs) {
    if (!Number.isFinite(a)) continue;
    const b = Math.floor((Math.log(Math.max(a, 1e-300)) - LOG_MIN) / BW);
    h[b < 0 ? 0 : b >= NB ? NB - 1 : b]++;
  }
  return h;
}

function cdfOf(h: Float64Array): Float64Array {
  const c = new Float64Array(NB);
  let n = 0;
  for (let i = 0; i < NB; i++) n += h[i];
  let cum = 0;
  for (let i = 0; i < NB; i++) c[i] = n > 0 ? (cum += h[i]) / n : 0;
  return c;
}

function qFromCdf(c: Float64Array, p: number): number {
  for (let i = 0; i < NB; i++) if (c[i] >= p) return Math.exp(LOG_MIN + (i + 1) * BW);
  return Math.exp(LOG_MAX);
}

function shape(cur: Float64Array, base: Float64Array): ShapeChange {
  let ks = 0;
  let w1 = 0;
  for (let i = 0; i < NB; i++) {
    const d = Math.abs(cur[i] - base[i]);
    ks = Math.max(ks, d);
    w1 += d * BW;
  }
  const q = (c: Float64Array, p: number) => qFromCdf(c, p);
  return {
    ks,
    w1_log: w1,
    dq50: q(cur, 0.5) / q(base, 0.5) - 1,
    dq90: q(cur, 0.9) / q(base, 0.9) - 1,
    dq95: q(cur, 0.95) / q(base, 0.95) - 1,
    dq99: q(cur, 0.99) / q(base, 0.99) - 1,
    tail_stretch: q(cur, 0.99) / q(cur, 0.5) / (q(base, 0.99) / q(base, 0.5)),
  };
}

/** Reference statistics: one StepResult per step (all ranks of a step passed together). */
export class ExactStats {
  private ring: Record<string, Float64Array[]> = {};
  private ewma: Record<string, Float64Array> = {};

  constructor(private readonly o: { window: number; ewmaAlpha: number } = { window: 20, ewmaAlpha: 0.1 }) {}

  step(ranks: StepData[]): StepResult {
    const d0 = ranks[0];
    const records: MetricRecord[] = [];
    const windows: WindowRecord[] = [];
    const perRank: StepResult['perRank'] = ranks.map((d) => ({ rank: d.rank, tokens: d.offsets[d.offsets.length - 1], pairs: {} }));
    for (const pair of Object.keys(d0.pairs) as PairName[]) {
      const tok: Record<string, SliceTokens> = {};
      ranks.forEach((d, i) => {
        const mine: Record<string, SliceTokens> = {};
        collect(d, pair, tok, mine);
        perRank[i].pairs[pair] = Object.fromEntries(
          Object.entries(mine).map(([sl, t]) => {
            const abs = Float64Array.from(t.l.filter(Number.isFinite), Math.abs).sort();
            return [sl, { n: abs.length, abs_q99: quantileSorted(abs, 0.99), abs_mean: abs.reduce((a, b) => a + b, 0) / Math.max(1, abs.length), ess: NaN }];
          }),
        );
      });
      const nPre = tok.pre_tool?.l.length ?? 0;
      const nPost = tok.post_tool?.l.length ?? 0;
      const alpha = nPost / Math.max(1, nPre + nPost);
      for (const slice of SLICES) {
        const t = tok[slice];
        if (!t) continue;
        const rec = record(d0.step, pair, slice, t, alpha, d0.knobs);
        records.push(rec);
        const key = `${pair}/${slice}`;
        const ring = (this.ring[key] ??= []);
        ring.push(logHist(t.l.map(Math.abs)));
        if (ring.length > this.o.window) ring.shift();
        const sum = new Float64Array(NB);
        for (const h of ring) for (let i = 0; i < NB; i++) sum[i] += h[i];
        const cur = cdfOf(sum);
        const base = this.ewma[key];
        let n = 0;
        for (let i = 0; i < NB; i++) n += sum[i];
        windows.push({
          step: d0.step,
          first_step: d0.step - ring.length + 1,
          pair,
          slice,
          n,
          alpha,
          abs_q50: qFromCdf(cur, 0.5),
          abs_q90: qFromCdf(cur, 0.9),
          abs_q95: qFromCdf(cur, 0.95),
          abs_q99: qFromCdf(cur, 0.99),
          abs_q999: qFromCdf(cur, 0.999),
          cdf: { p: [], q: [] },
          shape: base && ring.length >= this.o.window ? { drift_aware: shape(cur, base) } : undefined,
        });
        // The baseline learns from full windows only, after the comparison.
        if (ring.length >= this.o.window) {
          if (!base) this.ewma[key] = cur;
          else for (let i = 0; i < NB; i++) base[i] += this.o.ewmaAlpha * (cur[i] - base[i]);
        }
      }
    }
    return {
      runId: d0.runId,
      step: d0.step,
      worldSize: d0.worldSize,
      ranksPresent: ranks.map((d) => d.rank),
      ranksMissing: [],
      tokens: ranks.reduce((a, d) => a + d.offsets[d.offsets.length - 1], 0),
      records,
      windows,
      perRank,
      knobs: d0.knobs,
      logs: d0.logs,
    };
  }
}

/** A stream of StepResults for a scenario, through ExactStats. */
export function* exactStream(name: ScenarioName, steps: number, onset: number, seed: number, gen: Partial<GenOptions> = {}): Generator<StepResult> {
  const o = { ...GEN_DEFAULTS, ...gen, worldSize: name === 'rank_outlier' ? 2 : (gen.worldSize ?? 1) };
  const rng = mulberry32(seed);
  const stats = new ExactStats();
  for (let step = 1; step <= steps; step++) {
    const law = lawAt(name, step, onset);
    const ranks = Array.from({ length: o.worldSize }, (_, r) => genRankStep(rng, law, `synthetic-${name}`, step, r, o));
    yield stats.step(ranks);
  }
}
