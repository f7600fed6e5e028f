// Run data → HTML sections of SVG charts. Used by the static report and the live dashboard, which
// therefore always show the same views.
import type { MetricRecord, PairName, WindowRecord } from '../types.ts';
import type { AuditEntry, RunData, StepEntry } from '../store/index.ts';
import { runWarnings } from '../store/index.ts';
import { cdfChart, esc, fmt, lineChart, type Marker, type Series } from './svg.ts';
import { topTokensHtml } from './evidence.ts';

const SLICE_COLORS: Record<string, string> = { all: '#666', pre_tool: '#1f77b4', post_tool: '#d62728', tool_output: '#999' };
const EXTRA = ['#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#2ca02c'];
const SEVERITY_COLORS: Record<string, string> = { info: '#7f7f7f', warn: '#e6a700', high: '#ff7f0e', critical: '#b00020' };
const ACTION_COLORS: Record<string, string> = { warn: '#e6a700', tighten: '#ff7f0e', rollback: '#7b2cbf', stop: '#000', curriculum: '#2ca02c', noop: '#aaa' };

/** Timeline metrics per pair: [field, title, log-y]. */
export const TIMELINES: [keyof MetricRecord, string, boolean][] = [
  ['abs_q95', 'q95 |ℓ|', false],
  ['abs_q99', 'q99 |ℓ|', false],
  ['abs_q999', 'q99.9 |ℓ|', false],
  ['ess', 'ESS/N (token)', false],
  ['ess_seq', 'ESS/N (sequence)', false],
  ['alpha', 'α = post_tool share', false],
  ['kl_k3', 'KL k3', false],
  ['exceed_2', 'P(|ℓ| > log 2)', false],
];

