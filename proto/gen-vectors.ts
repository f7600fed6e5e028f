// Generates proto/v1/vectors/*.json: `npx tsx proto/gen-vectors.ts` (`--out DIR` writes elsewhere; the
// vitest vectors test regenerates into a temp dir and requires byte-identical files). Canonical messages are
// encoded with the engine's pinned encoder; interop cases are written byte by byte with `mp`
// below so they show exactly the msgpack forms other encoders (Python's msgpack) produce.
// Every case is decoded again by the engine's codec before the files are written: a case whose
// outcome disagrees with what it declares aborts the run.
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DEFAULT_LIMITS,
  ProtocolError,
  decodeMessage,
  encodeHeader,
  encodeMessage,
  type TypedArray,
} from '../ts-core/src/protocol/index.ts';
import { sketchFile } from './gen-vectors-sketch.ts';

const outArg = process.argv.indexOf('--out');
const OUT = outArg > 0 ? process.argv[outArg + 1] : join(dirname(fileURLToPath(import.meta.url)), 'v1', 'vectors');
const V = [1, 0];

// ---- a tiny explicit msgpack writer -------------------------------------------------------
type Bytes = number[];
const be = (v: bigint, n: number): Bytes => Array.from({ length: n }, (_, i) => Number((v >> BigInt(8 * (n - 1 - i))) & 0xffn));
const utf8 = (s: string): Bytes => [...Buffer.from(s, 'utf8')];
const mp = {
  nil: (): Bytes => [0xc0],
  bool: (b: boolean): Bytes => [b ? 0xc3 : 0xc2],
  fixint: (v: number): Bytes => [v & 0xff],
  u8: (v: number): Bytes => [0xcc, v],
  u16: (v: number): Bytes => [0xcd, ...be(BigInt(v), 2)],
  u32: (v: number): Bytes => [0xce, ...be(BigInt(v), 4)],
  u64: (v: bigint): Bytes => [0xcf, ...be(v, 8)],
  i8: (v: number): Bytes => [0xd0, v & 0xff],
  i64: (v: bigint): Bytes => [0xd3, ...be(BigInt.asUintN(64, v), 8)],
  f32: (v: number): Bytes => {
    const b = Buffer.alloc(4);
    b.writeFloatBE(v);
    return [0xca, ...b];
  },
  f64: (v: number): Bytes => {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return [0xcb, ...b];
  },
  str: (s: string): Bytes => {
    const u = utf8(s);
    return u.length < 32 ? [0xa0 | u.length, ...u] : [0xd9, u.length, ...u];
  },
  str8: (s: string): Bytes => [0xd9, utf8(s).length, ...utf8(s)],
  bin: (b: Bytes): Bytes => [0xc4, b.length, ...b],
  arr: (items: Bytes[]): Bytes => [0x90 | items.length, ...items.flat()],
  /** fixmap (what Python's msgpack writes); keys given as plain strings are fixstr. */
  map: (entries: [string | Bytes, Bytes][]): Bytes => [0x80 | entries.length, ...entries.flatMap(([k, v]) => [...(typeof k === 'string' ? mp.str(k) : k), ...v])],
  map16: (entries: [string, Bytes][]): Bytes => [0xde, 0, entries.length, ...entries.flatMap(([k, v]) => [...mp.str(k), ...v])],
  map32: (entries: [string, Bytes][]): Bytes => [0xdf, 0, 0, 0, entries.length, ...entries.flatMap(([k, v]) => [...mp.str(k), ...v])],
  /** Any plain value through the canonical encoder. */
  val: (v: unknown): Bytes => [...encodeHeader(v as Record<string, unknown>)],
};

// ---- cases ----------------------------------------------------------------------------------
interface Case {
  description: string;
  frames: string[];
  valid: boolean;
  meaning?: { header: unknown; buffers: Record<string, unknown[]> };
  error?: string;
}
const hex = (f: Uint8Array | Bytes) => Buffer.from(f as Uint8Array).toString('hex');
// JSON cannot carry NaN/±Inf: the vector format writes them as {"$float": "NaN" | "Infinity" | "-Infinity"}.
const jnum = (x: number): unknown => (Number.isFinite(x) ? x : { $float: String(x) });
const jval = (v: unknown): unknown =>
  typeof v === 'number' ? jnum(v) : Array.isArray(v) ? v.map(jval) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jval(x)])) : v;

