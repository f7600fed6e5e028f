// Run data → the page body. Used by the static report and the live page, which therefore show the same
// views. The body is built from "leaves" (a chart, a table body, the summary), each with a stable id: the
// live page sends only the leaves that changed (ui/server.ts), so open tables, filters and highlights stay.
import type { MetricRecord, WindowRecord } from '../types.ts';
import type { AuditEntry, RunData, StepEntry } from '../store/index.ts';
import { auditLeaves } from './audit.ts';
import { laneChart } from './lane.ts';
import { isFlatPair, pairOrder, SEVERITY_RANK, story, type Episode, type Story } from './story.ts';
import { headerHtml, whatHappened } from './summary.ts';
import { cdfChart, esc, lineChart, type Band, type Series } from './svg.ts';

// Okabe-Ito: distinguishable under the common colour-vision deficiencies.
const SLICE_COLORS: Record<string, string> = { all: '#777777', pre_tool: '#0072B2', post_tool: '#D55E00', tool_output: '#999999' };
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

/** Timeline metrics per pair: [field, title, y label, log-y]. Tails, KL and exceedance on log y. */
export const TIMELINES: [keyof MetricRecord, string, string, boolean][] = [
  ['abs_q95', 'q95 |ℓ|', '|ℓ| (nats)', true],
  ['abs_q99', 'q99 |ℓ|', '|ℓ| (nats)', true],
  ['abs_q999', 'q99.9 |ℓ|', '|ℓ| (nats)', true],
  ['ess', 'ESS/N (token)', 'ESS/N', false],
  ['ess_seq', 'ESS/N (sequence)', 'ESS/N', false],
  ['alpha', 'α = post_tool share', 'α', false],
  ['kl_k3', 'KL k3', 'nats/token', true],
  ['exceed_2', 'P(|ℓ| > log 2)', 'share of tokens', true],
];

export interface Rendered {
  html: string;
  lastStep: number | null;
  /** [id, html] of every leaf, in page order. */
  leaves: [string, string][];
  /** The body with each leaf replaced by <i data-leaf="id"></i>: when it changes, the live page reloads the body. */
  layout: string;
  story: Story;
}

class Body {
  parts: string[] = [];
  layout: string[] = [];
  leaves: [string, string][] = [];
  raw(s: string): void {
    this.parts.push(s);
    this.layout.push(s);
  }
  leaf(id: string, html: string): void {
    this.parts.push(html);
    this.layout.push(`<i data-leaf="${esc(id)}"></i>`);
    this.leaves.push([id, html]);
  }
}

function groupBy<T, K>(xs: readonly T[], key: (x: T) => K): Map<K, T[]> {
  const m = new Map<K, T[]>();
  for (const x of xs) {
    const k = key(x);
    const a = m.get(k);
    if (a) a.push(x);
    else m.set(k, [x]);
  }
  return m;
}

const order = (slice: string) => ({ all: 0, pre_tool: 1, tool_output: 2, post_tool: 9 } as Record<string, number>)[slice] ?? 5; // post_tool drawn last
const num = (v: unknown) => (typeof v === 'number' ? v : NaN);
const sliceColor = (slice: string, i: number) => SLICE_COLORS[slice] ?? PALETTE[(i + 2) % PALETTE.length];

/** At most 48 points of a CDF grid: every other point of the body, all of the tail (p ≥ 0.99). */
function thin(p: number[], q: number[]): { p: number[]; q: number[] } {
  if (p.length <= 48) return { p, q };
  const keep = p.map((v, i) => v >= 0.99 || i === 0 || i === p.length - 1 || i % Math.ceil(p.length / 40) === 0);
  return { p: p.filter((_, i) => keep[i]), q: q.filter((_, i) => keep[i]) };
}

/** Episodes at warn or above as chart bands; overlapping ones of one severity merged (bytes stay bounded). */
export function bandsOf(eps: readonly Episode[]): Band[] {
  const out: Band[] = [];
  for (const sev of ['warn', 'high', 'critical']) {
    const iv = eps.filter((e) => e.peak === sev).map((e) => [e.first - 0.5, (e.cleared ?? e.last) + 0.5]).sort((a, b) => a[0] - b[0]);
    for (const [a, b] of iv) {
      const last = out.at(-1);
      if (last && last.cls === `sev-${sev}` && a <= last.x1) last.x1 = Math.max(last.x1, b);
      else out.push({ x0: a, x1: b, cls: `sev-${sev}` });
    }
  }
  return out;
}

