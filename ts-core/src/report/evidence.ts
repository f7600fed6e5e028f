// A finding's top tokens (evidence.top_tokens, engine/forensics.ts) as a compact HTML list for the
// report's findings table: which rank, sequence and position the tail comes from, and the token.
import type { TopToken } from '../types.ts';
import { esc } from './svg.ts';

/** `<ol class="top-tokens">` of at most `max` tokens, or '' when the evidence has none. */
export function topTokensHtml(evidence: unknown, max = 5): string {
  const list = (evidence as { top_tokens?: TopToken[] } | null)?.top_tokens;
  if (!Array.isArray(list) || !list.length) return '';
  const items = list.slice(0, max).map((t) => {
    const tok = t.text !== undefined ? ` ${JSON.stringify(t.text)}` : t.token_id !== undefined ? ` id ${t.token_id}` : '';
    const v = Number(t.value);
    return `<li>ℓ ${v >= 0 ? '+' : ''}${Number.isFinite(v) ? v.toPrecision(3) : String(t.value)} · rank ${t.rank} seq ${t.seq} pos ${t.pos}${esc(tok)}</li>`;
  });
  // inline style: the list renders the same in the report and the live page without stylesheet changes
  return `<ol class="top-tokens" style="${STYLE}" title="top tokens by |ℓ| at this step">${items.join('')}</ol>`;
}

const STYLE = 'margin:2px 0 0 1.2em;padding:0;font:11px ui-monospace,monospace;color:#555';
