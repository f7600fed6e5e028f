// The TypeScript golden-vector runner (proto/README.md "How to write a vector runner").
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { ProtocolError, decodeMessage, MESSAGE_TYPES } from '../src/protocol/index.ts';

const PROTO = join(import.meta.dirname, '..', '..', 'proto', 'v1');
const VEC = join(PROTO, 'vectors');
const load = (p: string) => JSON.parse(readFileSync(p, 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false });
const fileSchema = ajv.compile(load(join(PROTO, 'vector-file.schema.json')));
const headerSchemas = Object.fromEntries(MESSAGE_TYPES.map((t) => [t, ajv.compile(load(join(PROTO, `${t}.schema.json`)))]));

// {"$float": "NaN"} -> NaN, recursively.
function revive(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (Object.keys(o).length === 1 && typeof o.$float === 'string') return Number(o.$float);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, revive(x)]));
  }
  return v;
}
// JSON Schema has no NaN/Inf: replace by 0 before schema validation.
const finiteOnly = (v: unknown): unknown =>
  typeof v === 'number' ? (Number.isFinite(v) ? v : 0) : Array.isArray(v) ? v.map(finiteOnly) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, finiteOnly(x)])) : v;

const files = readdirSync(VEC).filter((f) => f.endsWith('.json')).sort();

describe('golden vectors', () => {
  it('exist, and every file validates against vector-file.schema.json', () => {
    expect(files.length).toBeGreaterThanOrEqual(8);
    for (const f of files) expect(fileSchema(load(join(VEC, f))), `${f}: ${ajv.errorsText(fileSchema.errors)}`).toBe(true);
  });

  let total = 0;
  for (const f of files) {
    const body = load(join(VEC, f));
    it(`${f}: ${body.cases.length} cases decode to their meaning or error`, () => {
      body.cases.forEach((c: any, i: number) => {
        const label = `${f}#${i} ${c.description}`;
        const frames = c.frames.map((h: string) => new Uint8Array(Buffer.from(h, 'hex')));
        let msg;
        try {
          msg = decodeMessage(frames);
        } catch (e) {
          expect(e, label).toBeInstanceOf(ProtocolError);
          expect(c.valid, `${label}: unexpected ${(e as Error).message}`).toBe(false);
          expect((e as ProtocolError).code, label).toBe(c.error);
          total++;
          return;
        }
        expect(c.valid, `${label}: should fail with ${c.error}`).toBe(true);
        const want = revive(c.meaning) as { header: unknown; buffers: Record<string, number[]> };
        expect(msg.header, label).toEqual(want.header);
        expect(Object.keys(msg.buffers).sort(), label).toEqual(Object.keys(want.buffers).sort());
        for (const [name, values] of Object.entries(want.buffers)) expect(Array.from(msg.buffers[name]), `${label} ${name}`).toEqual(values);
        const schema = headerSchemas[(msg.header as { type: string }).type];
        expect(schema(finiteOnly(msg.header)), `${label}: ${ajv.errorsText(schema.errors)}`).toBe(true);
        total++;
      });
    });
  }
  it('ran every case', () => {
    const n = files.reduce((s, f) => s + load(join(VEC, f)).cases.length, 0);
    expect(n).toBeGreaterThan(100);
    expect(total).toBe(n);
  });
});
