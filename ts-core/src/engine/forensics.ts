// Findings carry their evidence: the step's top-k tokens by |ℓ| (stats/topk.ts) for the finding's pair ×
// slice (its rank's own list for a rank finding), named by token id and, when the run's tokenizer is at hand,
// by decoded text. The shim announces the tokenizer in hello's `config.tokenizer` (a tokenizer.json path, with
// `send_token_ids`); the engine reads it once, on the first finding that names a token id.
import { readFileSync, statSync } from 'node:fs';
import type { Finding, StepResult, TopToken } from '../types.ts';

const MAX_TOKENIZER_BYTES = 64 << 20;

/** id → decoded text of one token. */
export type Decode = (id: number) => string | undefined;

/** GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100 upwards (inverse here). */
const BYTE_OF: Map<string, number> = (() => {
  const m = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    m.set(String.fromCodePoint(printable ? b : 256 + extra++), b);
  }
  return m;
})();
const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Read a Hugging Face tokenizer.json into an id → text decoder (byte-level, metaspace, byte-fallback and WordPiece pieces). */
export function loadDecoder(path: string): Decode {
  if (!path.endsWith('.json')) throw new Error(`tokenizer ${path}: expected a tokenizer.json file`);
  if (statSync(path).size > MAX_TOKENIZER_BYTES) throw new Error(`tokenizer ${path}: larger than ${MAX_TOKENIZER_BYTES} bytes`);
  const j = JSON.parse(readFileSync(path, 'utf8'));
  const pieces = new Map<number, string>();
  const vocab = j?.model?.vocab;
  if (Array.isArray(vocab)) vocab.forEach((e: unknown, i: number) => pieces.set(i, String(Array.isArray(e) ? e[0] : e))); // Unigram
  else if (vocab && typeof vocab === 'object') for (const [p, id] of Object.entries(vocab)) pieces.set(Number(id), p);
  else throw new Error(`tokenizer ${path}: no model.vocab`);
  const added = new Map<number, string>();
  for (const a of j.added_tokens ?? []) if (Number.isInteger(a?.id)) added.set(a.id, String(a.content));
  const dec = JSON.stringify(j.decoder ?? {});
  const byteLevel = dec.includes('"ByteLevel"'), metaspace = dec.includes('Metaspace') || dec.includes('▁');
  const wordPiece = dec.includes('"WordPiece"');
  return (id) => {
    const a = added.get(id);
    if (a !== undefined) return a;
    const p = pieces.get(id);
    if (p === undefined) return undefined;
    const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(p); // byte fallback
    if (hex) return utf8.decode(Uint8Array.of(parseInt(hex[1], 16)));
    if (byteLevel) {
      const bytes: number[] = [];
      for (const ch of p) bytes.push(BYTE_OF.get(ch) ?? 63);
      return utf8.decode(Uint8Array.from(bytes));
    }
    if (metaspace) return p.replaceAll('▁', ' ');
    if (wordPiece) return p.startsWith('##') ? p.slice(2) : ` ${p}`;
    return p;
  };
}

/**
 * The decoder for a run (hello's `config.tokenizer`), loaded lazily and once; null when there is none or
 * it cannot be read (`onError` says why, once): findings then carry token ids without text.
 */
export function runDecoder(config: Record<string, unknown>, onError: (msg: string) => void): () => Decode | null {
  const path = typeof config.tokenizer === 'string' ? config.tokenizer : null;
  let d: Decode | null | undefined;
  return () => {
    if (d !== undefined) return d;
    d = null;
    if (!path) return d;
    try {
      d = loadDecoder(path);
    } catch (e) {
      onError(`forensics: cannot read the run's tokenizer, findings name token ids only: ${(e as Error).message}`);
    }
    return d;
  };
}

/** The list a finding's evidence gets: its rank's own list for a rank finding, else the merged one. */
function listFor(f: Finding, r: StepResult): TopToken[] | undefined {
  if (!f.pair) return undefined;
  const key = `${f.pair}/${f.slice ?? 'all'}`;
  if (f.rank !== undefined) return r.rankTopTokens?.[f.rank]?.[key];
  return r.topTokens?.[key];
}

/** Add `evidence.top_tokens` to every raised finding (not to clears) that names a pair. */
export function attachTopTokens(findings: Finding[], r: StepResult, decoder?: () => Decode | null): void {
  for (const f of findings) {
    if (f.evidence?.event === 'clear') continue;
    const list = listFor(f, r);
    if (!list?.length) continue;
    const decode = list.some((t) => t.token_id !== undefined) ? decoder?.() : null;
    f.evidence.top_tokens = list.map((t) => {
      const text = decode && t.token_id !== undefined ? decode(t.token_id) : undefined;
      return text === undefined ? { ...t } : { ...t, text };
    });
  }
}
