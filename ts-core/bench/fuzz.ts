// Decoder + session fuzzing (issue 8). Cases are mutated from the golden vectors, built from valid
// session traffic (hello, chunked steps) and random bytes, all from one seed: case i uses its own
// PRNG seeded by (seed, i), so `--seed S --case I` replays exactly one case.
//
//   tsx ts-core/bench/fuzz.ts [--cases 100000] [--seed S] [--socket-cases 2000] [--case I] [--json FILE]
//                             [--in-process-cases N] [--sample-every 50000]
//   make fuzz-long: 10^6 cases over the socket, the engine's RSS and run-dir size sampled as it goes.
//
// Phase 1 (in-process, in a worker thread watched for hangs): every case goes through the real
// decoder (decodeMessage) and then the real EngineServer.handle → runs → assembler → stats/policy
// pipeline. Oracle: the decoder throws only ProtocolError with a documented code; the server answers
// a rejected message with exactly that code; no E_INTERNAL; every reply is itself a valid message.
// Phase 2 (real socket): a sample against a real `tailguard serve` process; each case is followed by
// a probe `bye` so a missing answer is a hang; the engine must stay alive and healthy; its peak RSS
// (VmHWM) is reported, and every --sample-every cases its RSS (VmRSS) and the size of its run directory,
// so growth (a leak, run dirs that are never removed) shows as a trend, not just a peak.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Packr } from 'msgpackr';
import { Dealer } from 'zeromq';
import { decodeMessage, encodeHeader, encodeMessage, type TypedArray } from '../src/protocol/codec.ts';
import { ERROR_CODES, ProtocolError } from '../src/protocol/errors.ts';
import { DEFAULT_LIMITS } from '../src/protocol/validate.ts';
import { mulberry32 } from './synthetic.ts';
import { loadAvg } from './doc-section.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const V = [1, 0];
const CODES = new Set<string>(ERROR_CODES);
type Frames = Uint8Array[];
type Rng = () => number;

// ---------------------------------------------------------------- case generation

const hex = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const VECTORS: { frames: Frames; valid: boolean }[] = readdirSync(join(ROOT, 'proto/v1/vectors'))
  .filter((f) => f.endsWith('.json'))
  .sort()
  .flatMap((f) => JSON.parse(readFileSync(join(ROOT, 'proto/v1/vectors', f), 'utf8')).cases.map((c: { frames: string[]; valid: boolean }) => ({ frames: c.frames.map(hex), valid: c.valid })));

// A lenient packer for mutated headers (Maps keep non-string keys; undefined-free).
const packr = new Packr({ useRecords: false, mapsAsObjects: false, int64AsType: 'number', moreTypes: false, structuredClone: false, bundleStrings: false, variableMapSize: true });
const loose = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

