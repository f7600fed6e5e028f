// Exact per-slice sums: the field order is the sketch payload's (docs/sketch.md), so a sketch from
// the shim and a raw-mode accumulator are the same object. Merge rules: sum / max / lse(m) / lse2(m).

export const SUMS_FIELDS = [
  'n', 'nonfinite', 'sum', 'sum_abs', 'sum_sq', 'sum_k3', 'exceed_1_5', 'exceed_2', 'exceed_3', 'clip',
  'abs_max', 'lse_max', 'lse_sum', 'lse2_sum', 'seq_n', 'seq_max', 'seq_sum', 'seq2_sum',
  'seqn_max', 'seqn_sum', 'seqn2_sum',
] as const;
export type SumsField = (typeof SUMS_FIELDS)[number];
export const N_SUMS = SUMS_FIELDS.length;

export const S_N = 0, S_NONFINITE = 1, S_SUM = 2, S_SUM_ABS = 3, S_SUM_SQ = 4, S_SUM_K3 = 5;
export const S_EXCEED_1_5 = 6, S_EXCEED_2 = 7, S_EXCEED_3 = 8, S_CLIP = 9, S_ABS_MAX = 10;
export const S_LSE_MAX = 11, S_LSE_SUM = 12, S_LSE2_SUM = 13;
export const S_SEQ_N = 14, S_SEQ_MAX = 15, S_SEQ_SUM = 16, S_SEQ2_SUM = 17;
export const S_SEQN_MAX = 18, S_SEQN_SUM = 19, S_SEQN2_SUM = 20;

/** Thresholds log C for the exceedance fractions, C ∈ {1.5, 2, 3}. */
export const EXCEED_LOG = [Math.log(1.5), Math.log(2), Math.log(3)] as const;

export function emptySums(out: Float64Array = new Float64Array(N_SUMS)): Float64Array {
  out.fill(0);
  out[S_LSE_MAX] = out[S_SEQ_MAX] = out[S_SEQN_MAX] = -Infinity;
  return out;
}

/** Add the part (m, s1, s2) = (shift, Σexp(x−m), Σexp(2(x−m))) into sums at index im. */
export function lseAdd(sums: Float64Array, im: number, m: number, s1: number, s2: number): void {
  if (!(s1 > 0) || m === -Infinity) return;
  const cur = sums[im];
  if (cur === -Infinity) {
    sums[im] = m;
    sums[im + 1] = s1;
    sums[im + 2] = s2;
  } else if (m > cur) {
    const f = Math.exp(cur - m);
    sums[im] = m;
    sums[im + 1] = sums[im + 1] * f + s1;
    sums[im + 2] = sums[im + 2] * f * f + s2;
  } else {
    const f = Math.exp(m - cur);
    sums[im + 1] += s1 * f;
    sums[im + 2] += s2 * f * f;
  }
}

/** a ← a ⊕ b. `withSeq` false merges only token-level fields (for `all` = pre ∪ post). */
export function mergeSums(a: Float64Array, b: Float64Array, withSeq = true): void {
  for (let i = S_N; i <= S_CLIP; i++) a[i] += b[i];
  if (b[S_ABS_MAX] > a[S_ABS_MAX]) a[S_ABS_MAX] = b[S_ABS_MAX];
  lseAdd(a, S_LSE_MAX, b[S_LSE_MAX], b[S_LSE_SUM], b[S_LSE2_SUM]);
  if (!withSeq) return;
  a[S_SEQ_N] += b[S_SEQ_N];
  lseAdd(a, S_SEQ_MAX, b[S_SEQ_MAX], b[S_SEQ_SUM], b[S_SEQ2_SUM]);
  lseAdd(a, S_SEQN_MAX, b[S_SEQN_MAX], b[S_SEQN_SUM], b[S_SEQN2_SUM]);
}

/** ESS/N from LSE parts: exp(2·log s1 − log s2 − log N); the shared shift cancels. */
export function essFrom(s1: number, s2: number, n: number): number {
  return n > 0 && s1 > 0 ? Math.exp(2 * Math.log(s1) - Math.log(s2) - Math.log(n)) : NaN;
}

/**
 * χ² = E[w²] − 1 = expm1(2m + log s2 − log N); +Infinity once E[w²] overflows float64. Unshifted (m = 0)
 * with s2 within a factor 2 of N, s2 − N is exact and (s2 − N)/N keeps the digits that log s2 − log N
 * would cancel away when χ² is tiny.
 */
export function chi2From(m: number, s2: number, n: number): number {
  if (!(n > 0)) return NaN;
  if (m === 0 && s2 >= n / 2 && s2 <= 2 * n) return (s2 - n) / n;
  return Math.expm1(2 * m + Math.log(s2) - Math.log(n));
}

/** The non-quantile MetricRecord fields from sums. NaN where n = 0 (null in JSON). */
export interface SumMetrics {
  n: number; nonfinite: number; mean: number; abs_mean: number; std: number; abs_max: number;
  exceed_1_5: number; exceed_2: number; exceed_3: number; ess: number; ess_seq: number; ess_seq_norm: number;
  chi2: number; kl_k1: number; kl_k2: number; kl_k3: number; clip_frac: number;
}

export function metricsFromSums(s: Float64Array): SumMetrics {
  const n = s[S_N];
  const z = n > 0 ? n : NaN; // divide (not multiply by 1/n) so fractions are exactly count/n
  const mean = s[S_SUM] / z;
  return {
    n,
    nonfinite: s[S_NONFINITE],
    mean,
    abs_mean: s[S_SUM_ABS] / z,
    std: Math.sqrt(Math.max(s[S_SUM_SQ] / z - mean * mean, 0)),
    abs_max: n > 0 ? s[S_ABS_MAX] : NaN,
    exceed_1_5: s[S_EXCEED_1_5] / z,
    exceed_2: s[S_EXCEED_2] / z,
    exceed_3: s[S_EXCEED_3] / z,
    ess: essFrom(s[S_LSE_SUM], s[S_LSE2_SUM], n),
    ess_seq: essFrom(s[S_SEQ_SUM], s[S_SEQ2_SUM], s[S_SEQ_N]),
    ess_seq_norm: essFrom(s[S_SEQN_SUM], s[S_SEQN2_SUM], s[S_SEQ_N]),
    chi2: chi2From(s[S_LSE_MAX], s[S_LSE2_SUM], n),
    kl_k1: -mean,
    kl_k2: s[S_SUM_SQ] / z / 2,
    kl_k3: s[S_SUM_K3] / z,
    clip_frac: s[S_CLIP] / z,
  };
}

/** Clip band in ℓ from the live knobs: w ∉ [1−ε_low, 1+ε_high]. Defaults 0.2; ε_high defaults to ε_low. */
export function clipBand(knobs: Record<string, unknown> | undefined): { lo: number; hi: number } {
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined);
  const el = num(knobs?.epsilon_low) ?? num(knobs?.epsilon) ?? 0.2;
  const eh = num(knobs?.epsilon_high) ?? el;
  return { lo: el < 1 ? Math.log(1 - el) : -Infinity, hi: Math.log1p(eh) };
}