/** A valid case: the meaning is what the codec must decode, written by hand (never read back). */
function ok(description: string, frames: (Uint8Array | Bytes)[], header: unknown, buffers: Record<string, TypedArray | number[]> = {}): Case {
  const b = Object.fromEntries(Object.entries(buffers).map(([k, a]) => [k, Array.from(a as ArrayLike<number>, jnum)]));
  return { description, frames: frames.map(hex), valid: true, meaning: { header: jval(header), buffers: b } };
}
const bad = (description: string, frames: (Uint8Array | Bytes)[], error: string): Case => ({ description, frames: frames.map(hex), valid: false, error });

/** A typical two-sequence step: seq 0 = [m m T T m], seq 1 = [m m m] (m model token, T tool output). */
function stepParts(over: Record<string, unknown> = {}) {
  const header: Record<string, unknown> = {
    type: 'step', version: V, run_id: 'run-a', rank: 0, world_size: 2, step: 7,
    chunk: { index: 0, count: 1 }, tokens: 8, n_seqs: 2, implicit: ['policy_vs_old'],
    knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28 }, logs: { loss: 0.125, reward: 0.5 }, sent_at: 1767225600.25, ...over,
  };
  const buffers: Record<string, TypedArray> = {
    policy_vs_ref: new Float32Array([0.5, -0.25, 0, 0, 1.5, -2, 0.125, 3]),
    completion_mask: new Uint8Array([1, 1, 1, 1, 1, 1, 1, 1]),
    tool_mask: new Uint8Array([1, 1, 0, 0, 1, 1, 1, 1]),
    offsets: new Int32Array([0, 5, 8]),
    advantages: new Float32Array([1, -1]),
  };
  return { header, buffers };
}
/** A message from its parts, with buffers replaced or (null) dropped: frames, the decoded header, the buffers. */
function assemble({ header, buffers }: { header: Record<string, unknown>; buffers: Record<string, TypedArray> }, bufOver: Record<string, TypedArray | null>) {
  for (const [k, v] of Object.entries(bufOver)) if (v === null) delete buffers[k]; else buffers[k] = v;
  const frames = encodeMessage(header, buffers);
  const full = { ...header, buffers: Object.entries(buffers).map(([name, a]) => ({ name, dtype: dtypeName(a), length: a.length })) };
  return { frames, header: full, buffers };
}
const stepMsg = (over: Record<string, unknown> = {}, bufOver: Record<string, TypedArray | null> = {}) => assemble(stepParts(over), bufOver);
const dtypeName = (a: TypedArray) =>
  a instanceof Float32Array ? 'f32' : a instanceof Float64Array ? 'f64' : a instanceof Uint16Array ? 'u16' : a instanceof Int32Array ? 'i32' : a instanceof Uint32Array ? 'u32' : 'u8';
/** Re-encode a step whose header has been edited by hand (frames kept). */
function editedStep(edit: (h: Record<string, any>) => void, frameEdit?: (f: Buffer[]) => Buffer[]) {
  const { header, frames } = stepMsg();
  const h = structuredClone(header) as Record<string, any>;
  edit(h);
  const fs = [encodeHeader(h), ...frames.slice(1)];
  return frameEdit ? frameEdit(fs) : fs;
}

const hello = { type: 'hello', version: V, run_id: 'run-a', rank: 0, world_size: 2, trainer: 'grpo' };
const files: Record<string, { description: string; cases: Case[] }> = {};

files['01.hello'] = {
  description: 'hello: the first message of every session (shim → engine). No buffer frames.',
  cases: [
    ok('minimal hello (canonical encoder)', [encodeHeader(hello)], hello),
    (() => {
      const h = { ...hello, mode: 'raw', checksum: true, config: { beta: 0.04, num_iterations: 2, loss_type: 'dapo', use_vllm: false }, client: { name: 'tailguard-py', version: '0.1.0' } };
      return ok('hello with every optional field', [encodeHeader(h)], h);
    })(),
    (() => {
      const h = { ...hello, version: [1, 7], future_field: { anything: [1, 'two'] } };
      return ok('a higher minor version and unknown fields are accepted; unknown fields are kept in the decoded header and ignored', [encodeHeader(h)], h);
    })(),
    ok(
      'hello as Python msgpack writes it (fixmap, fixstr, positive fixint)',
      [mp.map([['type', mp.str('hello')], ['version', mp.arr([mp.fixint(1), mp.fixint(0)])], ['run_id', mp.str('run-a')], ['rank', mp.fixint(1)], ['world_size', mp.fixint(2)], ['trainer', mp.str('rloo')]])],
      { ...hello, rank: 1, trainer: 'rloo' },
    ),
    bad('missing trainer', [encodeHeader(omit(hello, 'trainer'))], 'E_MISSING_FIELD'),
    bad('run_id with a space', [encodeHeader({ ...hello, run_id: 'my run' })], 'E_RUN_ID'),
    bad('run_id of 129 characters', [encodeHeader({ ...hello, run_id: 'r'.repeat(129) })], 'E_RUN_ID'),
    bad('rank equal to world_size', [encodeHeader({ ...hello, rank: 2 })], 'E_RANK'),
    bad('world_size 0', [encodeHeader({ ...hello, world_size: 0 })], 'E_FIELD_TYPE'),
    bad('mode not raw|sketch', [encodeHeader({ ...hello, mode: 'fast' })], 'E_FIELD_TYPE'),
    bad('config is not a map', [encodeHeader({ ...hello, config: [1, 2] })], 'E_FIELD_TYPE'),
  ],
};
function omit(o: Record<string, unknown>, ...keys: string[]) {
  const c = { ...o };
  for (const k of keys) delete c[k];
  return c;
}