const int = (r: Rng, n: number) => Math.floor(r() * n);
const pick = <T>(r: Rng, a: readonly T[]): T => a[int(r, a.length)];
const NUMBERS = [0, 1, -1, 2, 7.5, -0, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1, 2 ** 53, 2 ** 64, 1e308, NaN, Infinity, -Infinity, 1e-300];
const DTYPES = ['f32', 'f64', 'u8', 'u16', 'i32', 'u32', 'f16', 'i64', '', 'F32', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'];
const NAMES = ['policy_vs_old', 'policy_vs_ref', 'old_vs_rollout', 'completion_mask', 'tool_mask', 'offsets', 'slice_ids', 'token_ids', 'advantages', 'rewards', 'group_ids', 'seq_ids', 'x_unknown', '__proto__', 'constructor', 'toString', '', 'sketch/policy_vs_ref/all/hist', 'sketch/policy_vs_ref/all/sums'];
const RUN_IDS = ['run-a', 'fz-1', 'fz-2', '../../etc', '..', '.', 'a/b', '/abs', 'x'.repeat(129), 'é', 'a\u0000b', ''];
const WEIRD = (r: Rng): unknown => pick(r, [null, true, false, 'str', '', [], {}, new Map([[1, 2]]), pick(r, NUMBERS), [1, 2, 3], { a: 1 }, 'x'.repeat(int(r, 5000)), new Uint8Array(3)]);

/** Synthetic session traffic: runs of world_size 1/2 whose steps may be chunked. */
const RUNS = [
  { run_id: 'fz-1', world_size: 1 },
  { run_id: 'fz-2', world_size: 2 },
];

function hello(r: Rng): Frames {
  const run = pick(r, RUNS);
  return [encodeHeader({ type: 'hello', version: V, run_id: run.run_id, rank: int(r, run.world_size), world_size: run.world_size, trainer: 'grpo', checksum: r() < 0.5 })];
}

function stepChunk(r: Rng, opts: { step?: number; index?: number; count?: number } = {}): Frames {
  const run = pick(r, RUNS);
  const nSeqs = int(r, 6);
  const lens = Array.from({ length: nSeqs }, () => int(r, 40));
  const T = lens.reduce((a, b) => a + b, 0);
  const offsets = new Int32Array(nSeqs + 1);
  lens.forEach((n, i) => (offsets[i + 1] = offsets[i] + n));
  const cm = new Uint8Array(T).map(() => (r() < 0.9 ? 1 : 0));
  const tm = new Uint8Array(T).map(() => (r() < 0.8 ? 1 : r() < 0.5 ? 0 : 7));
  const pair = () => new Float32Array(T).map(() => (r() < 0.01 ? pick(r, [NaN, Infinity, -Infinity, 3e38, 1e-45]) : (r() - 0.5) * 4));
  const buffers: Record<string, TypedArray> = { completion_mask: cm, tool_mask: tm, offsets };
  if (r() < 0.8) buffers.policy_vs_ref = pair();
  if (r() < 0.4) buffers.policy_vs_old = pair();
  if (r() < 0.2) buffers.old_vs_rollout = pair();
  if (r() < 0.2) buffers.advantages = new Float32Array(nSeqs).map(() => r());
  const header: Record<string, unknown> = {
    type: 'step', version: V, run_id: run.run_id, rank: int(r, run.world_size), world_size: run.world_size,
    step: opts.step ?? int(r, 12), chunk: { index: opts.index ?? 0, count: opts.count ?? 1 }, tokens: T, n_seqs: nSeqs,
    knobs: { beta: 0.04, epsilon_low: 0.2, epsilon_high: 0.28 }, logs: { loss: r() },
  };
  if (r() < 0.1) {
    buffers.slice_ids = new Uint16Array(T).map(() => int(r, 3));
    header.slice_names = ['a', 'b', 'c'];
  }
  return encodeMessage(header, buffers);
}

function sessionCase(r: Rng): Frames {
  const k = r();
  if (k < 0.3) return hello(r);
  if (k < 0.6) return stepChunk(r);
  const count = 1 + int(r, 4);
  // Mostly in order, sometimes skipped or repeated chunks (E_CHUNK / E_DUPLICATE paths).
  return stepChunk(r, { step: int(r, 12), index: r() < 0.8 ? int(r, count) : int(r, count + 2), count: r() < 0.9 ? count : count + 1 });
}

function flipBits(r: Rng, f: Uint8Array): Uint8Array {
  if (f.length === 0) return f;
  const g = Uint8Array.from(f);
  for (let n = 1 + int(r, 8); n > 0; n--) g[int(r, g.length)] ^= 1 << int(r, 8);
  return g;
}

function setBytes(r: Rng, f: Uint8Array): Uint8Array {
  if (f.length === 0) return f;
  const g = Uint8Array.from(f);
  const v = [0x00, 0xff, 0x7f, 0x80, 0xc1, 0xc4, 0xc7, 0xd4, 0xd6, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xcf, 0xd3, 0xcb, 0xca, 0xc0];
  for (let n = 1 + int(r, 4); n > 0; n--) g[int(r, g.length)] = pick(r, v);
  return g;
}

/** Byte-level mutations: bits, bytes, truncation, extension, frame drop/dup/swap/extra/empty. */
function rawMutate(r: Rng, frames: Frames): Frames {
  const out = frames.slice();
  const i = out.length && r() < 0.6 ? 0 : int(r, Math.max(1, out.length));
  const k = int(r, 9);
  if (out.length === 0) return [randomBytes(r, int(r, 64))];
  switch (k) {
    case 0:
      out[i] = flipBits(r, out[i]);
      break;
    case 1:
      out[i] = setBytes(r, out[i]);
      break;
    case 2:
      out[i] = out[i].subarray(0, int(r, out[i].length + 1));
      break;
    case 3:
      out[i] = concat([out[i], randomBytes(r, 1 + int(r, 64))]);
      break;
    case 4:
      out.splice(i, 1);
      break;
    case 5:
      out.splice(i, 0, out[i]);
      break;
    case 6:
      out.push(randomBytes(r, int(r, 128)));
      break;
    case 7:
      if (out.length > 1) {
        const j = int(r, out.length);
        [out[i], out[j]] = [out[j], out[i]];
      }
      break;
    default:
      out[i] = new Uint8Array(0);
  }
  return out;
}

function randomBytes(r: Rng, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
}

const concat = (parts: Uint8Array[]) => Uint8Array.from(Buffer.concat(parts));

/** Structural mutations of a decoded header, re-encoded; buffer frames kept (so sizes disagree). */
function structMutate(r: Rng, frames: Frames): Frames {
  let h: Record<string, unknown>;
  try {
    h = loose.unpack(frames[0]) as Record<string, unknown>;
  } catch {
    return rawMutate(r, frames);
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) return rawMutate(r, frames);
  h = { ...h };
  const keys = Object.keys(h);
  const bufs = Array.isArray(h.buffers) ? (h.buffers as Record<string, unknown>[]).map((b) => (typeof b === 'object' && b ? { ...b } : b)) : null;
  if (bufs) h.buffers = bufs;
  const b = bufs && bufs.length ? (bufs[int(r, bufs.length)] as Record<string, unknown>) : null;
  let out = frames.slice();
  let deep: Uint8Array | null = null;
  switch (int(r, 14)) {
    case 0: // wrong / huge declared lengths
      if (b) b.length = r() < 0.5 ? pick(r, NUMBERS) : Number(b.length) + pick(r, [-1, 1, 2, 1000]);
      break;
    case 1:
      if (b) b.dtype = pick(r, DTYPES);
      break;
    case 2:
      if (b) b.name = pick(r, NAMES);
      break;
    case 3:
      for (const f of ['tokens', 'n_seqs', 'step', 'rank', 'world_size']) if (r() < 0.4) h[f] = pick(r, NUMBERS);
      break;
    case 4: // a field with the wrong type, or removed
      if (keys.length) {
        const key = pick(r, keys);
        if (r() < 0.3) delete h[key];
        else h[key] = WEIRD(r);
      }
      break;
    case 5:
      h.run_id = pick(r, RUN_IDS);
      break;
    case 6:
      h.chunk = { index: pick(r, [0, 1, 2, 5, -1, 2 ** 53]), count: pick(r, [0, 1, 2, 3, 2 ** 32]) };
      break;
    case 7: // deep nesting (arrays or maps), maybe beyond the header limit: spliced in as raw bytes
      h[pick(r, ['config', 'knobs', 'x'])] = DEEP;
      deep = nest(pick(r, [10, 100, 1000, 5000, 20000]), r() < 0.5);
      break;
    case 8: {
      // huge map: many keys
      const m: Record<string, number> = {};
      for (let n = pick(r, [100, 1000, 5000, 20000]); n > 0; n--) m[`k${n}`] = n;
      h[pick(r, ['config', 'knobs', 'logs', 'extra'])] = m;
      break;
    }
    case 9:
      h.version = pick(r, [[1, 0], [2, 0], [1, 99], [0, 1], [1], '1.0', [1, -1], [NaN, 0], [1, 0, 0]]);
      break;
    case 10:
      h.type = pick(r, ['hello', 'step', 'ack', 'bye', 'welcome', 'directive', 'error', 'nope', '']);
      break;
    case 11:
      if (bufs) bufs.push({ name: pick(r, NAMES), dtype: pick(r, DTYPES), length: pick(r, NUMBERS) });
      break;
    case 12:
      h.sketch = true;
      h.hist = { exp_min: -24, exp_max: 8, mant_bits: pick(r, [6, 5]) };
      h.sums_fields = r() < 0.5 ? ['n'] : undefined;
      break;
    default: {
      // corrupt buffer contents (offsets / masks) while keeping sizes
      const j = 1 + int(r, Math.max(1, out.length - 1));
      if (out[j]) out[j] = r() < 0.5 ? flipBits(r, out[j]) : setBytes(r, out[j]);
      return out;
    }
  }
  for (const k of Object.keys(h)) if (h[k] === undefined) delete h[k];
  let head: Uint8Array = packr.pack(h);
  if (deep) {
    const at = Buffer.from(head).indexOf(Buffer.from(packr.pack(DEEP)));
    head = concat([head.subarray(0, at), deep, head.subarray(at + packr.pack(DEEP).length)]);
  }
  out = [head, ...out.slice(1)];
  return r() < 0.2 ? rawMutate(r, out) : out;
}

const DEEP = '\u0000deep-placeholder';
/** msgpack bytes of a value nested `depth` levels deep: [[[...0]]] or {a:{a:...0}}. */
function nest(depth: number, maps: boolean): Uint8Array {
  const open = maps ? [0x81, 0xa1, 0x61] : [0x91];
  const b = new Uint8Array(depth * open.length + 1);
  for (let i = 0; i < depth * open.length; i++) b[i] = open[i % open.length];
  return b; // last byte 0x00 = fixint 0
}

const str8 = (b: Uint8Array) => concat([Uint8Array.of(0xd9, b.length), b]);
const fixstr = (s: string) => packr.pack(s);

/** Hand-built msgpack: bad UTF-8, huge declared lengths, ext, 0xc1, bin keys, raw deep nesting. */
function rawHeader(r: Rng): Frames {
  const good: [Uint8Array, Uint8Array][] = [
    [fixstr('type'), fixstr('hello')],
    [fixstr('version'), packr.pack([1, 0])],
    [fixstr('run_id'), fixstr('fz-1')],
    [fixstr('rank'), packr.pack(0)],
    [fixstr('world_size'), packr.pack(1)],
    [fixstr('trainer'), fixstr('grpo')],
  ];
  const bad = pick(r, [
    () => str8(Uint8Array.of(0xff, 0xfe, 0x41)), // invalid UTF-8
    () => str8(Uint8Array.of(0xed, 0xa0, 0x80)), // UTF-16 surrogate in UTF-8
    () => str8(Uint8Array.of(0xc0, 0xaf)), // overlong
    () => Uint8Array.of(0xdb, 0xff, 0xff, 0xff, 0xff, 0x41), // str32 declaring 4 GiB
    () => Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0), // array32 declaring 4G elements
    () => Uint8Array.of(0xdf, 0x7f, 0xff, 0xff, 0xff), // map32 declaring 2G pairs
    () => Uint8Array.of(0xc6, 0xff, 0xff, 0xff, 0xff, 0), // bin32 declaring 4 GiB
    () => Uint8Array.of(0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), // ext32 declaring 4 GiB
    () => Uint8Array.of(0xd6, 0xff, 0, 0, 0, 1), // timestamp ext
    () => Uint8Array.of(0xd4, 0x01, 0x00), // fixext
    () => Uint8Array.of(0xc1), // never used
    () => Uint8Array.of(0xc4, 0x02, 0x61, 0x62), // bin value
    () => concat([new Uint8Array(int(r, 70000)).fill(0x91), Uint8Array.of(0xc0)]), // deep arrays
    () => concat([new Uint8Array(int(r, 30000) * 3).map((_, i) => [0x81, 0xa1, 0x61][i % 3]), Uint8Array.of(0xc0)]), // deep maps
  ])();
  const at = int(r, good.length);
  const pairs = good.slice();
  if (r() < 0.2) pairs.splice(at, 0, [r() < 0.5 ? Uint8Array.of(0xc4, 0x01, 0x61) : packr.pack(int(r, 100)), fixstr('x')]); // non-str key
  else if (r() < 0.3) pairs.splice(at, 0, [str8(Uint8Array.of(0xff, 0x41)), fixstr('x')]); // bad UTF-8 key
  else pairs[at] = [pairs[at][0], bad];
  const n = pairs.length;
  const head = n < 16 ? Uint8Array.of(0x80 | n) : Uint8Array.of(0xde, 0, n);
  return [concat([head, ...pairs.flat()])];
}

