// SVG chart primitives shared by the HTML report and the live page. Pure functions from data to SVG
// strings (no DOM); colours of bands and events come from the page's CSS classes (dark mode, legend).

export interface Series {
  name: string;
  color: string;
  points: [number, number][]; // [x, y]; y null/NaN → gap
  dash?: string;
  width?: number;
}

/** A shaded x range behind the data: a detector episode (class `band sev-<severity>`). */
export interface Band {
  x0: number;
  x1: number;
  cls: string;
}

export interface ChartOptions {
  id: string;
  title: string;
  series: Series[];
  bands?: Band[];
  width?: number;
  height?: number;
  xLog?: boolean;
  yLog?: boolean;
  yMin?: number;
  yMax?: number;
  xLabel?: string;
  yLabel?: string;
  /** Fixed x domain (e.g. shared by charts that are compared side by side). */
  xDomain?: [number, number];
  yFormat?: (v: number) => string;
  legend?: boolean;
  /** Text summary for screen readers (<desc>, aria-label); computed from the series when absent. */
  desc?: string;
  /** What an empty chart says (default "no data yet"). */
  empty?: string;
}

const M = { l: 48, r: 10, t: 22, b: 30 };

export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a === 0) return '0';
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1).replace('e+', 'e');
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return String(+v.toFixed(2));
  return String(+v.toPrecision(2));
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    const v = 10 ** e;
    if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
  }
  return out.length >= 2 ? out : [lo, hi];
}

/** Keep at most `max` points, preserving each bucket's min and max so spikes survive, and the first and last
 *  points so a series is never cut short. */
export function downsample(points: [number, number][], max = 160): [number, number][] {
  if (points.length <= max) return points;
  const per = Math.ceil(points.length / ((max - 2) / 2));
  const out: [number, number][] = [points[0]];
  for (let i = 1; i < points.length - 1; i += per) {
    let lo = points[i], hi = points[i];
    for (let j = i; j < Math.min(points.length - 1, i + per); j++) {
      if (points[j][1] < lo[1]) lo = points[j];
      if (points[j][1] > hi[1]) hi = points[j];
    }
    if (lo === hi) out.push(lo);
    else out.push(...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]));
  }
  out.push(points[points.length - 1]);
  return out;
}

function extent(vals: number[], log: boolean): [number, number] | null {
  const v = vals.filter((x) => Number.isFinite(x) && (!log || x > 0));
  if (v.length === 0) return null;
  let lo = Infinity, hi = -Infinity;
  for (const x of v) { if (x < lo) lo = x; if (x > hi) hi = x; } // no spread: arrays can be huge
  if (lo === hi) {
    if (log) [lo, hi] = [lo / 2, hi * 2];
    else [lo, hi] = [lo - (Math.abs(lo) || 1) * 0.1, hi + (Math.abs(hi) || 1) * 0.1];
  }
  return [lo, hi];
}

function scale(lo: number, hi: number, a: number, b: number, log: boolean): (v: number) => number {
  if (log) {
    const l0 = Math.log(lo), l1 = Math.log(hi);
    return (v) => a + ((Math.log(Math.max(v, lo)) - l0) / (l1 - l0)) * (b - a);
  }
  return (v) => a + ((v - lo) / (hi - lo)) * (b - a);
}

/** A line chart with axes, axis labels, an optional legend and shaded episode bands. Series are downsampled
 *  (min/max per bucket: spikes survive) and carry no hover text: evidence lives once, in the audit table.
 *  data-* attributes give the page script the plot box and domains (step highlight, CSV export). */
