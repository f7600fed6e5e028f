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

/** The last `n` steps' points that pass `keep`, or undefined when too sparse for a trend. */
function trendTail(pts: Point[], n: number, keep: (v: number) => boolean): Point[] | undefined {
  // The last n steps by step number, so missing steps do not stretch the span.
  const from = pts.length ? pts[pts.length - 1].step - n + 1 : 0;
  let i = pts.length;
  while (i > 0 && pts[i - 1].step >= from) i--;
  const tail = pts.slice(i).filter((p) => keep(p.value));
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