function pairSection(body: Body, run: RunData, pair: string, records: MetricRecord[], windows: WindowRecord[], st: Story, xDomain: [number, number], checkpoints: Extract<AuditEntry, { kind: 'checkpoint' }>[]): void {
  if (isFlatPair(run, pair)) {
    const implicit = records.some((r) => r.implicit);
    body.raw(`<section class="pair flat" id="pair-${esc(pair)}"><h2>${esc(pair)} <span class="note">${implicit ? 'implicit: identically 0 by construction (e.g. GRPO with one update per generation)' : 'identically 0 in every step'}; nothing to draw</span></h2></section>`);
    return;
  }
  const eps = st.episodes.filter((e) => e.pair === pair);
  const bands = bandsOf(eps);
  const dirs = st.directives.filter((d) => d.reason.includes(pair) || !/policy_vs|old_vs/.test(d.reason));
  body.raw(`<section class="pair" id="pair-${esc(pair)}"><h2>${esc(pair)} <span class="note">${eps.length} episode(s)</span></h2>`);
  body.leaf(`lane-${pair}`, laneChart({ id: `lane-${pair}`, title: `events · ${pair}`, episodes: eps, directives: dirs, checkpoints, xDomain }));
  const bySlice = groupBy(records, (r) => r.slice);
  const slices = [...bySlice.keys()].sort((a, b) => order(a) - order(b));
  const emptySlices = slices.filter((s) => bySlice.get(s)!.every((r) => !(r.n > 0)));
  const gapNotes = slices.filter((s) => !emptySlices.includes(s)).map((s) => [s, bySlice.get(s)!.filter((r) => !(r.n > 0)).length] as const).filter(([, k]) => k > 0);
  if (gapNotes.length || emptySlices.length) {
    body.raw(`<p class="note gaps">${[...emptySlices.map((s) => `${esc(s)}: no tokens in this slice in any step.`), ...gapNotes.map(([s, k]) => `${esc(s)}: no tokens in ${k} step(s); its lines break there.`)].join(' ')}</p>`);
  }

  // CDF and survival (1 − F, log y) side by side per slice, one x domain for the pair.
  const wBySlice = groupBy(windows, (w) => w.slice);
  const cdfSlices = ['pre_tool', 'post_tool', ...[...wBySlice.keys()].filter((s) => s !== 'pre_tool' && s !== 'post_tool' && s !== 'all')];
  // The windows drawn (about 12 per slice, thinned to ≤ 48 points), chosen first: one x domain from them.
  const drawn = cdfSlices.map((slice) => {
    const ws = (wBySlice.get(slice as WindowRecord['slice']) ?? []).filter((w) => w.n > 0).sort((a, b) => a.step - b.step);
    const sel = ws.length > 12 ? ws.filter((_, i) => i % Math.ceil(ws.length / 12) === 0 || i === ws.length - 1) : ws;
    return { slice, ws, curves: sel.map((w) => ({ label: `steps ${w.first_step}–${w.step}`, step: w.step, ...thin(w.cdf.p, w.cdf.q) })) };
  });
  let qlo = Infinity, qhi = -Infinity;
  for (const d of drawn) for (const c of d.curves) for (const q of c.q) if (q > 0 && Number.isFinite(q)) { if (q < qlo) qlo = q; if (q > qhi) qhi = q; }
  const qDomain: [number, number] | undefined = qhi >= qlo ? [qlo, qhi] : undefined;
  body.raw('<div class="row cdfs">');
  for (const { slice, ws, curves } of drawn) {
    const empty = 'no tokens in this slice';
    const common = { curves, xDomain: qDomain, firstStep: ws[0]?.step, lastStep: ws.at(-1)?.step, empty, width: 340 };
    body.leaf(`cdf-${pair}-${slice}`, cdfChart({ id: `cdf-${pair}-${slice}`, title: `CDF of |ℓ| · ${slice} · ${ws.length} windows`, ...common }));
    body.leaf(`surv-${pair}-${slice}`, cdfChart({ id: `surv-${pair}-${slice}`, title: `survival 1 − F · ${slice}`, survival: true, ...common }));
  }
  body.raw('</div><div class="row timelines">');
  for (const [field, title, yLabel, log] of TIMELINES) {
    let series: Series[] = slices.map((slice, i) => ({
      name: slice,
      color: sliceColor(slice, i),
      dash: slice === 'all' ? '4 3' : undefined,
      width: slice === 'post_tool' ? 2 : 1.5,
      points: bySlice.get(slice)!.map((r) => [r.step, r.n > 0 ? num(r[field]) : NaN] as [number, number]),
    }));
    if (field === 'ess_seq') {
      const all = bySlice.get('all');
      if (all) series.splice(1, 0, { name: 'all len-norm', color: SLICE_COLORS.all, dash: '1 3', width: 1, points: all.map((r) => [r.step, num(r.ess_seq_norm)]) });
    }
    if (field === 'alpha') series = series.filter((s) => s.name === 'all' || s.name === 'post_tool').slice(0, 1).map((s) => ({ ...s, name: 'α' }));
    const ess = field.startsWith('ess');
    body.leaf(`tl-${pair}-${String(field)}`, lineChart({ id: `tl-${pair}-${String(field)}`, title, yLabel, series, bands, xDomain, yLog: log, xLabel: 'step', yMin: ess ? 0 : undefined, yMax: ess ? 1 : undefined, empty: 'no tokens in this slice' }));
  }
  const shaped = windows.filter((w) => w.shape);
  if (shaped.length) {
    const series: Series[] = [];
    for (const [slice, ws] of [...groupBy(shaped, (w) => w.slice)].sort((a, b) => order(a[0]) - order(b[0]))) {
      if (slice !== 'pre_tool' && slice !== 'post_tool') continue; // the comparison that matters
      const short = slice.replace('_tool', '');
      series.push({ name: `${short} fixed`, color: sliceColor(slice, 0), points: ws.map((w) => [w.step, num(w.shape?.fixed?.ks)]) });
      series.push({ name: `${short} drift-aware`, color: sliceColor(slice, 0), dash: '4 3', points: ws.map((w) => [w.step, num(w.shape?.drift_aware?.ks)]) });
    }
    body.leaf(`tl-${pair}-shape`, lineChart({ id: `tl-${pair}-shape`, title: 'shape change vs baseline (KS)', yLabel: 'KS distance', series, bands, xDomain, xLabel: 'window end step', yMin: 0 }));
  }
  const attributed = windows.filter((w) => w.attribution && w.slice === 'all');
  const attr = attributed.length ? attributed : windows.filter((w) => w.attribution);
  if (attr.length) {
    const parts: [keyof NonNullable<WindowRecord['attribution']>, string][] = [['d_mean', '#000000'], ['alpha_term', '#009E73'], ['pre_term', '#0072B2'], ['post_term', '#D55E00']];
    body.leaf(`tl-${pair}-attribution`, lineChart({ id: `tl-${pair}-attribution`, title: 'Δ mean |ℓ| attribution (shift-share)', yLabel: 'nats', series: parts.map(([k, c]) => ({ name: k, color: c, points: attr.map((w) => [w.step, num(w.attribution?.[k])]) })), bands, xDomain, xLabel: 'window end step' }));
  }
  body.raw('</div></section>');
}

