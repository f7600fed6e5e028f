// `tailguard report A B`: two runs overlaid (e.g. the demo's observe vs control): both verdicts, the
// first step each view moved side by side, each run's directives, and the timelines of every pair both
// runs have, A solid and B dashed, on the same axes.
import type { RunData } from '../store/index.ts';
import { page } from './html.ts';
import { isFlatPair, pairOrder, story, type Story } from './story.ts';
import { esc, lineChart, type Series } from './svg.ts';
import { TIMELINES } from './views.ts';

const SLICE = { pre_tool: '#0072B2', post_tool: '#D55E00', all: '#777777' } as Record<string, string>;
const name = (r: RunData) => r.meta?.run_id ?? r.dir;

function directives(st: Story): string {
  if (!st.directives.length) return '<p class="note">no directives</p>';
  return `<ul>${st.directives.map((d) => `<li>step ${d.step} <b>${esc(d.action)}</b> ${esc(d.params)}${d.target ? ` (target step ${d.target.step})` : ''}: <span class="outcome">${esc(d.outcome)}</span>${d.refused ? ` — ${esc(d.refused)}` : ''}</li>`).join('')}</ul>`;
}

export function compareHtml(a: RunData, b: RunData): string {
  const sa = story(a), sb = story(b);
  const views = [...new Set([...sa.onsets.map((o) => o.view), ...sb.onsets.map((o) => o.view)])];
  const at = (st: Story, v: string) => st.onsets.find((o) => o.view === v)?.step ?? '–';
  const parts: string[] = [
    `<header id="summary"><h1>tailguard · ${esc(name(a))} vs ${esc(name(b))}</h1><p class="note">A = ${esc(name(a))} (solid lines), B = ${esc(name(b))} (dashed). ℓ = per-token log-ratio in nats.</p></header>`,
    `<section id="what-happened"><h2>What happened</h2><p class="verdict" id="verdict-a">A: ${esc(sa.verdict)}</p><p class="verdict" id="verdict-b">B: ${esc(sb.verdict)}</p>`,
    `<table id="onsets"><caption>First step each view moved</caption><tr><th>view</th><th>A</th><th>B</th></tr>${views.map((v) => `<tr><td>${esc(v)}</td><td>${at(sa, v)}</td><td>${at(sb, v)}</td></tr>`).join('')}</table>`,
    `<div class="row"><div><h3>A: directives</h3>${directives(sa)}</div><div><h3>B: directives</h3>${directives(sb)}</div></div></section>`,
  ];
  const last = Math.max(sa.lastStep ?? 1, sb.lastStep ?? 1), first = Math.min(sa.firstStep ?? 0, sb.firstStep ?? 0);
  const xDomain: [number, number] = [first, Math.max(first + 1, last)];
  const pairs = pairOrder(a).filter((p) => b.metrics.records.some((r) => r.pair === p) && !(isFlatPair(a, p) && isFlatPair(b, p)));
  for (const pair of pairs) {
    parts.push(`<section class="pair" id="pair-${esc(pair)}"><h2>${esc(pair)}</h2><div class="row">`);
    for (const [field, title, yLabel, log] of TIMELINES) {
      const series: Series[] = [];
      for (const slice of ['pre_tool', 'post_tool']) {
        for (const [run, tag, dash] of [[a, 'A', undefined], [b, 'B', '5 3']] as const) {
          const pts = run.metrics.records.filter((r) => r.pair === pair && r.slice === slice).map((r) => [r.step, r.n > 0 && typeof r[field] === 'number' ? (r[field] as number) : NaN] as [number, number]);
          if (pts.length) series.push({ name: `${tag} ${slice}`, color: SLICE[slice], dash, points: pts });
        }
      }
      parts.push(lineChart({ id: `cmp-${pair}-${String(field)}`, title, yLabel, series, xDomain, yLog: log, xLabel: 'step', empty: 'no tokens in this slice' }));
    }
    parts.push('</div></section>');
  }
  const keys = [...new Set(a.steps.records.flatMap((s) => Object.keys(s.logs ?? {})))].filter((k) => b.steps.records.some((s) => k in (s.logs ?? {})));
  if (keys.length) {
    parts.push('<section id="trainer"><h2>Trainer\'s own logs</h2><div class="row">');
    for (const k of keys.slice(0, 6)) {
      const series = ([[a, 'A', undefined], [b, 'B', '5 3']] as const).map(([run, tag, dash]) => ({ name: tag, color: '#000000', dash, points: run.steps.records.map((s) => [s.step, typeof s.logs?.[k] === 'number' ? (s.logs[k] as number) : NaN] as [number, number]) }));
      parts.push(lineChart({ id: `cmp-logs-${k}`, title: `trainer ${k}`, yLabel: k, series, xDomain, xLabel: 'step' }));
    }
    parts.push('</div></section>');
  }
  return page({ title: `tailguard · ${name(a)} vs ${name(b)}`, body: parts.join('\n'), generated: new Date().toISOString() });
}
