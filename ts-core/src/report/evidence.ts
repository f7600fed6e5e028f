// A finding's top tokens (evidence.top_tokens, engine/forensics.ts) as one line of plain text for the
// report's findings table (the page renders rows with textContent): which rank, sequence and position the
// tail comes from, the signed ℓ and the token.
import type { TopToken } from '../types.ts';

/** `" | top tokens: ℓ -2.50 rank 1 seq 3 pos 5 " ", …"` for at most `max` tokens, or '' when there are none. */
export function topTokensText(list: unknown, max = 5): string {
  if (!Array.isArray(list) || !list.length) return '';
  const items = (list as TopToken[]).slice(0, max).map((t) => {
    const v = Number(t.value);
    const l = Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${v.toPrecision(3)}` : String(t.value);
    const tok = t.text !== undefined ? ` ${JSON.stringify(t.text)}` : t.token_id !== undefined ? ` id ${t.token_id}` : '';
    return `ℓ ${l} rank ${t.rank} seq ${t.seq} pos ${t.pos}${tok}`;
  });
  return ` | top tokens: ${items.join(', ')}${list.length > max ? ', …' : ''}`;
}