function trainerSection(body: Body, steps: StepEntry[], bands: Band[], xDomain: [number, number]): void {
  const keys = [...new Set(steps.flatMap((s) => Object.keys(s.logs ?? {})))];
  const prefer = ['loss', 'reward', 'kl', 'entropy'];
  keys.sort((a, b) => (prefer.indexOf(a) + 1 || 99) - (prefer.indexOf(b) + 1 || 99) || a.localeCompare(b));
  const knobKeys = [...new Set(steps.flatMap((s) => Object.keys(s.knobs ?? {})))].sort();
  if (!keys.length && !knobKeys.length) return;
  body.raw(`<section id="trainer"><h2>Trainer's own logs</h2><div class="row">`);
  keys.slice(0, 8).forEach((k, i) => body.leaf(`logs-${k}`, lineChart({ id: `logs-${k}`, title: `trainer ${k}`, yLabel: k, series: [{ name: k, color: PALETTE[i % PALETTE.length], points: steps.map((s) => [s.step, num(s.logs?.[k])]) }], bands, xDomain, xLabel: 'step' })));
  if (knobKeys.length) body.leaf('knobs', lineChart({ id: 'knobs', title: 'trainer knobs', yLabel: 'value', series: knobKeys.map((k, i) => ({ name: k, color: PALETTE[(i + 2) % PALETTE.length], points: steps.map((s) => [s.step, num(s.knobs?.[k])]) })), bands, xDomain, xLabel: 'step' }));
  body.raw('</div></section>');
}

