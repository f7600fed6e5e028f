// Codec properties the vectors cannot show: zero-copy views, misaligned frames, round trips, and
// that arbitrary bytes only ever produce ProtocolError.
import { describe, expect, it } from 'vitest';
import { ProtocolError, decodeMessage, encodeHeader, encodeMessage, fnv1a, view, DEFAULT_LIMITS } from '../src/protocol/index.ts';

const V = [1, 0];
function step(T = 6) {
  return encodeMessage(
    { type: 'step', version: V, run_id: 'r', rank: 0, world_size: 1, step: 1, chunk: { index: 0, count: 1 }, tokens: T, n_seqs: 1 },
    { policy_vs_ref: new Float32Array(T).map((_, i) => i / 4), completion_mask: new Uint8Array(T).fill(1), tool_mask: new Uint8Array(T).fill(1), offsets: new Int32Array([0, T]) },
  );
}

describe('codec', () => {
  it('views aligned frames in place (no copy)', () => {
    const frames = step();
    const m = decodeMessage(frames);
    const lr = m.buffers.policy_vs_ref as Float32Array;
    expect(lr.buffer).toBe(frames[1].buffer);
    frames[1].writeFloatLE(9, 0); // mutate the frame: the view sees it
    expect(lr[0]).toBe(9);
  });

  it('copies a misaligned frame and still reads the right values', () => {
    const frames = step();
    const backing = Buffer.alloc(frames[1].length + 1);
    frames[1].copy(backing, 1);
    const mis = backing.subarray(1);
    expect(mis.byteOffset % 4).not.toBe(0);
    const m = decodeMessage([frames[0], mis, ...frames.slice(2)]);
    expect(Array.from(m.buffers.policy_vs_ref)).toEqual([0, 0.25, 0.5, 0.75, 1, 1.25]);
    expect(view(mis, 'f32', 6).buffer).not.toBe(backing.buffer);
  });

  it('round-trips every dtype', () => {
    const arrays = { a: new Float32Array([1.5, -2]), b: new Float64Array([1e300]), c: new Uint8Array([255]), d: new Uint16Array([65535]), e: new Int32Array([-7]), f: new Uint32Array([2 ** 32 - 1]) };
    const m = decodeMessage(encodeMessage({ type: 'bye', version: V, run_id: 'r', rank: 0 }, arrays));
    for (const [k, v] of Object.entries(arrays)) expect(Array.from(m.buffers[k])).toEqual(Array.from(v));
    expect(m.header.buffers!.map((b) => b.dtype)).toEqual(['f32', 'f64', 'u8', 'u16', 'i32', 'u32']);
  });

  it('fnv1a matches the published FNV-1a 32 test values', () => {
    expect(fnv1a(new Uint8Array())).toBe(0x811c9dc5);
    expect(fnv1a(Buffer.from('a'))).toBe(0xe40c292c);
    expect(fnv1a(Buffer.from('foobar'))).toBe(0xbf9cf968);
    expect(fnv1a(Buffer.from('bar'), fnv1a(Buffer.from('foo')))).toBe(0xbf9cf968); // incremental
  });

  it('limits are enforced on raw frames before decoding', () => {
    const big = Buffer.alloc(DEFAULT_LIMITS.max_frame_bytes + 1);
    expect(() => decodeMessage([encodeHeader({ type: 'bye', version: V }), big])).toThrow(expect.objectContaining({ code: 'E_TOO_LARGE' }));
    const many = Array.from({ length: 17 }, () => Buffer.alloc(DEFAULT_LIMITS.max_frame_bytes));
    expect(() => decodeMessage([encodeHeader({ type: 'bye', version: V }), ...many.slice(0, 16), Buffer.alloc(1)])).toThrow(expect.objectContaining({ code: 'E_TOO_LARGE' }));
    expect(() => decodeMessage([])).toThrow(expect.objectContaining({ code: 'E_FRAME_COUNT' }));
  });

  it('random and mutated bytes only ever raise ProtocolError', () => {
    let s = 12345;
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const base = step();
    const codes = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const frames = base.map((f) => Buffer.from(f));
      if (i % 3 === 0) frames[0] = Buffer.from(Array.from({ length: Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256)));
      else for (let k = 0; k < 1 + (i % 5); k++) frames[0][Math.floor(rnd() * frames[0].length)] = Math.floor(rnd() * 256);
      try {
        decodeMessage(frames);
      } catch (e) {
        expect(e).toBeInstanceOf(ProtocolError);
        codes.add((e as ProtocolError).code);
      }
    }
    expect(codes.has('E_INTERNAL')).toBe(false);
    expect(codes.size).toBeGreaterThan(3);
  });
});