const welcome = {
  type: 'welcome', version: V, run_id: 'run-a', rank: 0, session: 's-1f2e3d', engine: { name: 'tailguard', version: '0.1.0' },
  limits: { ...DEFAULT_LIMITS }, resume: null,
};
files['02.welcome'] = {
  description: 'welcome: the engine answers hello (engine → shim) with its limits.',
  cases: [
    ok('welcome for a new run (resume nil)', [encodeHeader(welcome)], welcome),
    (() => {
      const w = { ...welcome, resume: { last_step: 12 } };
      return ok('welcome for a run the engine already knows: resume.last_step is the highest complete step', [encodeHeader(w)], w);
    })(),
    bad('welcome without limits', [encodeHeader(omit(welcome, 'limits'))], 'E_MISSING_FIELD'),
    bad('limits.max_frames is a string', [encodeHeader({ ...welcome, limits: { ...DEFAULT_LIMITS, max_frames: '64' } })], 'E_FIELD_TYPE'),
  ],
};

files['03.step'] = {
  description: "step: one rank's data for one optimizer step, or one chunk of it (shim → engine).",
  cases: [
    (() => {
      const m = stepMsg();
      return ok('typical step: two sequences, the first with two tool-output tokens; policy_vs_ref, advantages, policy_vs_old implicit', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const h = { type: 'step', version: V, run_id: 'run-a', rank: 0, world_size: 1, step: 0, chunk: { index: 0, count: 1 }, tokens: 0, n_seqs: 0 };
      const b = { completion_mask: new Uint8Array(0), tool_mask: new Uint8Array(0), offsets: new Int32Array([0]) };
      const m = encodeMessage(h, b);
      return ok('empty step: zero tokens, zero sequences, offsets = [0], empty frames', m, { ...h, buffers: [{ name: 'completion_mask', dtype: 'u8', length: 0 }, { name: 'tool_mask', dtype: 'u8', length: 0 }, { name: 'offsets', dtype: 'i32', length: 1 }] }, b);
    })(),
    (() => {
      const m = stepMsg({ chunk: { index: 1, count: 3 } });
      return ok('chunk 1 of 3: its own offsets start at 0', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({ slice_names: ['search', 'calculator'] }, { slice_ids: new Uint16Array([0, 0, 0, 0, 0, 1, 1, 1]) });
      return ok('user slices: slice_ids (u16) index slice_names', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({ implicit: [] }, {
        policy_vs_old: new Float32Array([0, 0.5, 0, 0, -0.5, 0, 0, 0.25]),
        old_vs_rollout: new Float32Array([0.0625, 0, 0, 0, 0, 0, 0, -0.0625]),
        rewards: new Float32Array([1, 0]),
        group_ids: new Int32Array([3, 3]),
        seq_ids: new Int32Array([100, 101]),
        token_ids: new Int32Array([11, 12, 900, 901, 13, 21, 22, 151643]),
      });
      return ok('every known buffer name', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({}, { offsets: new Int32Array([0, 0, 5, 8]), advantages: new Float32Array([0, 1, -1]) });
      m.header.n_seqs = 3;
      const fs = [encodeHeader(m.header), ...m.frames.slice(1)];
      return ok('an empty sequence (offsets repeat a value)', fs, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({}, { future_thing: new Uint32Array([7, 8, 9]) });
      return ok('an unknown buffer name with a known dtype is accepted and kept (forward compatibility); its length is not checked against tokens', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({ logs: { loss: NaN, grad_norm: Infinity }, knobs: { beta: 0, off_policy_mask_threshold: null } }, {
        policy_vs_ref: new Float32Array([NaN, Infinity, -Infinity, 0, 1, -1, 2, -2]),
      });
      return ok('NaN and ±Inf in a pair and in logs are data (findings), not protocol errors; a knob may be nil', m.frames, m.header, m.buffers);
    })(),
    (() => {
      const m = stepMsg({ sketch: false, knobs: {}, logs: {} });
      return ok('explicit sketch:false and empty knobs/logs maps', m.frames, m.header, m.buffers);
    })(),
  ],
};

const directive = {
  type: 'directive', version: V, run_id: 'run-a', rank: 0, step: 7,
  directive: { id: 'run-a/7/noop', action: 'noop', step: 7, apply_at_step: 8, params: {}, reason: '', evidence: {} },
  received: { tokens: 8, n_seqs: 2, slices: { all: 6, pre_tool: 5, post_tool: 1, tool_output: 2 }, checksum: 2166136261 },
  metrics: {}, metrics_step: null,
};
files['04.directive'] = {
  description: 'directive: the engine answers the last chunk of each step (engine → shim).',
  cases: [
    ok('no-op directive with the received echo; no metrics yet', [encodeHeader(directive)], directive),
    (() => {
      const d = { ...directive, metrics: { 'policy_vs_ref/post_tool/abs_q99': 2.75, 'policy_vs_ref/all/ess': 0.8125 }, metrics_step: 6 };
      return ok('with headline metrics of the latest finalised step', [encodeHeader(d)], d);
    })(),
    (() => {
      const d = { ...directive, received: { ...directive.received, checksum: null } };
      return ok('checksum nil when the hello asked for checksum:false', [encodeHeader(d)], d);
    })(),
    (() => {
      const d = { ...directive, directive: { ...directive.directive, id: 'run-a/7/1', action: 'tighten', params: { beta: 0.08 }, reason: 'post_tool q99 growth', evidence: { abs_q99: 3.1 } } };
      return ok('a tighten directive (issued by later engines; same shape)', [encodeHeader(d)], d);
    })(),
    bad('unknown action', [encodeHeader({ ...directive, directive: { ...directive.directive, action: 'explode' } })], 'E_FIELD_TYPE'),
    bad('received without checksum', [encodeHeader({ ...directive, received: omit(directive.received, 'checksum') })], 'E_MISSING_FIELD'),
  ],
};

const ack = { type: 'ack', version: V, run_id: 'run-a', rank: 0, directive_id: 'run-a/7/1', step: 8, applied: true, changes: [{ knob: 'beta', old: 0.04, new: 0.08 }], refused: null };
const bye = { type: 'bye', version: V, run_id: 'run-a', rank: 0, last_step: 99, stats: { sent: 100, dropped: 0, reconnects: 1 } };
const error = { type: 'error', version: V, code: 'E_FRAME_LENGTH', message: 'buffer tool_mask declares 8 × u8 = 8 bytes, frame 2 has 7', fatal: false, ref: { type: 'step', run_id: 'run-a', rank: 0, step: 7, chunk: 0 } };
files['05.ack-error-bye'] = {
  description: 'ack (both directions), error (engine → shim) and bye (shim → engine).',
  cases: [
    ok('ack: a directive was applied, with the knob changes', [encodeHeader(ack)], ack),
    (() => {
      const a = { ...ack, applied: false, changes: [], refused: 'beta 0 -> 0.08 needs a reference model' };
      return ok('ack: a directive was refused', [encodeHeader(a)], a);
    })(),
    (() => {
      const a = { type: 'ack', version: V, of: 'bye', run_id: 'run-a', rank: 0 };
      return ok('engine ack answering bye (has `of`)', [encodeHeader(a)], a);
    })(),
    ok('error reply', [encodeHeader(error)], error),
    (() => {
      const e = { type: 'error', version: V, code: 'E_HEADER_DECODE', message: 'frame 0 is not one valid msgpack object', fatal: false };
      return ok('error reply without ref (the header could not be read)', [encodeHeader(e)], e);
    })(),
    ok('bye with client counters', [encodeHeader(bye)], bye),
    (() => {
      const b = { type: 'bye', version: V, run_id: 'run-a', rank: 1 };
      return ok('minimal bye', [encodeHeader(b)], b);
    })(),
    bad('ack.applied as int 1 (bool required)', [encodeHeader({ ...ack, applied: 1 })], 'E_FIELD_TYPE'),
    bad('ack without directive_id', [encodeHeader(omit(ack, 'directive_id'))], 'E_MISSING_FIELD'),
    bad('error without fatal', [encodeHeader(omit(error, 'fatal'))], 'E_MISSING_FIELD'),
  ],
};

// Interop: the same hello in several encodings. Entries are in a fixed order for readability.
const helloEntries = (rank: Bytes, ws: Bytes = mp.fixint(2)): [string, Bytes][] => [
  ['type', mp.str('hello')], ['version', mp.arr([mp.fixint(1), mp.fixint(0)])], ['run_id', mp.str('run-a')], ['rank', rank], ['world_size', ws], ['trainer', mp.str('grpo')],
];
const helloRank1 = { ...hello, rank: 1 };
const stepHdrBytes = (stepV: Bytes, extra: [string, Bytes][] = []) => {
  const { header, frames } = stepMsg();
  const skip = new Set(extra.map(([k]) => k)); // no duplicate keys: their meaning is not portable
  const entries: [string, Bytes][] = Object.entries(header).filter(([k]) => !skip.has(k)).map(([k, v]) => [k, k === 'step' ? stepV : mp.val(v)]);
  return [mp.map16([...entries, ...extra]), ...frames.slice(1)];
};
files['06.msgpack-interop'] = {
  description:
    'msgpack forms every decoder must accept or reject identically. Pinned msgpackr options: useRecords:false, mapsAsObjects:false (maps read as Map, then converted), int64AsType:"number", moreTypes:false, structuredClone:false, bundleStrings:false.',
  cases: [
    ok('fixmap header', [mp.map(helloEntries(mp.fixint(1)))], helloRank1),
    ok('map16 header (msgpackr writes objects as map16)', [mp.map16(helloEntries(mp.fixint(1)))], helloRank1),
    ok('map32 header', [mp.map32(helloEntries(mp.fixint(1)))], helloRank1),
    ok('str8 keys and values instead of fixstr', [mp.map(helloEntries(mp.fixint(1)).map(([k, v]) => [mp.str8(k), k === 'trainer' ? mp.str8('grpo') : v]))], helloRank1),
    ok('rank as uint8 (0xcc)', [mp.map(helloEntries(mp.u8(1)))], helloRank1),
    ok('rank as uint16 (0xcd)', [mp.map(helloEntries(mp.u16(1)))], helloRank1),
    ok('rank as uint32 (0xce)', [mp.map(helloEntries(mp.u32(1)))], helloRank1),
    ok('rank as uint64 (0xcf) decodes as the number 1', [mp.map(helloEntries(mp.u64(1n)))], helloRank1),
    ok('rank as int64 (0xd3) decodes as the number 1', [mp.map(helloEntries(mp.i64(1n)))], helloRank1),
    ok('rank as float64 1.0: an integral float is accepted in an integer field', [mp.map(helloEntries(mp.f64(1)))], helloRank1),
    ok('rank as float32 1.0', [mp.map(helloEntries(mp.f32(1)))], helloRank1),
    ok('world_size 300 as uint16', [mp.map(helloEntries(mp.fixint(1), mp.u16(300)))], { ...helloRank1, world_size: 300 }),
    (() => {
      const { header, buffers } = stepMsg();
      return ok('step number as uint64 (0xcf 00..07)', stepHdrBytes(mp.u64(7n)), header, buffers);
    })(),
    (() => {
      const { header, buffers } = stepMsg();
      const frames = stepHdrBytes(mp.fixint(7), [['sent_at', mp.f32(1.5)]]);
      return ok('sent_at as float32 (0xca) 1.5, written as the last key: key order does not matter', frames, { ...header, sent_at: 1.5 }, buffers);
    })(),
    (() => {
      const { header, buffers } = stepMsg({ knobs: { beta: 0.1 } });
      const entries: [string, Bytes][] = Object.entries(header).map(([k, v]) => [k, k === 'knobs' ? mp.map([['beta', mp.f32(0.1)]]) : mp.val(v)]);
      const { frames } = stepMsg();
      return ok('a float32 0.1 decodes to the double nearest the float32 (0.10000000149011612)', [mp.map16(entries), ...frames.slice(1)], { ...header, knobs: { beta: Math.fround(0.1) } }, buffers);
    })(),
    (() => {
      const { header, buffers } = stepMsg({ knobs: { beta: 0.04, delta: -3 } });
      const { frames } = stepMsg();
      const entries: [string, Bytes][] = Object.entries(header).map(([k, v]) => [k, k === 'knobs' ? mp.map([['beta', mp.f64(0.04)], ['delta', mp.i8(-3)]]) : mp.val(v)]);
      return ok('negative int8 in a knobs map', [mp.map16(entries), ...frames.slice(1)], header, buffers);
    })(),
    bad('bin (0xc4) key', [mp.map([...helloEntries(mp.fixint(1)), [mp.bin(utf8('extra')), mp.fixint(1)]])], 'E_HEADER_TYPE'),
    bad('integer key', [mp.map([...helloEntries(mp.fixint(1)), [mp.fixint(5), mp.fixint(1)]])], 'E_HEADER_TYPE'),
    bad('non-string key in a nested map (config)', [mp.map([...helloEntries(mp.fixint(1)), ['config', mp.map([[mp.fixint(1), mp.str('x')]])]])], 'E_HEADER_TYPE'),
    bad('bin value (run_id as bytes)', [mp.map(helloEntries(mp.fixint(1)).map(([k, v]) => [k, k === 'run_id' ? mp.bin(utf8('run-a')) : v]))], 'E_HEADER_DECODE'),
    bad('timestamp extension (-1) value', [mp.map([...helloEntries(mp.fixint(1)), ['at', [0xd6, 0xff, 0, 0, 0, 1]]])], 'E_HEADER_DECODE'),
    bad('application extension type 5', [mp.map([...helloEntries(mp.fixint(1)), ['x', [0xd4, 0x05, 0x01]]])], 'E_HEADER_DECODE'),
    bad('never-used byte 0xc1', [mp.map([...helloEntries(mp.fixint(1)), ['x', [0xc1]]])], 'E_HEADER_DECODE'),
    // v1.1 (issue 14): msgpackr decodes these lossily; the spec says str is valid UTF-8.
    bad('invalid UTF-8 in a str value (0xff 0xfe)', [mp.map([...helloEntries(mp.fixint(1)), ['x', [0xa3, 0xff, 0xfe, 0x41]]])], 'E_HEADER_DECODE'),
    bad('overlong UTF-8 for "/" (0xc0 0xaf) in a str value', [mp.map([...helloEntries(mp.fixint(1)), ['x', [0xa2, 0xc0, 0xaf]]])], 'E_HEADER_DECODE'),
    bad('UTF-16 surrogate encoded as UTF-8 (0xed 0xa0 0x80) in a str8 value', [mp.map([...helloEntries(mp.fixint(1)), ['x', [0xd9, 3, 0xed, 0xa0, 0x80]]])], 'E_HEADER_DECODE'),
    bad('invalid UTF-8 in a map key', [mp.map([...helloEntries(mp.fixint(1)), [[0xa2, 0xff, 0x41], mp.fixint(1)]])], 'E_HEADER_DECODE'),
    bad('trailing bytes after the header map', [[...mp.map(helloEntries(mp.fixint(1))), 0xc0]], 'E_HEADER_DECODE'),
    bad('rank as float 1.5', [mp.map(helloEntries(mp.f64(1.5)))], 'E_FIELD_TYPE'),
    bad('rank as negative int8 -1', [mp.map(helloEntries(mp.i8(-1)))], 'E_FIELD_TYPE'),
    bad('rank as uint64 2^63 (not a safe integer)', [mp.map(helloEntries(mp.u64(1n << 63n)))], 'E_FIELD_TYPE'),
    bad('rank as nil', [mp.map(helloEntries(mp.nil()))], 'E_FIELD_TYPE'),
    bad('rank as boolean true', [mp.map(helloEntries(mp.bool(true)))], 'E_FIELD_TYPE'),
  ],
};

const nanLen = editedStep((h) => (h.buffers[0].length = NaN));
files['10.reject'] = {
  description: 'must-reject messages: each has exactly one defect and one expected error code.',
  cases: [
    bad('empty header frame', [[]], 'E_HEADER_DECODE'),
    bad('truncated header frame (map declares 6 entries, bytes end early)', [encodeHeader(hello).subarray(0, 20)], 'E_HEADER_DECODE'),
    bad('truncated step header frame, buffer frames intact', (() => { const { frames } = stepMsg(); return [frames[0].subarray(0, frames[0].length - 3), ...frames.slice(1)]; })(), 'E_HEADER_DECODE'),
    bad('header is an array', [mp.val(['hello', [1, 0]])], 'E_HEADER_TYPE'),
    bad('header is a string', [mp.str('hello')], 'E_HEADER_TYPE'),
    bad('header is nil', [mp.nil()], 'E_HEADER_TYPE'),
    bad('no version', [encodeHeader(omit(hello, 'version'))], 'E_MISSING_FIELD'),
    bad('version is a string', [encodeHeader({ ...hello, version: '1.0' })], 'E_FIELD_TYPE'),
    bad('version has one element', [encodeHeader({ ...hello, version: [1] })], 'E_FIELD_TYPE'),
    bad('unsupported major version 2', [encodeHeader({ ...hello, version: [2, 0] })], 'E_VERSION'),
    bad('major version 0', [encodeHeader({ ...hello, version: [0, 9] })], 'E_VERSION'),
    bad('unknown major wins over an unknown type', [encodeHeader({ ...hello, type: 'telemetry', version: [2, 0] })], 'E_VERSION'),
    bad('no type', [encodeHeader(omit(hello, 'type'))], 'E_MISSING_FIELD'),
    bad('type is an int', [encodeHeader({ ...hello, type: 3 })], 'E_FIELD_TYPE'),
    bad('unknown message type', [encodeHeader({ ...hello, type: 'telemetry' })], 'E_UNKNOWN_TYPE'),
    bad('step missing required field tokens', editedStep((h) => delete h.tokens), 'E_MISSING_FIELD'),
    bad('step missing chunk', editedStep((h) => delete h.chunk), 'E_MISSING_FIELD'),
    bad('step missing buffers (and frames)', [encodeHeader(omit(stepMsg().header, 'buffers'))], 'E_MISSING_FIELD'),
    bad('NaN in tokens', editedStep((h) => (h.tokens = NaN)), 'E_FIELD_TYPE'),
    bad('NaN in a buffer length', nanLen, 'E_FIELD_TYPE'),
    bad('Infinity in a buffer length', editedStep((h) => (h.buffers[0].length = Infinity)), 'E_FIELD_TYPE'),
    bad('negative buffer length', editedStep((h) => (h.buffers[0].length = -8)), 'E_FIELD_TYPE'),
    bad('buffer length 8.5', editedStep((h) => (h.buffers[0].length = 8.5)), 'E_FIELD_TYPE'),
    bad('buffer descriptor without dtype', editedStep((h) => delete h.buffers[1].dtype), 'E_MISSING_FIELD'),
    bad('wrong dtype for a known buffer name (tool_mask as f32)', editedStep((h) => (h.buffers[2].dtype = 'f32'), (f) => [f[0], f[1], f[2], Buffer.alloc(32), ...f.slice(4)]), 'E_DTYPE'),
    bad('wrong dtype for offsets (i64 is not a dtype)', editedStep((h) => (h.buffers[3].dtype = 'i64')), 'E_DTYPE'),
    bad('unknown dtype f16 on an unknown name', editedStep((h) => h.buffers.push({ name: 'half', dtype: 'f16', length: 1 }), (f) => [...f, Buffer.alloc(2)]), 'E_DTYPE'),
    bad('buffer name listed twice', editedStep((h) => h.buffers.push({ ...h.buffers[1] }), (f) => [...f, f[2]]), 'E_FIELD_TYPE'),
    bad('oversized: declared buffer length beyond max_frame_bytes (frames not needed to reject)', editedStep((h) => { h.tokens = 2 ** 20 + 1; h.buffers[0].length = 2 ** 20 + 1; }), 'E_TOO_LARGE'),
    bad('oversized: declared total beyond max_message_bytes (17 f32 buffers of 4 MiB)', [encodeHeader({ ...stepMsg().header, buffers: Array.from({ length: 17 }, (_, i) => ({ name: `x${i}`, dtype: 'f32', length: 2 ** 20 })) })], 'E_TOO_LARGE'),
    bad('oversized: tokens beyond max_tokens_per_step', editedStep((h) => (h.tokens = 2 ** 27 + 1)), 'E_TOO_LARGE'),
    bad('too many frames (65 > max_frames 64)', [encodeHeader(hello), ...Array.from({ length: 64 }, () => [])], 'E_TOO_LARGE'),
    bad('missing buffer frame (header lists 5, 4 follow)', stepMsg().frames.slice(0, 5), 'E_FRAME_COUNT'),
    bad('one frame too many', [...stepMsg().frames, Buffer.from([1])], 'E_FRAME_COUNT'),
    bad('hello followed by a stray frame', [encodeHeader(hello), Buffer.from([0])], 'E_FRAME_COUNT'),
    bad('frame length disagrees with the header (tool_mask 7 bytes, declared 8)', (() => { const f = stepMsg().frames; return [f[0], f[1], f[2], f[3].subarray(0, 7), ...f.slice(4)]; })(), 'E_FRAME_LENGTH'),
    bad('f32 frame not a multiple of 4 bytes', (() => { const f = stepMsg().frames; return [f[0], Buffer.concat([f[1], Buffer.from([0])]), ...f.slice(2)]; })(), 'E_FRAME_LENGTH'),
    bad('buffer length disagrees with tokens (policy_vs_ref 7, tokens 8)', stepMsg({}, { policy_vs_ref: new Float32Array(7) }).frames, 'E_FRAME_LENGTH'),
    bad('offsets length is not n_seqs+1', stepMsg({}, { offsets: new Int32Array([0, 8]) }).frames, 'E_FRAME_LENGTH'),
    bad('advantages length is not n_seqs', stepMsg({}, { advantages: new Float32Array([1, 2, 3]) }).frames, 'E_FRAME_LENGTH'),
    bad('missing required buffer tool_mask', stepMsg({}, { tool_mask: null }).frames, 'E_MISSING_FIELD'),
    bad('offsets[0] is not 0', stepMsg({}, { offsets: new Int32Array([1, 5, 8]) }).frames, 'E_OFFSETS'),
    bad('offsets decrease', stepMsg({}, { offsets: new Int32Array([0, 6, 5]) }).frames, 'E_OFFSETS'),
    bad('offsets[n_seqs] is not tokens', stepMsg({}, { offsets: new Int32Array([0, 5, 7]) }).frames, 'E_OFFSETS'),
    bad('negative offset', stepMsg({}, { offsets: new Int32Array([0, -1, 8]) }).frames, 'E_OFFSETS'),
    bad('slice_ids without slice_names', stepMsg({}, { slice_ids: new Uint16Array(8) }).frames, 'E_MISSING_FIELD'),
    bad('chunk.index >= chunk.count', stepMsg({ chunk: { index: 2, count: 2 } }).frames, 'E_FIELD_TYPE'),
    bad('chunk.count 0', stepMsg({ chunk: { index: 0, count: 0 } }).frames, 'E_FIELD_TYPE'),
    bad('implicit names an unknown pair', stepMsg({ implicit: ['policy_vs_moon'] }).frames, 'E_FIELD_TYPE'),
    bad('a knob is a string', stepMsg({ knobs: { beta: '0.04' } }).frames, 'E_FIELD_TYPE'),
    bad('step rank >= world_size', stepMsg({ rank: 2 }).frames, 'E_RANK'),
    bad('step run_id starts with a dot', stepMsg({ run_id: '.hidden' }).frames, 'E_RUN_ID'),
  ],
};

files['11.limits'] = {
  description: 'limits checked on the raw frames before the header is decoded (defaults: see proto/README.md "Limits").',
  cases: [
    bad('header frame of 65537 bytes > max_header_bytes 65536 (a valid hello padded with a long unknown field)', [padded(65537)], 'E_TOO_LARGE'),
    (() => {
      const f = padded(65536);
      return ok('a header of exactly max_header_bytes is accepted', [f], { ...hello, pad: 'x'.repeat(padLen(65536)) });
    })(),
  ],
};
function padLen(total: number): number {
  const base = encodeHeader({ ...hello, pad: 'x'.repeat(1000) }).length - 1000; // str16/str32 head size is constant here
  return total - base;
}
function padded(total: number): Buffer {
  const f = encodeHeader({ ...hello, pad: 'x'.repeat(padLen(total)) });
  if (f.length !== total) throw new Error(`padded header is ${f.length}, wanted ${total}`);
  return f;
}

// ---- sketch payloads: proto/gen-vectors-sketch.ts ----------------------------------------
files['12.sketch'] = sketchFile<Case>({ V, ok, bad, assemble, encodeHeader });

// ---- self-check and write ---------------------------------------------------------------------
function check(file: string, c: Case): void {
  const frames = c.frames.map((h) => new Uint8Array(Buffer.from(h, 'hex')));
  let outcome: string;
  try {
    decodeMessage(frames);
    outcome = 'valid';
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    outcome = e.code;
    if (c.valid) throw new Error(`${file}: "${c.description}" should be valid, got ${e.message}`);
  }
  if (!c.valid && outcome !== c.error) throw new Error(`${file}: "${c.description}" should be ${c.error}, got ${outcome}`);
}

mkdirSync(OUT, { recursive: true });
let n = 0;
for (const [name, body] of Object.entries(files)) {
  body.cases.forEach((c) => check(name, c));
  const size = body.cases.reduce((s, c) => s + c.frames.reduce((t, f) => t + f.length / 2, 0), 0);
  if (name === '11.limits' && size < 65537) throw new Error('limits vector too small');
  writeFileSync(join(OUT, `${name}.json`), JSON.stringify({ description: body.description, cases: body.cases }, null, 1) + '\n');
  n += body.cases.length;
}
console.log(`wrote ${Object.keys(files).length} vector files, ${n} cases, to ${OUT}`);