export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 420, H = o.height ?? 200;
  const xl = !!o.xLog, yl = !!o.yLog;
  const series = o.series.map((s) => ({ ...s, points: downsample(s.points.filter((p) => Number.isFinite(p[0]))) }));
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const xe = o.xDomain ?? extent(xs, xl);
  let ye = extent(ys, yl);
  const desc = o.desc ?? describe(o.title, series, yl);
  const head = `<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="${esc(o.id)}" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(`${o.title}. ${desc}`)}"`;
  const title = `<text class="ctitle" x="${M.l}" y="14">${esc(o.title)}</text><desc>${esc(desc)}</desc>`;
  if (!xe || !ye || !xs.length) {
    const zeros = yl && xs.length > 0 && ys.some((y) => y === 0) && !ys.some((y) => y > 0);
    const why = zeros ? 'every value is 0 (nothing to draw on a log axis)' : o.empty ?? 'no data yet';
    return `${head} data-points="0">${title}<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">${esc(why)}</text></svg>`;
  }
  if (o.yMin !== undefined && !(yl && o.yMin <= 0)) ye = [Math.min(o.yMin, ye[0]), ye[1]];
  if (o.yMax !== undefined) ye = [ye[0], Math.max(o.yMax, ye[1])];
  const withLegend = o.legend !== false && series.length > 1 && series.length <= 8;
  const top = withLegend ? M.t + 12 : M.t;
  const sx = scale(xe[0], xe[1], M.l, W - M.r, xl);
  const sy = scale(ye[0], ye[1], H - M.b, top, yl);
  const yf = o.yFormat ?? fmt;
  const parts: string[] = [];
  parts.push(`<rect class="plot" x="${M.l}" y="${top}" width="${W - M.l - M.r}" height="${H - top - M.b}"/>`);
  for (const b of o.bands ?? []) {
    const x0 = Math.max(M.l, sx(b.x0) - 1), x1 = Math.min(W - M.r, sx(b.x1) + 1);
    if (x1 > x0) parts.push(`<rect class="band ${esc(b.cls)}" x="${x0.toFixed(1)}" y="${top}" width="${(x1 - x0).toFixed(1)}" height="${H - top - M.b}"/>`);
  }
  for (const t of yl ? logTicks(ye[0], ye[1]) : niceTicks(ye[0], ye[1], 4)) {
    const y = sy(t).toFixed(1);
    parts.push(`<line class="grid" x1="${M.l}" x2="${W - M.r}" y1="${y}" y2="${y}"/><text class="tick" x="${M.l - 4}" y="${y}" dy="3" text-anchor="end">${esc(yf(t))}</text>`);
  }
  for (const t of xl ? logTicks(xe[0], xe[1]) : niceTicks(xe[0], xe[1], 5)) {
    const x = sx(t).toFixed(1);
    parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${top}" y2="${H - M.b}"/><text class="tick" x="${x}" y="${H - M.b + 12}" text-anchor="middle">${esc(fmt(t))}</text>`);
  }
  if (o.xLabel) parts.push(`<text class="axis" x="${W - M.r}" y="${H - 4}" text-anchor="end">${esc(o.xLabel)}</text>`);
  if (o.yLabel) parts.push(`<text class="axis" transform="translate(10 ${(top + H - M.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}${yl ? ' (log)' : ''}</text>`);
  let npts = 0;
  for (const s of series) {
    const d: string[] = [];
    let pen = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y) || (yl && y <= 0)) { pen = false; continue; }
      d.push(`${pen ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
      pen = true;
      npts++;
    }
    parts.push(`<path class="series" data-name="${esc(s.name)}" d="${d.join('')}" fill="none" stroke="${esc(s.color)}" stroke-width="${s.width ?? 1.5}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
  }
  if (withLegend) {
    const per = Math.min(110, (W - M.l - M.r) / series.length);
    series.forEach((s, i) => {
      const x = M.l + i * per;
      parts.push(`<g class="legend"><line x1="${x}" x2="${x + 12}" y1="27" y2="27" stroke="${esc(s.color)}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/><text x="${x + 15}" y="30">${esc(s.name)}</text></g>`);
    });
  }
  const lastX = series.reduce((m, s) => Math.max(m, s.points.at(-1)?.[0] ?? -Infinity), -Infinity);
  const box = `data-box="${M.l},${W - M.r},${top},${H - M.b}" data-xd="${+xe[0].toPrecision(8)},${+xe[1].toPrecision(8)}" data-yd="${+ye[0].toPrecision(8)},${+ye[1].toPrecision(8)}"${xl ? ' data-xlog="1"' : ''}${yl ? ' data-ylog="1"' : ''}`;
  return `${head} data-points="${npts}" data-last-x="${Number.isFinite(lastX) ? lastX : ''}" ${box}>${title}${parts.join('')}</svg>`;
}

