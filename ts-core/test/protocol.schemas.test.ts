// One definition of the wire: validation comes from proto/v1/*.schema.json. ajv (the accept path) and the
// ordered walk (the coded first failure) read the same schemas and must agree; the vectors are regenerated
// byte for byte by proto/gen-vectors.ts, and the Python tables generated from the same files are current.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeHeader, encodeHeader, schemaVerdicts, validateHeader } from '../src/protocol/index.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const VEC = join(ROOT, 'proto', 'v1', 'vectors');
const STAGE_D = /^\/(hist|sums_fields|slice_counts|per_rank)\b/;
/** The walk passes exactly when ajv accepts, or when ajv rejects only stage-D (sketch payload) fields. */
const walkPasses = (v: ReturnType<typeof schemaVerdicts>) => v.ajv || v.ajvPaths.every((p) => STAGE_D.test(p));

const step = {
  type: 'step', version: [1, 0], run_id: 'r1', rank: 0, world_size: 2, step: 3, chunk: { index: 0, count: 1 },
  tokens: 4, n_seqs: 1, buffers: [{ name: 'completion_mask', dtype: 'u8', length: 4 }], implicit: ['policy_vs_old'],
  knobs: { epsilon: 0.2 }, logs: { loss: NaN }, slice_names: ['a'], sent_at: 1.5, sketch: false,
}; // prettier-ignore
const directive = {
  type: 'directive', version: [1, 0], run_id: 'r1', rank: 0, step: 3, metrics: { abs_q99: 1 }, metrics_step: null,
  directive: { id: 'd1', action: 'warn', step: 3, apply_at_step: 4, params: {}, reason: 'x', evidence: {} },
  received: { tokens: 4, n_seqs: 1, slices: { all: 4, pre_tool: 4, post_tool: 0, tool_output: 0 }, checksum: 7 },
}; // prettier-ignore
const ack = { type: 'ack', version: [1, 0], run_id: 'r1', rank: 0, directive_id: 'd1', step: 3, applied: true, changes: [{ knob: 'epsilon', old: 0.2, new: 0.1 }] };
const BAD: unknown[] = [undefined, null, 'x', -1, 1.5, NaN, Infinity, 2 ** 53, {}, [], true];

/** Every field (nested too) replaced by each bad value in turn, or deleted. */
function* mutants(h: Record<string, unknown>): Generator<Record<string, unknown>> {
  const walk = function* (o: Record<string, unknown>, path: string[]): Generator<string[]> {
    for (const [k, v] of Object.entries(o)) {
      if (path.length === 0 && (k === 'type' || k === 'version')) continue;
      yield [...path, k];
      if (v && typeof v === 'object') yield* walk(v as Record<string, unknown>, [...path, k]);
    }
  };
  for (const path of walk(h, [])) {
    for (const bad of BAD) {
      const m = structuredClone(h);
      let o = m as Record<string, unknown>;
      for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
      if (bad === undefined) delete o[path[path.length - 1]];
      else o[path[path.length - 1]] = bad;
      yield m;
    }
  }
}

describe('validation from proto/v1 schemas', () => {
  it('ajv and the ordered walk agree on every mutant of a step, a directive and an ack', () => {
    let n = 0;
    for (const base of [step, directive, ack]) {
      for (const m of mutants(base)) {
        const v = schemaVerdicts(m);
        expect(v.walk === null, `${JSON.stringify(m)}: ajv ${v.ajvPaths}, walk ${v.walk}`).toBe(walkPasses(v));
        n++;
      }
    }
    expect(n).toBeGreaterThan(300);
  });

  it('ajv and the walk agree on every vector header that decodes (stage-D fields aside)', () => {
    let n = 0;
    for (const f of readdirSync(VEC).filter((x) => x.endsWith('.json'))) {
      for (const c of JSON.parse(readFileSync(join(VEC, f), 'utf8')).cases as { frames: string[] }[]) {
        let h: Record<string, unknown>;
        try {
          h = decodeHeader(Buffer.from(c.frames[0], 'hex'));
          const types = ['hello', 'welcome', 'step', 'directive', 'ack', 'error', 'bye'];
          if (typeof h.type !== 'string' || !types.includes(h.type) || JSON.stringify(h.version) !== '[1,0]') continue; // B3/B4
        } catch {
          continue;
        }
        const v = schemaVerdicts(h);
        expect(v.walk === null, `${f} ${JSON.stringify(h).slice(0, 200)}: ajv ${v.ajvPaths}, walk ${v.walk}`).toBe(walkPasses(v));
        n++;
      }
    }
    expect(n).toBeGreaterThan(100);
  });

  it('names the first failure in table order with the documented code', () => {
    const code = (h: Record<string, unknown>) => {
      try {
        validateHeader(decodeHeader(encodeHeader(h)));
        return 'ok';
      } catch (e) {
        return `${(e as { code: string }).code}: ${(e as Error).message}`;
      }
    };
    expect(code(step)).toBe('ok');
    const { tokens: _, ...noTokens } = step;
    expect(code({ ...noTokens, n_seqs: 'x' })).toMatch(/^E_MISSING_FIELD: .*tokens/);
    expect(code({ ...step, run_id: '.bad' })).toMatch(/^E_RUN_ID/);
    expect(code({ ...step, sent_at: Infinity })).toMatch(/^E_FIELD_TYPE: .*sent_at must be a finite number/);
    expect(code({ ...step, buffers: [{ name: 'x', dtype: 'f16', length: 1 }] })).toMatch(/^E_DTYPE/);
    expect(code({ ...step, buffers: [{ name: 'x', dtype: 5, length: 1 }] })).toMatch(/^E_FIELD_TYPE: .*buffers\[0\]\.dtype must be a string/);
    expect(code({ type: 'ack', version: [1, 0], of: 'hello', run_id: 'r1', rank: 0 })).toBe('ok'); // engine-form ack: of, run_id, rank
  });

  it('regenerating the vectors gives byte-identical files', () => {
    const out = mkdtempSync(join(tmpdir(), 'tg-vectors-'));
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'proto', 'gen-vectors.ts'), '--out', out], { encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      const names = readdirSync(VEC).sort();
      expect(readdirSync(out).sort()).toEqual(names);
      for (const f of names) expect(readFileSync(join(out, f)).equals(readFileSync(join(VEC, f))), `${f} differs: run npx tsx proto/gen-vectors.ts`).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
