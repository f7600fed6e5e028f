// Findings carry their evidence: top tokens attached to findings (rank findings get their rank's list),
// decoded through a real tokenizer.json layout (report/audit.ts renders them in the findings table).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attachTopTokens, loadDecoder, runDecoder } from '../src/engine/forensics.ts';
import type { Finding, StepResult } from '../src/types.ts';

/** GPT-2 byte-level alphabet, in the order `tokenizers`' ByteLevel.alphabet() sorts it (as python-shim/tests/tiny.py). */
function byteAlphabet(): string[] {
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return out.sort();
}

function tokenizerFile(): { path: string; id: (ch: string) => number } {
  const chars = byteAlphabet();
  const vocab = Object.fromEntries(chars.map((c, i) => [c, i]));
  const j = { model: { type: 'BPE', vocab, merges: [] }, decoder: { type: 'ByteLevel' }, added_tokens: [{ id: 256, content: '<tool_response>' }] };
  const path = join(mkdtempSync(join(tmpdir(), 'tg-tok-')), 'tokenizer.json');
  writeFileSync(path, JSON.stringify(j));
  return { path, id: (ch) => vocab[ch] };
}

describe('forensics evidence', () => {
  it('decodes byte-level pieces, added tokens and byte fallback', () => {
    const { path, id } = tokenizerFile();
    const d = loadDecoder(path);
    expect(d(id('Ġ'))).toBe(' ');
    expect(d(id('Ċ'))).toBe('\n');
    expect(d(id('7'))).toBe('7');
    expect(d(256)).toBe('<tool_response>');
    expect(d(99_999)).toBeUndefined();
    expect(() => loadDecoder(path.replace('.json', '.txt'))).toThrow(/tokenizer\.json/);
    const errors: string[] = [];
    expect(runDecoder({ tokenizer: '/nonexistent/tokenizer.json' }, (m) => errors.push(m))()).toBeNull();
    expect(errors[0]).toMatch(/token ids only/);
  });

  it('attaches the finding\'s pair/slice list (its rank\'s for a rank finding), not to clears', () => {
    const { path, id } = tokenizerFile();
    const t = (rank: number, seq: number, pos: number, value: number, ch?: string) => ({ rank, seq, pos, value, ...(ch && { token_id: id(ch) }) });
    const r = {
      step: 7,
      topTokens: { 'old_vs_rollout/post_tool': [t(1, 3, 5, -2.5, 'Ġ'), t(0, 0, 2, 1.25, '7')] },
      rankTopTokens: { 1: { 'old_vs_rollout/post_tool': [t(1, 3, 5, -2.5, 'Ġ')] } },
    } as unknown as StepResult;
    const f = (o: Partial<Finding>): Finding => ({ detector: 'x', severity: 'high', step: 7, message: 'm', evidence: {}, pair: 'old_vs_rollout', slice: 'post_tool', ...o });
    const fs = [f({}), f({ rank: 1 }), f({ evidence: { event: 'clear' } }), f({ pair: undefined })];
    attachTopTokens(fs, r, runDecoder({ tokenizer: path }, () => {}));
    expect(fs[0].evidence.top_tokens).toEqual([{ ...t(1, 3, 5, -2.5, 'Ġ'), text: ' ' }, { ...t(0, 0, 2, 1.25, '7'), text: '7' }]);
    expect((fs[1].evidence.top_tokens as unknown[]).length).toBe(1);
    expect(fs[2].evidence.top_tokens).toBeUndefined();
    expect(fs[3].evidence.top_tokens).toBeUndefined();
  });
});
