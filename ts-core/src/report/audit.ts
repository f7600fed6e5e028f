// The audit table: the complete history (findings, directives, acks, checkpoints), oldest first, in
// bodies of ROWS_PER_BODY rows (the live page replaces only the last one). Findings and directives show by
// default; checkpoints and acks behind filters; the page script paginates. Evidence is stored here, once.
import type { AuditEntry } from '../store/index.ts';
import { esc } from './svg.ts';

export const ROWS_PER_BODY = 100;

/** Numbers to 4 significant digits: evidence stays readable and small. */
export function compactJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isInteger(x) ? +x.toPrecision(4) : x));
}

function topTokens(ev: Record<string, unknown> | undefined): string {
  const tt = ev?.top_tokens;
  if (!Array.isArray(tt) || !tt.length) return '';
  const cells = tt.slice(0, 10).map((t: Record<string, unknown>) => {
    const l = typeof t.l === 'number' ? t.l : typeof t.abs_l === 'number' ? t.abs_l : typeof t.value === 'number' ? t.value : null;
    const text = t.text ?? t.token ?? t.token_id ?? '';
    const where = ['rank', 'seq', 'pos'].filter((k) => t[k] !== undefined).map((k) => `${k} ${t[k]}`).join(' ');
    return `<li>${l === null ? '' : `|ℓ| ${+Math.abs(l).toPrecision(3)} `}${text !== '' ? `<code>${esc(String(text))}</code> ` : ''}<span class="note">${esc(where)}${t.slice ? ` ${esc(String(t.slice))}` : ''}</span></li>`;
  });
  return `<ol class="toptok" aria-label="top tokens by |ℓ|">${cells.join('')}</ol>`;
}

function row(e: AuditEntry, outcome: Map<string, string>): string | null {
  let what = '', where = '', text = '', ev = '', cls = `k-${e.kind}`;
  if (e.kind === 'finding') {
    what = `<span class="sev sev-${esc(e.severity)}">${esc(e.severity)}</span> ${esc(e.detector)}`;
    where = [e.pair, e.slice, e.rank !== undefined ? `rank ${e.rank}` : ''].filter(Boolean).join(' / ');
    text = esc(e.message) + topTokens(e.evidence);
    const { top_tokens: _t, ...rest } = e.evidence ?? {};
    ev = compactJson(rest);
    cls += ` sev-${e.severity}`;
  } else if (e.kind === 'directive') {
    if (e.action === 'noop') return null;
    what = `<b>${esc(e.action)}</b> → step ${e.apply_at_step}`;
    text = `${esc(compactJson(e.params))} <span class="outcome">${esc(outcome.get(e.id) ?? '')}</span><br>${esc(e.reason)}`;
    ev = compactJson(e.evidence);
    cls += ` act-${e.action}`;
  } else if (e.kind === 'ack') {
    const partly = e.applied && e.refused;
    what = `${e.applied ? (partly ? 'partly applied' : 'applied') : 'refused'} by rank ${e.rank}`;
    text = `${esc(e.directive_id)}${e.changes?.length ? ` changed ${esc(e.changes.map((c) => `${c.knob} ${c.old ?? '?'}→${c.new}`).join(', '))}` : ''}${e.refused ? ` — refused: ${esc(e.refused)}` : ''}`;
  } else {
    const c = e as Extract<AuditEntry, { kind: 'checkpoint' }> & { status?: string };
    what = `checkpoint ${esc(c.status ?? (c.certified ? 'certified' : ''))}`;
    text = `${esc(c.path)}${c.reason ? ` — ${esc(c.reason)}` : ''}`;
  }
  const evCell = ev && ev !== '{}' ? `<details><summary>evidence</summary><code>${esc(ev)}</code></details>` : '';
  return `<tr class="${esc(cls)}" data-step="${e.step}"><td><a href="#step-${e.step}" data-step="${e.step}">${e.step}</a></td><td>${esc(e.kind)}</td><td>${what}</td><td>${esc(where)}</td><td>${text}</td><td>${evCell}</td></tr>`;
}

/** Table head (filters) and the bodies, as [id, html] leaves. */
export function auditLeaves(entries: readonly AuditEntry[], outcome: Map<string, string>): { head: string; bodies: [string, string][]; counts: Record<string, number> } {
  const rows: string[] = [];
  const counts: Record<string, number> = { finding: 0, directive: 0, ack: 0, checkpoint: 0 };
  const sorted = entries.map((e, i) => [e, i] as const).sort((a, b) => a[0].step - b[0].step || a[1] - b[1]);
  for (const [e] of sorted) {
    const r = row(e, outcome);
    if (!r) continue;
    rows.push(r);
    counts[e.kind] = (counts[e.kind] ?? 0) + 1;
  }
  const bodies: [string, string][] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_BODY) {
    const id = `audit-b${i / ROWS_PER_BODY}`;
    bodies.push([id, `<tbody id="${id}">${rows.slice(i, i + ROWS_PER_BODY).join('')}</tbody>`]);
  }
  const box = (k: string, label: string, on: boolean) => `<label><input type="checkbox" data-filter="${k}"${on ? ' checked' : ''}> ${label} (<span data-count="${k}">${counts[k]}</span>)</label>`;
  const head = `<div class="filters" role="group" aria-label="show rows">${box('finding', 'findings', true)}${box('directive', 'directives', true)}${box('checkpoint', 'checkpoints', false)}${box('ack', 'acks', false)} <span class="pager"></span></div>`;
  return { head, bodies, counts };
}
