// Frames <-> typed messages. Decoding never throws anything but ProtocolError, and views buffer
// frames in place (a copy only when a frame's offset is misaligned for its dtype).
import { Packr } from 'msgpackr';
import { ProtocolError, type ErrorRef } from './errors.ts';
import { checkSketchStep } from './sketch.ts';
import { invalidUtf8At } from './utf8.ts';
import type { BufferDesc, Dtype, Header, Limits, StepHeader, TypedArray } from './messages.ts';
export type { TypedArray } from './messages.ts';
import { DEFAULT_LIMITS, DTYPE_SIZE, REQUIRED_STEP_BUFFERS, STEP_BUFFERS, refOf, validateHeader } from './validate.ts';

/**
 * The pinned msgpackr options (proto/README.md "msgpack rules"):
 * - useRecords:false — no msgpackr record extension; plain msgpack maps only.
 * - mapsAsObjects:false — decode maps as Map so non-string keys are seen (and rejected), then
 *   convert to plain objects ourselves.
 * - int64AsType:'number' — uint64/int64 decode as JS numbers (integer fields are then checked to be safe integers).
 * - moreTypes:false, structuredClone:false, bundleStrings:false — nothing beyond core msgpack.
 * Encoding: integers that fit 32 bits go out as msgpack ints, other numbers as float64 (msgpackr's
 * default; useFloat32 unset), strings as str, Maps/objects as maps.
 */
export const PACKR_OPTIONS = Object.freeze({
  useRecords: false,
  mapsAsObjects: false,
  int64AsType: 'number',
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
} as const);
// undefined (an absent optional field inside evidence, say) must go out as nil: msgpackr's default is an
// ext value that every decoder rejects (found by test/test_faults_engine.py: findings[0].rank).
const packr = new Packr({ ...PACKR_OPTIONS, encodeUndefinedAsNil: true });

type Ctor = { new (b: ArrayBufferLike, off: number, len: number): TypedArray; new (len: number): TypedArray; BYTES_PER_ELEMENT: number };
export const DTYPE_CTOR: Readonly<Record<Dtype, Ctor>> = {
  f32: Float32Array as unknown as Ctor,
  f64: Float64Array as unknown as Ctor,
  u8: Uint8Array as unknown as Ctor,
  u16: Uint16Array as unknown as Ctor,
  i32: Int32Array as unknown as Ctor,
  u32: Uint32Array as unknown as Ctor,
};

export interface Message<T extends Header = Header> {
  header: T;
  /** name -> typed view of the frame, in header order. Unknown names are kept too. */
  buffers: Record<string, TypedArray>;
  /** The raw buffer frames in header order (for checksums and recording). */
  frames: Uint8Array[];
}

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** B1 + B2: msgpack → plain JSON-like value; a map with string keys at every depth. */
export function decodeHeader(frame: Uint8Array): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (e) {
    throw new ProtocolError('E_HEADER_DECODE', `frame 0 is not one valid msgpack object (${(e as Error).message})`, { cause: e });
  }
  if (tooDeep(raw)) throw new ProtocolError('E_HEADER_DECODE', `frame 0 nests arrays/maps deeper than ${MAX_HEADER_DEPTH} levels`);
  const bad = invalidUtf8At(frame); // msgpackr decodes invalid UTF-8 lossily: check the bytes
  if (bad >= 0) throw new ProtocolError('E_HEADER_DECODE', `frame 0 has a str that is not valid UTF-8 (at byte ${bad})`);
  const out = plain(raw, 'header');
  if (typeof out !== 'object' || out === null || Array.isArray(out))
    throw new ProtocolError('E_HEADER_TYPE', `frame 0 must be a msgpack map, got ${Array.isArray(out) ? 'array' : out === null ? 'nil' : typeof out}`);
  return out as Record<string, unknown>;
}

/** Deepest array/map nesting a header may have (the header map is level 1); deeper is E_HEADER_DECODE (B1). */
export const MAX_HEADER_DEPTH = 64;

