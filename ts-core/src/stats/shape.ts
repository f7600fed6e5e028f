// CDF snapshots on a fixed probability grid (dense in the tail) and shape change between two
// quantile functions: KS, Wasserstein-1 on log|ℓ|, quantile shifts, tail stretch.
import type { ShapeChange } from '../types.ts';
import { HIST_EDGES } from './hist.ts';

/** Probability grid of every CDF snapshot: 67 points, spacing 0.005 above p90 and 0.0005 above p99. */
export const CDF_GRID: readonly number[] = (() => {
  const g: number[] = [0.005];
  for (let i = 1; i <= 10; i++) g.push(i / 100); // 0.01 … 0.10
  for (let i = 3; i <= 17; i++) g.push(i / 20); // 0.15 … 0.85
  for (let i = 180; i < 198; i++) g.push(i / 200); // 0.900 … 0.985
  for (let i = 1980; i <= 1998; i++) g.push(i / 2000); // 0.9900 … 0.9990
  g.push(0.9995, 0.9999, 0.99995, 0.99999);
  return g.map((p) => Number(p.toFixed(6)));
})();
const idx = (p: number) => CDF_GRID.indexOf(p);
export const GRID_I50 = idx(0.5), GRID_I90 = idx(0.9), GRID_I95 = idx(0.95), GRID_I99 = idx(0.99), GRID_I999 = idx(0.999);

/** F(x) from a quantile grid q (ascending), linear between grid points, clamped to [p0, pLast]. */
function cdfAt(q: ArrayLike<number>, x: number): number {
  const g = CDF_GRID;
  const m = g.length;
  if (x < q[0]) return x <= 0 ? 0 : g[0] * (x / q[0]);
  if (x >= q[m - 1]) return g[m - 1];
  let lo = 0, hi = m - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (q[mid] <= x) lo = mid;
    else hi = mid;
  }
  const span = q[hi] - q[lo];
  return span > 0 ? g[lo] + ((x - q[lo]) / span) * (g[hi] - g[lo]) : g[hi];
}

/** Floor for logs of |ℓ|: the histogram's underflow edge 2^-24. */
const LOG_FLOOR = HIST_EDGES[1];

export function shapeChange(cur: ArrayLike<number>, base: ArrayLike<number>): ShapeChange {
  const g = CDF_GRID;
  let ks = 0;
  for (let i = 0; i < g.length; i++) {
    ks = Math.max(ks, Math.abs(g[i] - cdfAt(base, cur[i])), Math.abs(g[i] - cdfAt(cur, base[i])));
  }
  // W1 = ∫|Q_cur(p) − Q_base(p)| dp on log|ℓ| (trapezoid over the grid's span)
  let w1 = 0;
  const d = (i: number) => Math.abs(Math.log(Math.max(cur[i], LOG_FLOOR)) - Math.log(Math.max(base[i], LOG_FLOOR)));
  for (let i = 1; i < g.length; i++) w1 += 0.5 * (d(i) + d(i - 1)) * (g[i] - g[i - 1]);
  const stretch = (q: ArrayLike<number>) => q[GRID_I99] / Math.max(q[GRID_I50], LOG_FLOOR);
  return {
    ks,
    w1_log: w1,
    dq50: cur[GRID_I50] - base[GRID_I50],
    dq90: cur[GRID_I90] - base[GRID_I90],
    dq95: cur[GRID_I95] - base[GRID_I95],
    dq99: cur[GRID_I99] - base[GRID_I99],
    tail_stretch: stretch(cur) / stretch(base),
  };
}

/**
 * Shift-share split of the change in the aggregate mean |ℓ| between a baseline (0) and now (1):
 * Δμ = ᾱ·Δμ_post + (1−ᾱ)·Δμ_pre + Δα·(μ̄_post − μ̄_pre), bars = midpoints, so the terms add up exactly.
 */
export function attribution(
  a0: number, pre0: number, post0: number, a1: number, pre1: number, post1: number,
): { d_mean: number; alpha_term: number; pre_term: number; post_term: number } {
  // A slice absent in one period has no within-slice change: borrow the other period's mean.
  if (!Number.isFinite(pre0)) pre0 = pre1;
  if (!Number.isFinite(pre1)) pre1 = pre0;
  if (!Number.isFinite(post0)) post0 = post1;
  if (!Number.isFinite(post1)) post1 = post0;
  if (!Number.isFinite(pre0)) pre0 = pre1 = 0;
  if (!Number.isFinite(post0)) post0 = post1 = 0;
  const ab = 0.5 * (a0 + a1);
  const alpha_term = (a1 - a0) * 0.5 * (post0 + post1 - pre0 - pre1);
  const pre_term = (1 - ab) * (pre1 - pre0);
  const post_term = ab * (post1 - post0);
  return { d_mean: alpha_term + pre_term + post_term, alpha_term, pre_term, post_term };
}
