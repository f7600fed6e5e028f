// The audit table: the complete history (findings, directives, acks, checkpoints), oldest first, in
// chunks of ROWS_PER_BODY rows of data (the live page replaces only the last chunk). Findings and directives
// show by default; checkpoints and acks behind filters; the page script renders one page of rows at a time.
// Evidence is stored here, once.
import type { AuditEntry } from '../store/index.ts';

export const ROWS_PER_BODY = 200;

/** Numbers to 4 significant digits (evidence stays readable and small). */
const round = (v: unknown): unknown => JSON.parse(compactJson(v));

/** Numbers to 4 significant digits: evidence stays readable and small. */
export function compactJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isInteger(x) ? +x.toPrecision(4) : x));
}

/** One table row as data: [step, kind, severity or action, detector or what, where, text, evidence]. The page script builds the
 *  visible page's <tr>s from it (textContent: no markup from the store reaches the DOM). */
export type AuditRow = [number, string, string, string, string, string, unknown];

const DROP = new Set(['hysteresis', 'windows']); // policy constants and the step: the same on every finding
const TOP_SHOWN = 3; // of the engine's top-k |ℓ| tokens (evidence.top_tokens), per finding

function row(e: AuditEntry, outcome: Map<string, string>): AuditRow | null {
  if (e.kind === 'finding') {
    const { top_tokens: tt, ...rest } = e.evidence ?? {};
    // Thresholds are the policy's: kept on the finding that raised an episode, not on each repeat.
    const drop = rest.event === 'raise' || rest.thresholds === undefined ? DROP : new Set([...DROP, 'thresholds']);
    const ev = Object.fromEntries(Object.entries(rest).filter(([k]) => !drop.has(k)));
    const top = Array.isArray(tt) && tt.length ? ` | top |ℓ|: ${tt.slice(0, TOP_SHOWN).map((t: Record<string, unknown>) => `${fmtL(t)} (r${t.rank ?? '?'} s${t.seq ?? '?'} p${t.pos ?? '?'}${t.text !== undefined ? ` ${JSON.stringify(t.text)}` : t.token_id !== undefined ? ` id ${t.token_id}` : ''})`).join(', ')}` : '';
    return [e.step, 'finding', e.severity, e.detector, [e.pair, e.slice, e.rank !== undefined ? `rank ${e.rank}` : ''].filter(Boolean).join(' / '), e.message + top, round(ev)];
  }
  if (e.kind === 'directive') {
    if (e.action === 'noop') return null;
    return [e.step, 'directive', e.action, `→ step ${e.apply_at_step}`, '', `${compactJson(e.params)} ${outcome.get(e.id) ?? ''} | ${e.reason}`, round({ ...e.evidence, findings: undefined })];
  }
  if (e.kind === 'ack') {
    const what = `${e.applied ? (e.refused ? 'partly applied' : 'applied') : 'refused'} by rank ${e.rank}`;
    return [e.step, 'ack', '', what, '', `${e.directive_id}${e.changes?.length ? ` changed ${e.changes.map((c) => `${c.knob} ${c.old ?? '?'}→${c.new}`).join(', ')}` : ''}${e.refused ? ` — refused: ${e.refused}` : ''}`, ''];
  }
  const c = e as Extract<AuditEntry, { kind: 'checkpoint' }> & { status?: string };
  return [c.step, 'checkpoint', '', `checkpoint ${c.status ?? (c.certified ? 'certified' : '')}`, '', `${c.path}${c.reason ? ` — ${c.reason}` : ''}`, ''];
}

function fmtL(t: Record<string, unknown>): string {
  const l = [t.l, t.abs_l, t.value].find((v) => typeof v === 'number') as number | undefined;
  return l === undefined ? '?' : String(+Math.abs(l).toPrecision(3));
}

/** JSON inside <script>: no "</script>" or "<!--" can close it. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

/** Filters and the rows, as [id, html] leaves of ROWS_PER_BODY rows each (data; the script renders a page). */
export function auditLeaves(entries: readonly AuditEntry[], outcome: Map<string, string>): { head: string; bodies: [string, string][]; counts: Record<string, number> } {
  const rows: AuditRow[] = [];
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
    bodies.push([id, `<script type="application/json" class="audit-data" id="${id}">${scriptJson(rows.slice(i, i + ROWS_PER_BODY))}</script>`]);
  }
  const box = (k: string, label: string, on: boolean) => `<label><input type="checkbox" data-filter="${k}"${on ? ' checked' : ''}> ${label} (<span data-count="${k}">${counts[k]}</span>)</label>`;
  const head = `<div class="filters" role="group" aria-label="show rows">${box('finding', 'findings', true)}${box('directive', 'directives', true)}${box('checkpoint', 'checkpoints', false)}${box('ack', 'acks', false)} <span class="pager"></span></div>`;
  return { head, bodies, counts };
}