// Iterative, so a hostile depth cannot overflow the stack (a recursive walk did: fuzz seed 1 case 622).
function tooDeep(root: unknown): boolean {
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    const kids = Array.isArray(v) ? v : v instanceof Map ? [...v.keys(), ...v.values()] : null;
    if (!kids) continue;
    if (d > MAX_HEADER_DEPTH) return true;
    for (const k of kids) if (typeof k === 'object' && k !== null) stack.push([k, d + 1]);
  }
  return false;
}

// Allowed: nil, bool, int, float, str, array, map. Anything else msgpackr can produce (bin →
// Uint8Array, timestamp → Date, 0xc1 → C1Type, other ext) is E_HEADER_DECODE.
function plain(v: unknown, path: string): unknown {
  if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
  if (Array.isArray(v)) return v.map((x, i) => plain(x, `${path}[${i}]`));
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) {
      if (typeof k !== 'string')
        throw new ProtocolError('E_HEADER_TYPE', `${path} has a non-string key (${k instanceof Uint8Array ? 'bin' : typeof k}); keys must be msgpack str`);
      if (k === '__proto__') continue; // never let input reach the prototype
      o[k] = plain(x, `${path}.${k}`);
    }
    return o;
  }
  if (v === undefined) return null;
  const kind = v instanceof Uint8Array ? 'bin' : v instanceof Date ? 'timestamp ext' : 'ext';
  throw new ProtocolError('E_HEADER_DECODE', `${path}: ${kind} values are not allowed in a header`);
}

/** Stage A: limits on the frames themselves, before anything is decoded. */
export function checkFrameLimits(frames: readonly Uint8Array[], limits: Limits): void {
  if (frames.length === 0) throw new ProtocolError('E_FRAME_COUNT', 'empty message: no header frame');
  if (frames.length > limits.max_frames)
    throw new ProtocolError('E_TOO_LARGE', `${frames.length} frames exceeds max_frames ${limits.max_frames}`);
  if (frames[0].byteLength > limits.max_header_bytes)
    throw new ProtocolError('E_TOO_LARGE', `header frame ${frames[0].byteLength} bytes exceeds max_header_bytes ${limits.max_header_bytes}`);
  let total = 0;
  for (let i = 0; i < frames.length; i++) {
    const n = frames[i].byteLength;
    if (i > 0 && n > limits.max_frame_bytes)
      throw new ProtocolError('E_TOO_LARGE', `frame ${i} is ${n} bytes, exceeds max_frame_bytes ${limits.max_frame_bytes}`);
    total += n;
  }
  if (total > limits.max_message_bytes)
    throw new ProtocolError('E_TOO_LARGE', `message is ${total} bytes, exceeds max_message_bytes ${limits.max_message_bytes}`);
}

/** View a frame as a typed array without copying; copy only when misaligned. */
export function view(frame: Uint8Array, dtype: Dtype, length: number): TypedArray {
  const C = DTYPE_CTOR[dtype];
  if (frame.byteOffset % C.BYTES_PER_ELEMENT === 0) return new C(frame.buffer, frame.byteOffset, length);
  const copy = new C(length);
  new Uint8Array(copy.buffer).set(frame.subarray(0, length * C.BYTES_PER_ELEMENT));
  return copy;
}

/** Decode and validate a whole message (stages A..D). Throws only ProtocolError. */
export function decodeMessage(frames: readonly Uint8Array[], limits: Limits = DEFAULT_LIMITS): Message {
  let ref: ErrorRef = {};
  try {
    checkFrameLimits(frames, limits);
    const h = decodeHeader(frames[0]);
    ref = refOf(h);
    const header = validateHeader(h, limits);
    const descs: BufferDesc[] = header.buffers ?? [];
    // C1, C2
    if (frames.length - 1 !== descs.length)
      throw new ProtocolError('E_FRAME_COUNT', `header lists ${descs.length} buffers but ${frames.length - 1} buffer frames follow`);
    const buffers: Record<string, TypedArray> = Object.create(null); // names come from the client (`__proto__`)
    for (let i = 0; i < descs.length; i++) {
      const d = descs[i];
      const want = d.length * DTYPE_SIZE[d.dtype];
      const got = frames[i + 1].byteLength;
      if (got !== want)
        throw new ProtocolError('E_FRAME_LENGTH', `buffer ${d.name} declares ${d.length} × ${d.dtype} = ${want} bytes, frame ${i + 1} has ${got}`);
      buffers[d.name] = view(frames[i + 1], d.dtype, d.length);
    }
    if (header.type === 'step') {
      if (header.sketch) checkSketchStep(header as Record<string, unknown>, buffers); // stage D of a sketch step
      else checkStep(header as StepHeader, buffers);
    }
    return { header, buffers, frames: frames.slice(1) as Uint8Array[] };
  } catch (e) {
    if (e instanceof ProtocolError) {
      if (Object.keys(e.ref).length === 0) e.ref = ref;
      throw e;
    }
    throw new ProtocolError('E_INTERNAL', `decoder failure: ${(e as Error)?.message ?? String(e)}`, { ref, cause: e });
  }
}