function rankSection(body: Body, steps: StepEntry[], bands: Band[], xDomain: [number, number]): void {
  const ranks = [...new Set(steps.flatMap((s) => (s.per_rank ?? []).map((p) => p.rank)))].sort((a, b) => a - b);
  const missing = steps.filter((s) => s.ranks_missing?.length);
  if (ranks.length <= 1 && !missing.length) return;
  body.raw('<section id="ranks"><h2>Per-rank attribution</h2><div class="row">');
  const pairSlices = new Set<string>();
  for (const s of steps) for (const p of s.per_rank ?? []) for (const [pair, sl] of Object.entries(p.pairs)) for (const slice of Object.keys(sl ?? {})) pairSlices.add(`${pair}/${slice}`);
  for (const ps of [...pairSlices].sort()) {
    const [pair, slice] = ps.split('/');
    if (slice !== 'post_tool' && slice !== 'pre_tool') continue; // the contrast that matters; `all` mixes both
    const series = ranks.map((rank, i) => ({
      name: `rank ${rank}`,
      color: PALETTE[i % PALETTE.length],
      points: steps.map((s) => [s.step, num((s.per_rank ?? []).find((p) => p.rank === rank)?.pairs[pair as MetricRecord["pair"]]?.[slice]?.abs_q99)] as [number, number]),
    }));
    if (series.every((s) => s.points.every((p) => !(p[1] > 0)))) continue; // identically 0 (implicit pair)
    body.leaf(`rank-${pair}-${slice}`, lineChart({ id: `rank-${pair}-${slice}`, title: `q99 |ℓ| per rank · ${pair} · ${slice}`, yLabel: '|ℓ| (nats)', yLog: true, series, bands, xDomain, xLabel: 'step' }));
  }
  body.raw('</div>');
  const last = steps.at(-1);
  let table = '';
  if (last?.per_rank?.length) {
    const rows = last.per_rank.map((p) => {
      const cells = Object.entries(p.pairs).flatMap(([pair, sl]) => Object.entries(sl ?? {}).map(([slice, v]) => `<td title="${esc(pair)}/${esc(slice)}">${+(v.abs_q99 ?? NaN).toPrecision(3)}</td>`));
      return `<tr><td>${p.rank}</td><td>${p.tokens}</td>${cells.join('')}</tr>`;
    });
    const heads = Object.entries(last.per_rank[0].pairs).flatMap(([pair, sl]) => Object.keys(sl ?? {}).map((slice) => `<th>q99 ${esc(pair)}/${esc(slice)}</th>`));
    table = `<table class="ranks"><caption>step ${last.step}</caption><tr><th>rank</th><th>tokens</th>${heads.join('')}</tr>${rows.join('')}</table>`;
  }
  if (missing.length) table += `<p class="warn">${missing.length} step(s) finalised with missing ranks, e.g. step ${missing[0].step}: ranks ${missing[0].ranks_missing.join(', ')}</p>`;
  body.leaf('rank-table', `<div id="rank-table">${table}</div>`);
  body.raw('</section>');
}

/** The body of the report / live page for one run. */
export function renderRun(run: RunData): Rendered {
  const steps = [...run.steps.records].sort((a, b) => a.step - b.step);
  const st = story(run);
  const first = steps[0]?.step ?? run.metrics.records[0]?.step ?? 0;
  const lastStep = st.lastStep ?? run.metrics.records.at(-1)?.step ?? null;
  const xDomain: [number, number] = [first, Math.max(first + 1, lastStep ?? first + 1)];
  const audit = run.directives.records;
  const checkpoints = audit.filter((e): e is Extract<AuditEntry, { kind: 'checkpoint' }> => e.kind === 'checkpoint' && !!e.certified);
  const body = new Body();
  body.leaf('summary', headerHtml(run, st));
  body.leaf('what-happened', whatHappened(st));
  body.raw('<nav id="toolbar" class="note"></nav>');
  const byPair = groupBy(run.metrics.records, (r) => r.pair);
  const wByPair = groupBy(run.windows.records, (w) => w.pair);
  if (!byPair.size) body.raw('<p class="note" id="waiting">waiting for the first finalised step…</p>');
  for (const pair of pairOrder(run)) pairSection(body, run, pair, byPair.get(pair as MetricRecord['pair']) ?? [], wByPair.get(pair as MetricRecord['pair']) ?? [], st, xDomain, checkpoints);
  const allBands = bandsOf(st.episodes.filter((e) => SEVERITY_RANK[e.peak] >= 1));
  trainerSection(body, steps, allBands, xDomain);
  rankSection(body, steps, allBands, xDomain);
  const outcome = new Map(st.directives.map((d) => [d.id, `${d.outcome}${d.refused ? ` — refused: ${d.refused}` : ''}`]));
  const a = auditLeaves(audit, outcome);
  body.raw(`<section id="audit"><h2>Findings and directives <span class="note">complete history, oldest first</span></h2>`);
  body.leaf('audit-filters', `<div id="audit-filters">${a.head}</div>`);
  body.raw('<table class="audit"><thead><tr><th>step</th><th>kind</th><th>what</th><th>pair / slice</th><th>detail</th><th>evidence</th></tr></thead><tbody id="audit-rows"></tbody></table><noscript>The table needs JavaScript; the rows are in the page source (script.audit-data).</noscript><div id="audit-data">');
  for (const [id, html] of a.bodies) body.leaf(id, html);
  body.raw('</div></section>');
  return { html: body.parts.join('\n'), lastStep, leaves: body.leaves, layout: body.layout.join('\n'), story: st };
}