/** "post_tool rose 0.02→3.4 between steps 10–25; last 3.1 at step 30": the largest move of each series. */
export function describe(title: string, series: Series[], log = false): string {
  const out: string[] = [];
  for (const s of series.slice(0, 4)) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]) && (!log || p[1] > 0));
    if (pts.length < 2) continue;
    let lo = pts[0], hi = pts[0];
    for (const p of pts) { if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; }
    const [a, b] = lo[0] <= hi[0] ? [lo, hi] : [hi, lo];
    const verb = a === lo ? 'rose' : 'fell';
    const last = pts[pts.length - 1];
    out.push(`${s.name} ${hi[1] === lo[1] ? 'flat at ' + fmt(lo[1]) : `${verb} ${fmt(a[1])}→${fmt(b[1])} between ${fmt(a[0])}–${fmt(b[0])}`}, last ${fmt(last[1])} at ${fmt(last[0])}`);
  }
  return out.length ? out.join('; ') : `${title}: no data`;
}

/** Colour for position t in [0,1] on a perceptual ramp (viridis-like), early = purple, late = yellow. */
export function ramp(t: number): string {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export interface CdfCurve {
  label: string; // e.g. "steps 21–40"
  step: number;
  p: number[];
  q: number[];
}

/** Empirical CDFs of |ℓ| (or, `survival`, 1 − F on log y: the tail above p 0.99 gets room), one curve per
 *  window, colour-graded by time, log x axis. */
export function cdfChart(o: { id: string; title: string; curves: CdfCurve[]; width?: number; height?: number; firstStep?: number; lastStep?: number; xDomain?: [number, number]; survival?: boolean; empty?: string }): string {
  const n = o.curves.length;
  const first = o.firstStep ?? o.curves[0]?.step ?? 0;
  const last = o.lastStep ?? o.curves.at(-1)?.step ?? 1;
  const sv = !!o.survival;
  const series: Series[] = o.curves.map((c, i) => ({
    name: c.label,
    color: ramp(last > first ? (c.step - first) / (last - first) : 1),
    width: i === n - 1 ? 2.5 : 1.2,
    points: c.q.map((q, k) => [q, sv ? 1 - c.p[k] : c.p[k]] as [number, number]).filter((p) => p[0] > 0 && (!sv || p[1] > 0)),
  }));
  const lastC = series.at(-1), firstC = series[0];
  const at = (c: Series | undefined, p: number) => c?.points.find((x) => (sv ? x[1] <= 1 - p + 1e-12 : x[1] >= p - 1e-12))?.[0];
  const desc = n ? `${n} windows, steps ${first}–${last}; q99 of |ℓ| ${fmt(at(firstC, 0.99) ?? NaN)} in the first window, ${fmt(at(lastC, 0.99) ?? NaN)} in the last` : undefined;
  const svg = lineChart({ id: o.id, title: o.title, series, xLog: true, yLog: sv, xDomain: o.xDomain, yMin: sv ? undefined : 0, yMax: 1, xLabel: '|ℓ| (nats, log)', yLabel: sv ? 'P(|ℓ| > x)' : 'F(x)', legend: false, width: o.width ?? 420, height: o.height ?? 220, desc, empty: o.empty });
  const W = o.width ?? 420;
  const bar = n > 0
    ? `<g class="ramp"><title>colour = window end step (${first} → ${last})</title>${[0, 0.25, 0.5, 0.75, 1].map((t, i) => `<rect x="${W - 110 + i * 14}" y="5" width="14" height="8" fill="${ramp(t)}"/>`).join('')}<text x="${W - 114}" y="12" text-anchor="end">${first}</text><text x="${W - 36}" y="12">${last}</text></g>`
    : '';
  return svg.replace(/<\/svg>$/, `${bar}</svg>`).replace('<svg ', `<svg data-curves="${n}" `);
}
