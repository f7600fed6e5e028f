// Client strings that collide with JavaScript built-ins (`constructor`, `__proto__`, `toString`,
// `hasOwnProperty`) as directive ids, buffer names, dtypes and run ids get the documented answer, never
// E_INTERNAL; invalid UTF-8 in a header str is rejected (E_HEADER_DECODE). Real engine glue, in process.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EngineServer } from '../src/transport/server.ts';
import { buildPipeline } from '../src/engine/pipeline.ts';
import { silentLogger } from '../src/log.ts';
import { encodeHeader, encodeMessage } from '../src/protocol/index.ts';

const BUILTINS = ['constructor', '__proto__', 'toString', 'hasOwnProperty'];
const V = [1, 1];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tg-hostile-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function engine() {
  const server = new EngineServer({ endpoint: 'inproc://unused', log: silentLogger(), factory: buildPipeline, runDir: dir });
  const out: Record<string, any>[] = [];
  (server as unknown as { reply: (id: Buffer, h: Record<string, any>) => void }).reply = (_id, h) => void out.push(h);
  const send = (frames: Buffer[]) => {
    const n = out.length;
    server.handle(Buffer.from('conn-1'), frames);
    return out.slice(n);
  };
  return { server, send };
}

const step = (runId: string, s: number, extra: { name: string; dtype: string }[] = []) => {
  const frames = encodeMessage(
    { type: 'step', version: V, run_id: runId, rank: 0, world_size: 1, step: s, chunk: { index: 0, count: 1 }, tokens: 2, n_seqs: 1 },
    { completion_mask: new Uint8Array([1, 1]), tool_mask: new Uint8Array([1, 1]), offsets: new Int32Array([0, 2]), policy_vs_ref: new Float32Array([0.1, -0.1]) },
  );
  if (!extra.length) return frames;
  const h = encodeHeader({
    type: 'step', version: V, run_id: runId, rank: 0, world_size: 1, step: s, chunk: { index: 0, count: 1 }, tokens: 2, n_seqs: 1,
    buffers: [
      { name: 'completion_mask', dtype: 'u8', length: 2 }, { name: 'tool_mask', dtype: 'u8', length: 2 }, { name: 'offsets', dtype: 'i32', length: 2 },
      { name: 'policy_vs_ref', dtype: 'f32', length: 2 }, ...extra.map((e) => ({ ...e, length: 1 })),
    ],
  });
  return [h, ...frames.slice(1), ...extra.map(() => Buffer.from([7]))];
};

describe('hostile client strings', () => {
  it('built-in names as directive ids, buffer names, dtypes and run ids', () => {
    const { send } = engine();
    for (const runId of ['constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      expect(send([encodeHeader({ type: 'hello', version: V, run_id: runId, rank: 0, world_size: 1, trainer: 't' })])[0]).toMatchObject({ type: 'welcome', run_id: runId });
      expect(send(step(runId, 0))[0]).toMatchObject({ type: 'directive', run_id: runId, step: 0 });
    }
    expect(send([encodeHeader({ type: 'hello', version: V, run_id: '__proto__', rank: 0, world_size: 1, trainer: 't' })])[0]).toMatchObject({ code: 'E_RUN_ID' });
    for (const id of BUILTINS) {
      // a client ack gets no reply; what matters is that no E_INTERNAL comes back
      expect(send([encodeHeader({ type: 'ack', version: V, run_id: 'constructor', rank: 0, directive_id: id, step: 1, applied: true })])).toEqual([]);
    }
    let s = 1;
    for (const name of BUILTINS) {
      // an unknown buffer name with a valid dtype is accepted and ignored
      expect(send(step('constructor', s, [{ name, dtype: 'u8' }]))[0]).toMatchObject({ type: 'directive', step: s });
      s++;
      expect(send(step('constructor', s, [{ name: 'extra', dtype: name }]))[0]).toMatchObject({ type: 'error', code: 'E_DTYPE' });
    }
  });

  it('invalid UTF-8 in a header str is E_HEADER_DECODE', () => {
    const { send } = engine();
    for (const bytes of [[0xff, 0xfe], [0xc0, 0xaf], [0xed, 0xa0]]) {
      const h = encodeHeader({ type: 'hello', version: V, run_id: 'utf', rank: 0, world_size: 1, trainer: 'AB' });
      const at = h.indexOf(Buffer.from('AB'));
      h[at] = bytes[0];
      h[at + 1] = bytes[1];
      expect(send([h])[0]).toMatchObject({ type: 'error', code: 'E_HEADER_DECODE' });
    }
  });
});