function sliceColor(slice: string, i: number): string {
  return SLICE_COLORS[slice] ?? EXTRA[i % EXTRA.length];
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

function entryStep(e: AuditEntry): number {
  return e.step;
}

/** Findings and directives as chart markers; at most one per (step, kind) so noisy steps stay legible. */
export function markersFor(entries: readonly AuditEntry[], pair?: PairName): Marker[] {
  const seen = new Map<string, Marker>();
  for (const e of entries) {
    let m: Marker | null = null;
    if (e.kind === 'finding') {
      if (pair && e.pair && e.pair !== pair) continue;
      m = { x: e.step, color: SEVERITY_COLORS[e.severity] ?? '#888', kind: `finding finding-${e.severity}`, label: `step ${e.step} · ${e.severity} · ${e.detector}${e.slice ? ` · ${e.slice}` : ''}`, detail: `${e.message}\n${JSON.stringify(e.evidence, null, 1)}` };
    } else if (e.kind === 'directive') {
      if (e.action === 'noop') continue;
      m = { x: e.step, color: ACTION_COLORS[e.action] ?? '#333', kind: `directive directive-${e.action}`, label: `step ${e.step} · directive ${e.action} (apply at ${e.apply_at_step})`, detail: `${e.reason}\nparams ${JSON.stringify(e.params)}\n${JSON.stringify(e.evidence, null, 1)}` };
    } else if (e.kind === 'checkpoint' && e.certified) {
      m = { x: e.step, color: '#2ca02c', kind: 'checkpoint', label: `step ${e.step} · certified checkpoint`, detail: e.path };
    }
    if (!m) continue;
    const key = `${m.x}|${m.kind}`;
    const prev = seen.get(key);
    if (prev) prev.detail += `\n---\n${m.label}\n${m.detail}`;
    else seen.set(key, m);
  }
  const out = [...seen.values()];
  // Cap: keep the most severe last ones when a run is very noisy.
  return out.length > 400 ? out.slice(-400) : out;
}

function pairSection(pair: PairName, records: MetricRecord[], windows: WindowRecord[], markers: Marker[], firstStep: number, lastStep: number): string {
  const slices = [...new Set(records.map((r) => r.slice))].sort((a, b) => order(a) - order(b));
  const implicit = records.every((r) => r.implicit);
  const out: string[] = [`<section class="pair" id="pair-${esc(pair)}"><h2>${esc(pair)}${implicit ? ' <span class="note">implicit: identically 0 by construction</span>' : ''}</h2>`];

  // CDFs: pre_tool beside post_tool (and any other slice with windows).
  const wBySlice = groupBy(windows, (w) => w.slice);
  const cdfSlices = ['pre_tool', 'post_tool', ...[...wBySlice.keys()].filter((s) => s !== 'pre_tool' && s !== 'post_tool' && s !== 'all')];
  out.push('<div class="row cdfs">');
  // One x domain for every slice of the pair, so pre_tool and post_tool compare at a glance.
  const qs = cdfSlices.flatMap((s) => (wBySlice.get(s as WindowRecord['slice']) ?? []).flatMap((w) => w.cdf.q)).filter((q) => q > 0 && Number.isFinite(q));
  const xDomain: [number, number] | undefined = qs.length ? [qs.reduce((a, b) => Math.min(a, b)), qs.reduce((a, b) => Math.max(a, b))] : undefined;
  for (const slice of cdfSlices) {
    const ws = (wBySlice.get(slice as WindowRecord['slice']) ?? []).sort((a, b) => a.step - b.step);
    const sel = ws.length > 40 ? ws.filter((_, i) => i % Math.ceil(ws.length / 40) === 0 || i === ws.length - 1) : ws;
    out.push(cdfChart({
      id: `cdf-${pair}-${slice}`,
      title: `CDF of |ℓ| · ${slice} · ${ws.length} windows`,
      curves: sel.map((w) => ({ label: `steps ${w.first_step}–${w.step}`, step: w.step, p: w.cdf.p, q: w.cdf.q })),
      xDomain,
      firstStep: ws[0]?.step,
      lastStep: ws.at(-1)?.step,
    }));
  }
  out.push('</div>');

  // Timelines.
  const bySlice = groupBy(records, (r) => r.slice);
  out.push('<div class="row timelines">');
  for (const [field, title] of TIMELINES) {
    const series: Series[] = slices.map((slice, i) => ({
      name: slice,
      color: sliceColor(slice, i),
      dash: slice === 'all' ? '4 3' : undefined,
      points: (bySlice.get(slice) ?? []).map((r) => [r.step, num(r[field])] as [number, number]),
    }));
    if (field === 'ess_seq') {
      for (const [i, slice] of slices.entries()) {
        if (slice !== 'all') continue;
        series.push({ name: 'all len-norm', color: sliceColor(slice, i), dash: '1 3', width: 1, points: (bySlice.get(slice) ?? []).map((r) => [r.step, num(r.ess_seq_norm)]) });
      }
    }
    const alphaOnly = field === 'alpha' ? series.filter((s) => s.name === 'all' || s.name === 'post_tool').slice(0, 1) : series;
    out.push(lineChart({ id: `tl-${pair}-${String(field)}`, title, series: alphaOnly, markers, xLabel: 'step', yMin: field.startsWith('ess') ? 0 : undefined, yMax: field.startsWith('ess') ? 1 : undefined }));
  }
  // Shape change against the baselines, when the stats engine reports it.
  const shaped = windows.filter((w) => w.shape);
  if (shaped.length) {
    const series: Series[] = [];
    for (const [i, [slice, ws]] of [...groupBy(shaped, (w) => w.slice)].entries()) {
      if (slice !== 'pre_tool' && slice !== 'post_tool') continue; // the comparison that matters; keeps the legend legible
      const short = slice.replace('_tool', '');
      series.push({ name: `${short} fixed`, color: sliceColor(slice, i), points: ws.map((w) => [w.step, num(w.shape?.fixed?.ks)]) });
      series.push({ name: `${short} drift-aware`, color: sliceColor(slice, i), dash: '4 3', points: ws.map((w) => [w.step, num(w.shape?.drift_aware?.ks)]) });
    }
    out.push(lineChart({ id: `tl-${pair}-shape`, title: 'shape change vs baseline (KS)', series, markers, xLabel: 'window end step', yMin: 0 }));
  }
  const attributed = windows.filter((w) => w.attribution && w.slice === 'all');
  const attr = attributed.length ? attributed : windows.filter((w) => w.attribution);
  if (attr.length) {
    const parts: [keyof NonNullable<WindowRecord['attribution']>, string][] = [['d_mean', '#333'], ['alpha_term', '#2ca02c'], ['pre_term', '#1f77b4'], ['post_term', '#d62728']];
    out.push(lineChart({ id: `tl-${pair}-attribution`, title: 'Δ mean attribution (shift-share)', series: parts.map(([k, c]) => ({ name: k, color: c, points: attr.map((w) => [w.step, num(w.attribution?.[k])]) })), markers, xLabel: 'window end step' }));
  }
  out.push('</div></section>');
  void firstStep; void lastStep;
  return out.join('');
}

function order(slice: string): number {
  return ({ all: 0, pre_tool: 1, post_tool: 2, tool_output: 3 } as Record<string, number>)[slice] ?? 4;
}

function num(v: unknown): number {
  return typeof v === 'number' ? v : NaN;
}

function trainerSection(steps: StepEntry[], markers: Marker[]): string {
  const keys = [...new Set(steps.flatMap((s) => Object.keys(s.logs ?? {})))];
  const prefer = ['loss', 'reward', 'kl', 'entropy'];
  keys.sort((a, b) => (prefer.indexOf(a) + 1 || 99) - (prefer.indexOf(b) + 1 || 99) || a.localeCompare(b));
  const charts = keys.slice(0, 8).map((k, i) => lineChart({ id: `logs-${k}`, title: `trainer ${k}`, series: [{ name: k, color: EXTRA[i % EXTRA.length], points: steps.map((s) => [s.step, num(s.logs?.[k])]) }], markers, xLabel: 'step' }));
  const knobKeys = [...new Set(steps.flatMap((s) => Object.keys(s.knobs ?? {})))].sort();
  if (knobKeys.length) {
    charts.push(lineChart({ id: 'knobs', title: 'trainer knobs', series: knobKeys.map((k, i) => ({ name: k, color: EXTRA[(i + 2) % EXTRA.length], points: steps.map((s) => [s.step, num(s.knobs?.[k])]) })), markers, xLabel: 'step' }));
  }
  if (!charts.length) return '';
  return `<section id="trainer"><h2>Trainer's own logs</h2><div class="row">${charts.join('')}</div></section>`;
}

function rankSection(steps: StepEntry[], markers: Marker[]): string {
  const ranks = [...new Set(steps.flatMap((s) => (s.per_rank ?? []).map((p) => p.rank)))].sort((a, b) => a - b);
  const missing = steps.filter((s) => s.ranks_missing?.length);
  if (ranks.length <= 1 && !missing.length) return '';
  const out = ['<section id="ranks"><h2>Per-rank attribution</h2><div class="row">'];
  const pairSlices = new Set<string>();
  for (const s of steps) for (const p of s.per_rank ?? []) for (const [pair, sl] of Object.entries(p.pairs)) for (const slice of Object.keys(sl ?? {})) pairSlices.add(`${pair}/${slice}`);
  for (const ps of [...pairSlices].sort()) {
    const [pair, slice] = ps.split('/');
    if (slice !== 'post_tool' && slice !== 'pre_tool' && slice !== 'all') continue;
    const series = ranks.map((rank, i) => ({
      name: `rank ${rank}`,
      color: EXTRA[i % EXTRA.length],
      points: steps.map((s) => [s.step, num((s.per_rank ?? []).find((p) => p.rank === rank)?.pairs[pair as PairName]?.[slice]?.abs_q99)] as [number, number]),
    }));
    out.push(lineChart({ id: `rank-${pair}-${slice}`, title: `q99 |ℓ| per rank · ${pair} · ${slice}`, series, markers, xLabel: 'step' }));
  }
  out.push('</div>');
  // Latest step: which rank carries the tail.
  const last = steps.at(-1);
  if (last?.per_rank?.length) {
    const rows = last.per_rank.map((p) => {
      const cells = Object.entries(p.pairs).flatMap(([pair, sl]) => Object.entries(sl ?? {}).map(([slice, v]) => `<td title="${esc(pair)}/${esc(slice)}">${fmt(v.abs_q99)}</td>`));
      return `<tr><td>${p.rank}</td><td>${p.tokens}</td>${cells.join('')}</tr>`;
    });
    const heads = Object.entries(last.per_rank[0].pairs).flatMap(([pair, sl]) => Object.keys(sl ?? {}).map((slice) => `<th>q99 ${esc(pair)}/${esc(slice)}</th>`));
    out.push(`<table class="ranks"><caption>step ${last.step}</caption><tr><th>rank</th><th>tokens</th>${heads.join('')}</tr>${rows.join('')}</table>`);
  }
  if (missing.length) out.push(`<p class="warn">${missing.length} step(s) finalised with missing ranks, e.g. step ${missing[0].step}: ranks ${missing[0].ranks_missing.join(', ')}</p>`);
  out.push('</section>');
  return out.join('');
}

function auditSection(entries: AuditEntry[]): string {
  const shown = entries.filter((e) => e.kind !== 'directive' || e.action !== 'noop').slice(-100).reverse();
  if (!shown.length) return '<section id="audit"><h2>Findings and directives</h2><p class="note">none</p></section>';
  const rows = shown.map((e) => {
    const what = e.kind === 'finding' ? `${e.severity} · ${e.detector}` : e.kind === 'directive' ? `${e.action} → step ${e.apply_at_step}` : e.kind === 'ack' ? `${e.applied ? 'applied' : 'refused'} ${e.directive_id}` : `checkpoint${e.certified ? ' (certified)' : ''}`;
    const text = e.kind === 'finding' ? e.message : e.kind === 'directive' ? e.reason : e.kind === 'ack' ? (e.refused ?? JSON.stringify(e.changes)) : e.path;
    const ev = e.kind === 'finding' || e.kind === 'directive' ? JSON.stringify(e.evidence) : '';
    return `<tr class="${esc(e.kind)}"><td>${entryStep(e)}</td><td>${esc(e.kind)}</td><td>${esc(what)}</td><td title="${esc(ev)}">${esc(text)}${e.kind === 'finding' ? topTokensHtml(e.evidence) : ''}</td></tr>`;
  });
  const open = shown.length <= 15 ? ' open' : '';
  return `<section id="audit"><h2>Findings and directives</h2><details${open}><summary>${shown.length} latest entries (newest first)</summary><table class="audit"><tr><th>step</th><th>kind</th><th>what</th><th>detail (hover for evidence)</th></tr>${rows.join('')}</table></details></section>`;
}

/** The body of the report / dashboard for one run. */
export function renderRun(run: RunData): { html: string; lastStep: number | null } {
  const steps = [...run.steps.records].sort((a, b) => a.step - b.step);
  const metrics = run.metrics.records;
  const windows = run.windows.records;
  const audit = run.directives.records;
  const lastStep = steps.at(-1)?.step ?? metrics.at(-1)?.step ?? null;
  const firstStep = steps[0]?.step ?? 0;
  const meta = run.meta;
  const findings = audit.filter((e) => e.kind === 'finding').length;
  const directives = audit.filter((e) => e.kind === 'directive' && e.action !== 'noop').length;
  const tokens = steps.reduce((a, s) => a + (s.tokens || 0), 0);
  const warnings = runWarnings(run);
  const head = `<header id="summary" data-last-step="${lastStep ?? ''}"><h1>tailguard · ${esc(meta?.run_id ?? run.dir)}</h1>
<dl><dt>trainer</dt><dd>${esc(meta?.trainer ?? '?')}</dd><dt>world size</dt><dd>${esc(meta?.world_size ?? steps.at(-1)?.world_size ?? '?')}</dd>
<dt>steps</dt><dd id="step-count">${steps.length}</dd><dt>last step</dt><dd id="last-step">${lastStep ?? '–'}</dd><dt>tokens</dt><dd>${tokens.toLocaleString('en')}</dd>
<dt>findings</dt><dd>${findings}</dd><dt>directives</dt><dd>${directives}</dd><dt>engine</dt><dd>${esc(meta?.versions?.tailguard ?? '?')}</dd></dl>
${warnings.map((w) => `<p class="warn">${esc(w)}</p>`).join('')}</header>`;

  const byPair = groupBy(metrics, (r) => r.pair);
  const wByPair = groupBy(windows, (w) => w.pair);
  const allMarkers = markersFor(audit);
  // The trainer's own view first, then what it does not show: the sliced tails.
  const sections: string[] = [head, trainerSection(steps, allMarkers)];
  if (!byPair.size) sections.push('<p class="note" id="waiting">waiting for the first finalised step…</p>');
  for (const [pair, records] of byPair) {
    sections.push(pairSection(pair, records, wByPair.get(pair) ?? [], markersFor(audit, pair), firstStep, lastStep ?? 0));
  }
  sections.push(rankSection(steps, allMarkers));
  sections.push(auditSection(audit));
  return { html: sections.join('\n'), lastStep };
}
