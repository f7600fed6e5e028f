// The top of the page: the run header (with the definition of ℓ and its units) and "What happened":
// the verdict, the first step each view moved, one row per detector episode, one row per directive.
import type { RunData } from '../store/index.ts';
import { runWarnings } from '../store/index.ts';
import { legend } from './lane.ts';
import type { Story } from './story.ts';
import { esc } from './svg.ts';

const stepLink = (s: number | null) => (s === null ? '–' : `<a href="#step-${s}" data-step="${s}">${s}</a>`);

export function headerHtml(run: RunData, st: Story): string {
  const meta = run.meta;
  const steps = run.steps.records;
  const audit = run.directives.records;
  const findings = audit.filter((e) => e.kind === 'finding').length;
  const tokens = steps.reduce((a, s) => a + (s.tokens || 0), 0);
  const warnings = runWarnings(run);
  const gaps = stepGaps(steps.map((s) => s.step));
  const missing = steps.filter((s) => s.ranks_missing?.length).length;
  return `<header id="summary" data-last-step="${st.lastStep ?? ''}"><h1>tailguard · ${esc(meta?.run_id ?? run.dir)}</h1>
<dl><dt>trainer</dt><dd>${esc(meta?.trainer ?? '?')}</dd><dt>world size</dt><dd>${esc(meta?.world_size ?? steps.at(-1)?.world_size ?? '?')}</dd>
<dt>steps</dt><dd id="step-count">${st.steps}</dd><dt>last step</dt><dd id="last-step">${st.lastStep ?? '–'}</dd><dt>tokens</dt><dd>${tokens.toLocaleString('en')}</dd>
<dt>findings</dt><dd>${findings}</dd><dt>directives</dt><dd>${st.directives.length}</dd><dt>window</dt><dd>${esc(meta?.window ?? '?')} steps</dd><dt>engine</dt><dd>${esc(meta?.versions?.tailguard ?? '?')}</dd></dl>
<p class="note" id="defs">ℓ = log π<sub>a</sub>(token) − log π<sub>b</sub>(token), per generated token, for each pair a_vs_b (e.g. policy_vs_ref: policy against reference); natural log, so ℓ and |ℓ| are in <b>nats</b> (|ℓ| = 0.69 means a probability ratio of 2). Quantiles (q99 …) are of |ℓ| over the step's tokens in a slice; ESS/N is in (0, 1]; KL k3 is in nats per token. pre_tool / post_tool: model tokens before / after the first tool output in a completion. Shaded bands are detector episodes; click an event or a table row to mark its step on every chart.</p>
${gaps ? `<p class="note" id="gaps">Gaps: ${esc(gaps)} never finalised (no data in the store: the engine was down or the trainer skipped them); lines break there.${missing ? ` ${missing} step(s) finalised with ranks missing (see Per-rank).` : ''}</p>` : missing ? `<p class="note" id="gaps">${missing} step(s) finalised with ranks missing (see Per-rank).</p>` : ''}
${warnings.map((w) => `<p class="warn">${esc(w)}</p>`).join('')}</header>`;
}

function stepGaps(steps: number[]): string {
  const s = [...new Set(steps)].sort((a, b) => a - b);
  const runs: string[] = [];
  let total = 0;
  for (let i = 1; i < s.length; i++) {
    if (s[i] - s[i - 1] <= 1) continue;
    total += s[i] - s[i - 1] - 1;
    runs.push(s[i] - s[i - 1] === 2 ? `step ${s[i] - 1}` : `steps ${s[i - 1] + 1}–${s[i] - 1}`);
  }
  return total ? `${runs.slice(0, 5).join(', ')}${runs.length > 5 ? ` and ${runs.length - 5} more ranges` : ''}` : '';
}

const OUTCOME_CLASS: Record<string, string> = { applied: 'ok', refused: 'bad', 'partly applied': 'part', 'no ack': 'none' };

export function whatHappened(st: Story): string {
  const onsetRows = st.onsets.map((o) => `<tr><td>${esc(o.view)}</td><td>${stepLink(o.step)}</td></tr>`).join('');
  const epRows = st.episodes.map((e) => `<tr class="sev-${esc(e.peak)}"><td>${esc(e.detector)}</td><td>${esc([e.pair, e.slice].filter(Boolean).join(' / ') || (e.rank !== undefined ? `rank ${e.rank}` : '–'))}</td><td>${stepLink(e.first)}</td><td>${stepLink(e.cleared ?? e.last)}${e.cleared !== null ? ' (cleared)' : ''}</td><td><span class="sev sev-${esc(e.peak)}">${esc(e.peak)}</span> at ${stepLink(e.peakStep)}</td><td>${e.count}</td></tr>`).join('');
  const dRows = st.directives.map((d) => `<tr class="act-${esc(d.action)}"><td>${stepLink(d.step)}</td><td><b>${esc(d.action)}</b></td><td>${esc(d.params)}</td><td>${d.target ? `step ${d.target.step} <code>${esc(d.target.path)}</code>` : '–'}</td><td>${d.apply_at_step}</td><td><span class="outcome ${OUTCOME_CLASS[d.outcome]}">${esc(d.outcome)}</span>${d.refused ? ` — refused: ${esc(d.refused)}` : ''}</td></tr>`).join('');
  const base = st.baseline ? `baseline steps ${st.baseline[0]}–${st.baseline[1] - 1}; moved = 3 consecutive steps outside median ± max(4·MAD, 25%, 0.01), worsening side` : 'too few steps for a baseline';
  return `<section id="what-happened"><h2>What happened</h2>
<p id="verdict" class="verdict">${esc(st.verdict)}</p>
<div class="row wh">
<table id="onsets"><caption>First step each view moved <span class="note">(${esc(base)})</span></caption><tr><th>view</th><th>first step</th></tr>${onsetRows || '<tr><td colspan="2">–</td></tr>'}</table>
<table id="episodes"><caption>Detector episodes <span class="note">(findings ≤ 10 steps apart)</span></caption><tr><th>detector</th><th>pair / slice</th><th>first</th><th>last</th><th>peak</th><th>findings</th></tr>${epRows || '<tr><td colspan="6">none</td></tr>'}</table>
</div>
<table id="directives"><caption>Directives and what the trainer did with them</caption><tr><th>step</th><th>action</th><th>key params</th><th>rollback target</th><th>apply at</th><th>outcome</th></tr>${dRows || '<tr><td colspan="6">none</td></tr>'}</table>
<div class="legend-row">${legend()}</div></section>`;
}
