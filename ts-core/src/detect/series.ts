// Small numeric helpers over short per-step series (trend windows are tens of points).

/** Ordinary least-squares slope of ys against xs; NaN with fewer than 2 distinct xs. */
export function olsSlope(xs: number[], ys: number[]): number {
  const n = Math.min(xs.length, ys.length);
  if (n < 2) return NaN;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i];
    my += ys[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : NaN;
}

export function median(v: number[]): number {
  if (!v.length) return NaN;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A point of a per-step series. */
export interface Point {
  step: number;
  value: number;
}

/** The points of the last `n` steps (by step number, so missing steps do not stretch the span). */
export function lastSteps(pts: Point[], n: number): Point[] {
  if (!pts.length) return pts;
  const from = pts[pts.length - 1].step - n + 1;
  let i = pts.length;
  while (i > 0 && pts[i - 1].step >= from) i--;
  return pts.slice(i);
}

/** The last `n` steps' points that pass `keep`, or undefined when too sparse for a trend. */
function trendTail(pts: Point[], n: number, keep: (v: number) => boolean): Point[] | undefined {
  const tail = lastSteps(pts, n).filter((p) => keep(p.value));
  return tail.length < Math.max(3, Math.ceil(n / 2)) ? undefined : tail;
}

const positive = (v: number) => v > 0 && Number.isFinite(v);

/** Slope of log(value) per step over the last `n` steps (growth rate per step); NaN if too sparse. */
export function logSlope(pts: Point[], n: number): number {
  const tail = trendTail(pts, n, positive);
  if (!tail) return NaN;
  return olsSlope(
    tail.map((p) => p.step),
    tail.map((p) => Math.log(p.value)),
  );
}

/** Log-slope with its t statistic (slope / standard error), to tell a trend from noise. */
export function logSlopeT(pts: Point[], n: number): { slope: number; t: number } {
  const tail = trendTail(pts, n, positive);
  if (!tail) return { slope: NaN, t: NaN };
  const xs = tail.map((p) => p.step);
  const ys = tail.map((p) => Math.log(p.value));
  const b = olsSlope(xs, ys);
  const mx = xs.reduce((a, x) => a + x, 0) / xs.length;
  const my = ys.reduce((a, y) => a + y, 0) / ys.length;
  let sse = 0;
  let sxx = 0;
  for (let i = 0; i < xs.length; i++) {
    sse += (ys[i] - my - b * (xs[i] - mx)) ** 2;
    sxx += (xs[i] - mx) ** 2;
  }
  const se = Math.sqrt(sse / Math.max(1, xs.length - 2) / sxx);
  return { slope: b, t: se > 0 ? b / se : b > 0 ? Infinity : b < 0 ? -Infinity : 0 };
}

/** Slope of value per step over the last `n` steps; NaN if too sparse. */
export function linSlope(pts: Point[], n: number): number {
  const tail = trendTail(pts, n, Number.isFinite);
  if (!tail) return NaN;
  return olsSlope(
    tail.map((p) => p.step),
    tail.map((p) => p.value),
  );
}

export function round(x: number, digits = 4): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