/** Stage D: step semantics (required buffers, lengths vs tokens/n_seqs, offsets). */
function checkStep(h: StepHeader, b: Record<string, TypedArray>): void {
  for (const name of REQUIRED_STEP_BUFFERS)
    if (!b[name]) throw new ProtocolError('E_MISSING_FIELD', `step is missing required buffer ${name}`);
  for (const [name, arr] of Object.entries(b)) {
    const spec = STEP_BUFFERS[name];
    if (!spec) continue;
    const want = spec.per === 'token' ? h.tokens : spec.per === 'seq' ? h.n_seqs : h.n_seqs + 1;
    if (arr.length !== want)
      throw new ProtocolError('E_FRAME_LENGTH', `buffer ${name} has length ${arr.length}, expected ${want} (${spec.per === 'token' ? 'tokens' : spec.per === 'seq' ? 'n_seqs' : 'n_seqs+1'})`);
  }
  const off = b.offsets as Int32Array;
  if (off[0] !== 0) throw new ProtocolError('E_OFFSETS', `offsets[0] must be 0, got ${off[0]}`);
  for (let i = 1; i < off.length; i++)
    if (off[i] < off[i - 1]) throw new ProtocolError('E_OFFSETS', `offsets must be non-decreasing (offsets[${i}]=${off[i]} < offsets[${i - 1}]=${off[i - 1]})`);
  if (off[off.length - 1] !== h.tokens)
    throw new ProtocolError('E_OFFSETS', `offsets[n_seqs] must equal tokens ${h.tokens}, got ${off[off.length - 1]}`);
  if (b.slice_ids && h.slice_names === undefined) throw new ProtocolError('E_MISSING_FIELD', 'slice_ids needs slice_names');
}

const CTOR_DTYPE = new Map<unknown, Dtype>([
  [Float32Array, 'f32'],
  [Float64Array, 'f64'],
  [Uint8Array, 'u8'],
  [Uint16Array, 'u16'],
  [Int32Array, 'i32'],
  [Uint32Array, 'u32'],
]);

export function dtypeOf(a: TypedArray): Dtype {
  const d = CTOR_DTYPE.get(a.constructor) ?? (a instanceof Uint8Array ? 'u8' : undefined); // Buffer is a Uint8Array
  if (!d) throw new TypeError(`unsupported typed array ${a.constructor.name}`);
  return d;
}

/**
 * Encode a header plus named buffers into frames. `header.buffers` is filled from `buffers`
 * (order preserved), overriding any given. Frames alias the arrays' memory (no copy).
 */
export function encodeMessage(header: Record<string, unknown>, buffers: Record<string, TypedArray> = {}): Buffer[] {
  if (!LE) throw new Error('tailguard protocol frames are little-endian; big-endian hosts are not supported');
  const names = Object.keys(buffers);
  const h = names.length ? { ...header, buffers: names.map((name) => ({ name, dtype: dtypeOf(buffers[name]), length: buffers[name].length })) } : header;
  const frames: Buffer[] = [packr.pack(h)];
  for (const n of names) {
    const a = buffers[n];
    frames.push(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  }
  return frames;
}

/** Encode just a header (for messages without buffers). */
export const encodeHeader = (header: Record<string, unknown>): Buffer => packr.pack(header);