function randomCase(r: Rng): Frames {
  if (r() < 0.3) return [packr.pack(randomValue(r, 0))];
  const n = int(r, 6);
  return Array.from({ length: n }, () => randomBytes(r, int(r, r() < 0.9 ? 64 : 4096)));
}

function randomValue(r: Rng, d: number): unknown {
  const k = int(r, d > 4 ? 4 : 7);
  if (k === 0) return pick(r, NUMBERS);
  if (k === 1) return pick(r, ['', 'step', 'hello', 'x'.repeat(int(r, 100))]);
  if (k === 2) return r() < 0.5;
  if (k === 3) return null;
  if (k === 4) return Array.from({ length: int(r, 5) }, () => randomValue(r, d + 1));
  const m: Record<string, unknown> = {};
  for (let i = int(r, 6); i > 0; i--) m[pick(r, ['type', 'version', 'run_id', 'rank', 'buffers', 'step', 'x'])] = randomValue(r, d + 1);
  return m;
}

/** Case i of a seed: its own PRNG, so it can be regenerated alone. */
export function makeCase(seed: number, i: number): { kind: string; frames: Frames } {
  const r = mulberry32((seed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0);
  const k = r();
  if (k < 0.4) {
    const v = pick(r, VECTORS);
    let f = rawMutate(r, v.frames);
    if (r() < 0.3) f = rawMutate(r, f);
    return { kind: 'vector-bytes', frames: f };
  }
  if (k < 0.65) {
    const base = r() < 0.5 ? pick(r, VECTORS).frames : r() < 0.5 ? stepChunk(r) : hello(r);
    return { kind: 'vector-struct', frames: structMutate(r, base) };
  }
  if (k < 0.82) return { kind: 'session', frames: r() < 0.8 ? sessionCase(r) : rawMutate(r, sessionCase(r)) };
  if (k < 0.9) return { kind: 'raw-header', frames: rawHeader(r) };
  return { kind: 'random', frames: randomCase(r) };
}

// ---------------------------------------------------------------- oracle

export interface Failure {
  seed: number;
  index: number;
  kind: string;
  what: string;
}

/** What the decoder says about a case: null (valid) or the code. Anything but ProtocolError is a crash. */
export function decodeVerdict(frames: Frames): string | null {
  try {
    decodeMessage(frames, DEFAULT_LIMITS);
    return null;
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw new Error(`decoder threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
    if (!CODES.has(e.code) || e.code === 'E_INTERNAL') throw new Error(`decoder answered ${e.code}: ${e.message}`);
    return e.code;
  }
}

/** Check the engine's replies to one case against the decoder's verdict. Returns a problem or null. */
export function judge(frames: Frames, verdict: string | null, replies: Record<string, unknown>[]): string | null {
  for (const h of replies) {
    try {
      decodeMessage([encodeHeader(h)]); // the engine's own replies must be valid protocol
    } catch (e) {
      return `invalid reply ${JSON.stringify(h).slice(0, 200)}: ${(e as Error).message}`;
    }
    if (h.type === 'error' && (!CODES.has(h.code as string) || h.code === 'E_INTERNAL')) return `error reply ${h.code}: ${h.message}`;
  }
  if (verdict !== null) {
    if (replies.length !== 1 || replies[0].type !== 'error' || replies[0].code !== verdict)
      return `decoder says ${verdict}, engine replied ${JSON.stringify(replies.map((x) => x.code ?? x.type))}`;
  } else if (replies.length > 1) return `${replies.length} replies to one message`;
  void frames;
  return null;
}

// ---------------------------------------------------------------- phase 1: in-process (worker)

interface Phase1Result {
  cases: number;
  failures: Failure[];
  codes: Record<string, number>;
  kinds: Record<string, number>;
  kindMs: Record<string, number>;
  /** Error codes the engine answered (decoder codes plus session-stage ones: E_NO_SESSION, E_CHUNK, ...). */
  engineCodes: Record<string, number>;
  valid: number;
  maxCaseMs: number;
  maxCaseIndex: number;
  peakRssMiB: number;
  ms: number;
}

async function phase1Worker(): Promise<void> {
  const { seed, from, to, progress, runDir, maxFailures } = workerData as { seed: number; from: number; to: number; progress: SharedArrayBuffer; runDir: string; maxFailures: number };
  const prog = new Int32Array(progress);
  const { EngineServer } = await import('../src/transport/server.ts');
  const { buildPipeline } = await import('../src/engine/pipeline.ts');
  const { silentLogger } = await import('../src/log.ts');
  const server = new EngineServer({ log: silentLogger(), factory: buildPipeline, runDir, options: { window: '5' }, limits: {} });
  // No socket: capture replies instead of sending them (the handler path is the real one).
  let replies: Record<string, unknown>[] = [];
  (server as unknown as { reply: (id: Buffer, h: Record<string, unknown>) => void }).reply = (_id, h) => replies.push(h);
  const id = Buffer.from('fuzz');
  Atomics.store(prog, 2, 1); // ready: the hang clock starts now
  const res: Phase1Result = { cases: 0, failures: [], codes: {}, kinds: {}, kindMs: {}, engineCodes: {}, valid: 0, maxCaseMs: 0, maxCaseIndex: -1, peakRssMiB: 0, ms: 0 };
  const t0 = performance.now();
  for (let i = from; i < to; i++) {
    Atomics.store(prog, 0, i);
    const { kind, frames } = makeCase(seed, i);
    res.kinds[kind] = (res.kinds[kind] ?? 0) + 1;
    const c0 = performance.now();
    let problem: string | null = null;
    try {
      const verdict = decodeVerdict(frames);
      if (verdict === null) res.valid++;
      else res.codes[verdict] = (res.codes[verdict] ?? 0) + 1;
      replies = [];
      server.handle(id, frames as Buffer[]);
      problem = judge(frames, verdict, replies);
      for (const h of replies) if (h.type === 'error') res.engineCodes[h.code as string] = (res.engineCodes[h.code as string] ?? 0) + 1;
    } catch (e) {
      problem = `crash: ${(e as Error)?.stack ?? e}`;
    }
    const dt = performance.now() - c0;
    res.kindMs[kind] = (res.kindMs[kind] ?? 0) + dt;
    if (dt > res.maxCaseMs) (res.maxCaseMs = dt), (res.maxCaseIndex = i);
    if (problem && res.failures.length < maxFailures) res.failures.push({ seed, index: i, kind, what: problem });
    res.cases++;
    if ((i & 1023) === 0) Atomics.store(prog, 1, Math.round(process.memoryUsage().rss / 1048576));
  }
  server.registry.tick(Date.now() + 10 * 60_000); // time out steps still missing ranks: the finalise path too
  await server.registry.close();
  res.ms = performance.now() - t0;
  res.peakRssMiB = Math.round(process.resourceUsage().maxRSS / 1024);
  parentPort!.postMessage(res);
}

/** Run phase 1 in a worker; a case that runs longer than `hangMs` is reported as a hang (seed, index). */
export function runInProcess(o: { seed: number; from: number; to: number; hangMs?: number; runDir: string; maxFailures?: number }): Promise<Phase1Result & { hang: Failure | null }> {
  const progress = new SharedArrayBuffer(12); // [case index, RSS MiB, worker ready]
  const prog = new Int32Array(progress);
  Atomics.store(prog, 0, o.from);
  // The worker loads this file through tsx's loader (workers do not inherit it).
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const w = new Worker(boot, { eval: true, workerData: { ...o, progress, maxFailures: o.maxFailures ?? 50 } });
  return new Promise((resolve, reject) => {
    let last = -1;
    let since = Date.now();
    const timer = setInterval(() => {
      const cur = Atomics.load(prog, 0);
      // The worker's start (loading tsx and the engine, slow on a loaded machine) is not a case.
      if (cur !== last || Atomics.load(prog, 2) === 0) (last = cur), (since = Date.now());
      else if (Date.now() - since > (o.hangMs ?? 10_000)) {
        clearInterval(timer);
        void w.terminate();
        const hang = { seed: o.seed, index: cur, kind: makeCase(o.seed, cur).kind, what: `hang: case ran longer than ${o.hangMs ?? 10_000} ms` };
        resolve({ cases: cur - o.from, failures: [hang], codes: {}, kinds: {}, kindMs: {}, engineCodes: {}, valid: 0, maxCaseMs: Infinity, maxCaseIndex: cur, peakRssMiB: Atomics.load(prog, 1), ms: 0, hang });
      }
    }, 250);
    w.once('message', (m: Phase1Result) => {
      clearInterval(timer);
      resolve({ ...m, hang: null });
    });
    w.once('error', (e) => {
      clearInterval(timer);
      reject(e);
    });
    w.once('exit', (code) => {
      clearInterval(timer);
      if (code !== 0) resolve({ cases: Atomics.load(prog, 0) - o.from, failures: [{ seed: o.seed, index: Atomics.load(prog, 0), kind: '?', what: `worker exited with ${code} (crash)` }], codes: {}, kinds: {}, kindMs: {}, engineCodes: {}, valid: 0, maxCaseMs: 0, maxCaseIndex: -1, peakRssMiB: 0, ms: 0, hang: null });
    });
  });
}

// ---------------------------------------------------------------- phase 2: real socket, real engine

export interface SocketResult {
  cases: number;
  failures: Failure[];
  engineAlive: boolean;
  healthy: boolean;
  enginePeakRssMiB: number;
  ms: number;
  /** Every `sampleEvery` cases: the engine's RSS and its run directory (MiB, directories). */
  samples: { cases: number; rssMiB: number; runDirMiB: number; runDirs: number }[];
}

function vmRssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN;
  }
}

/** Bytes under `dir` (files, recursively) and the number of run directories directly in it. */
function dirSize(dir: string): { bytes: number; dirs: number } {
  let bytes = 0;
  let dirs = 0;
  const walk = (d: string, top: boolean) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      try {
        const st = statSync(join(d, n));
        if (st.isDirectory()) {
          if (top) dirs++;
          walk(join(d, n), false);
        } else bytes += st.size;
      } catch {
        // removed while walking
      }
    }
  };
  walk(dir, true);
  return { bytes, dirs };
}

function vmHwmMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN;
  }
}

export async function runSocket(o: { seed: number; from: number; to: number; workDir: string; caseTimeoutMs?: number; sampleEvery?: number }): Promise<SocketResult> {
  const ready = join(o.workDir, 'ready');
  const endpoint = `ipc://${o.workDir}/engine.sock`;
  const proc = spawn(process.execPath, [join(ROOT, 'ts-core/bin/tailguard.mjs'), 'serve', '--endpoint', endpoint, '--run-dir', join(o.workDir, 'runs'), '--log-level', 'error', '--ready-file', ready, '--window', '5'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const res: SocketResult = { cases: 0, failures: [], engineAlive: false, healthy: false, enginePeakRssMiB: NaN, ms: 0, samples: [] };
  const runs = join(o.workDir, 'runs');
  const sample = () => {
    const d = dirSize(runs);
    const s = { cases: res.cases, rssMiB: vmRssMiB(proc.pid!), runDirMiB: Math.round((d.bytes / 1048576) * 10) / 10, runDirs: d.dirs };
    res.samples.push(s);
    if (o.sampleEvery) console.log(`  socket ${s.cases} cases: engine RSS ${s.rssMiB} MiB, run dir ${s.runDirMiB} MiB in ${s.runDirs} run directories`);
  };
  const t0 = Date.now();
  while (!existsSync(ready)) {
    if (proc.exitCode !== null || Date.now() - t0 > 60_000) throw new Error(`engine did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  let sock = new Dealer({ linger: 0, receiveTimeout: o.caseTimeoutMs ?? 5000 });
  sock.connect(endpoint);
  const t1 = performance.now();
  try {
    for (let i = o.from; i < o.to; i++) {
      const { kind, frames } = makeCase(o.seed, i);
      if (frames.length === 0) continue; // a ZeroMQ message has at least one frame
      const verdict = decodeVerdict(frames);
      await sock.send(frames as Buffer[]);
      await sock.send(encodeHeader({ type: 'bye', version: V, run_id: 'fuzz-probe', rank: i }));
      const replies: Record<string, unknown>[] = [];
      let problem: string | null = null;
      for (;;) {
        let h: Record<string, unknown>;
        try {
          h = decodeMessage(await sock.receive()).header as Record<string, unknown>;
        } catch (e) {
          problem = (e as { code?: string }).code === 'EAGAIN' ? `hang: no answer within ${o.caseTimeoutMs ?? 5000} ms` : `bad reply: ${(e as Error).message}`;
          break;
        }
        if (h.type === 'ack' && h.run_id === 'fuzz-probe' && h.rank === i) break;
        replies.push(h);
      }
      problem ??= judge(frames, verdict, replies);
      if (problem) {
        res.failures.push({ seed: o.seed, index: i, kind, what: problem });
        // Start clean after a lost answer, so one failure does not shift every later reply.
        sock.close();
        sock = new Dealer({ linger: 0, receiveTimeout: o.caseTimeoutMs ?? 5000 });
        sock.connect(endpoint);
      }
      res.cases++;
      if (o.sampleEvery && res.cases % o.sampleEvery === 0) sample();
      if (proc.exitCode !== null) {
        res.failures.push({ seed: o.seed, index: i, kind, what: `engine exited with ${proc.exitCode}: ${stderr}` });
        break;
      }
    }
    res.ms = performance.now() - t1;
    sample();
    // Still healthy: a fresh run on a fresh connection (the fuzz socket may hold --max-runs-per-conn runs)
    // gets a welcome and a directive for a valid step.
    sock.close();
    sock = new Dealer({ linger: 0, receiveTimeout: o.caseTimeoutMs ?? 5000 });
    sock.connect(endpoint);
    const w = await request(sock, [encodeHeader({ type: 'hello', version: V, run_id: 'fuzz-health', rank: 0, world_size: 1, trainer: 'synthetic' })]);
    const d = await request(sock, stepFrames('fuzz-health'));
    res.healthy = w.type === 'welcome' && d.type === 'directive';
    if (!res.healthy) res.failures.push({ seed: o.seed, index: -1, kind: 'health', what: `engine unhealthy after the sample: ${JSON.stringify(w)} ${JSON.stringify(d)}`.slice(0, 600) });
  } catch (e) {
    res.failures.push({ seed: o.seed, index: -1, kind: 'health', what: `engine unhealthy after the sample: ${(e as Error).message}` });
  } finally {
    res.engineAlive = proc.exitCode === null;
    res.enginePeakRssMiB = vmHwmMiB(proc.pid!);
    sock.close();
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
  }
  return res;
}

async function request(sock: Dealer, frames: Uint8Array[]): Promise<Record<string, unknown>> {
  await sock.send(frames as Buffer[]);
  return decodeMessage(await sock.receive()).header as Record<string, unknown>;
}

function stepFrames(run_id: string): Buffer[] {
  const T = 8;
  return encodeMessage(
    { type: 'step', version: V, run_id, rank: 0, world_size: 1, step: 0, chunk: { index: 0, count: 1 }, tokens: T, n_seqs: 2 },
    { policy_vs_ref: new Float32Array(T).fill(0.1), completion_mask: new Uint8Array(T).fill(1), tool_mask: Uint8Array.of(1, 1, 0, 1, 1, 1, 0, 1), offsets: Int32Array.of(0, 4, 8) },
  );
}

// ---------------------------------------------------------------- CLI

function args(argv: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[i + 1]?.startsWith('--') || argv[i + 1] === undefined ? 'true' : argv[++i];
  return o;
}

async function main(): Promise<void> {
  const a = args(process.argv.slice(2));
  const load0 = loadAvg();
  const seed = a.seed !== undefined ? Number(a.seed) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  const cases = Number(a.cases ?? 100_000);
  const socketCases = Number(a['socket-cases'] ?? 2000);
  const inProcessCases = Number(a['in-process-cases'] ?? cases);
  const one = a.case !== undefined ? Number(a.case) : null;
  // Run stores on tmpfs when there is one: the store fsyncs every finalised step.
  const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'tg-fuzz-'));
  console.log(`fuzz: seed ${seed}  (reproduce: tsx ts-core/bench/fuzz.ts --seed ${seed} --cases ${cases}${one === null ? '' : ` --case ${one}`})`);
  const from = one ?? 0;
  const to = one === null ? cases : one + 1;
  let failures: Failure[] = [];
  const p1 = await runInProcess({ seed, from, to: Math.min(to, from + inProcessCases), runDir: join(work, 'runs1'), hangMs: Number(a['hang-ms'] ?? 10_000) });
  failures = failures.concat(p1.failures);
  console.log(`in-process: ${p1.cases} cases in ${(p1.ms / 1000).toFixed(1)} s (${Math.round(p1.cases / (p1.ms / 1000))}/s), valid ${p1.valid}, failures ${p1.failures.length}, slowest case ${p1.maxCaseMs.toFixed(1)} ms (#${p1.maxCaseIndex}), peak RSS ${p1.peakRssMiB} MiB`);
  console.log(`  kinds ${JSON.stringify(p1.kinds)}; ms ${JSON.stringify(Object.fromEntries(Object.entries(p1.kindMs).map(([k, v]) => [k, Math.round(v)])))}`);
  console.log(`  decoder codes ${JSON.stringify(p1.codes)}`);
  console.log(`  engine codes  ${JSON.stringify(p1.engineCodes)}`);
  let p2: SocketResult | null = null;
  if (socketCases > 0 && !p1.hang) {
    const n = Math.min(socketCases, to - from);
    p2 = await runSocket({ seed, from, to: from + n, workDir: work, sampleEvery: a['sample-every'] === undefined ? (n >= 100_000 ? 50_000 : 0) : Number(a['sample-every']) });
    failures = failures.concat(p2.failures);
    const last = p2.samples.at(-1);
    console.log(`socket: ${p2.cases} cases in ${(p2.ms / 1000).toFixed(1)} s against a real engine; failures ${p2.failures.length}; engine alive ${p2.engineAlive}, healthy ${p2.healthy}, engine peak RSS (VmHWM) ${p2.enginePeakRssMiB} MiB, RSS at the end ${last?.rssMiB} MiB, run dir ${last?.runDirMiB} MiB in ${last?.runDirs} run directories`);
  }
  // Cases before a failure may have opened sessions it depends on: replay the prefix; --case I runs it alone.
  for (const f of failures.slice(0, 20)) console.log(`FAIL seed ${f.seed} case ${f.index} (${f.kind}): ${f.what.slice(0, 500)}\n  reproduce: tsx ts-core/bench/fuzz.ts --seed ${f.seed} --cases ${f.index + 1} (alone: --case ${f.index})`);
  const ok = failures.length === 0 && (!p2 || (p2.engineAlive && p2.healthy));
  if (a.json) {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(a.json, JSON.stringify({ seed, ok, phase1: { ...p1, failures: p1.failures.length }, socket: p2 && { ...p2, failures: p2.failures.length }, failures }, null, 1));
  }
  rmSync(work, { recursive: true, force: true });
  if (a['write-doc']) {
    const { writeFuzzDoc } = await import('./fuzz-doc.ts');
    writeFuzzDoc(a['write-doc'] === 'true' ? 'fuzz' : a['write-doc'], `tsx ts-core/bench/fuzz.ts ${process.argv.slice(2).join(' ')}`, seed, p1, p2, ok, load0);
  }
  console.log(ok ? 'fuzz: OK (0 crashes, 0 hangs, every rejection a documented code)' : 'fuzz: FAILED');
  process.exit(ok ? 0 : 1);
}

if (isMainThread && process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) await main();
else if (!isMainThread && (workerData as { progress?: unknown })?.progress) await phase1Worker();
