// Header validation (proto/README.md "Validation order", stages B3..B7). Checks run in the
// documented order and the first failure wins, so every runner reports the same code.
import { PAIRS } from '../types.ts';
import { ProtocolError, type ErrorCode, type ErrorRef } from './errors.ts';
import { MESSAGE_TYPES, type BufferDesc, type Dtype, type Header, type Limits } from './messages.ts';

export const PROTOCOL_MAJOR = 1;
export const PROTOCOL_MINOR = 0;

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  max_message_bytes: 64 * 1024 * 1024,
  max_frame_bytes: 4 * 1024 * 1024,
  max_frames: 64,
  max_header_bytes: 64 * 1024,
  max_tokens_per_step: 2 ** 27,
  step_timeout_ms: 30_000,
});

// Null-prototype tables: they are indexed by client strings (`constructor`, `__proto__` are not dtypes or buffer names).
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = Object.assign(Object.create(null), { f32: 4, u8: 1, i32: 4, u16: 2, u32: 4, f64: 8 });

/** Step buffer names: dtype and what the length counts (T tokens, n_seqs, or n_seqs+1). */
export const STEP_BUFFERS: Readonly<Record<string, { dtype: Dtype; per: 'token' | 'seq' | 'offsets' }>> = Object.assign(Object.create(null), {
  policy_vs_old: { dtype: 'f32', per: 'token' },
  policy_vs_ref: { dtype: 'f32', per: 'token' },
  old_vs_rollout: { dtype: 'f32', per: 'token' },
  completion_mask: { dtype: 'u8', per: 'token' },
  tool_mask: { dtype: 'u8', per: 'token' },
  slice_ids: { dtype: 'u16', per: 'token' },
  token_ids: { dtype: 'i32', per: 'token' },
  offsets: { dtype: 'i32', per: 'offsets' },
  advantages: { dtype: 'f32', per: 'seq' },
  rewards: { dtype: 'f32', per: 'seq' },
  group_ids: { dtype: 'i32', per: 'seq' },
  seq_ids: { dtype: 'i32', per: 'seq' },
});
export const REQUIRED_STEP_BUFFERS = ['completion_mask', 'tool_mask', 'offsets'] as const;

export const RUN_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ACTIONS = new Set(['noop', 'warn', 'tighten', 'rollback', 'stop', 'curriculum']);

type H = Record<string, unknown>;
const isMap = (v: unknown): v is H => typeof v === 'object' && v !== null && !Array.isArray(v);
const fail = (code: ErrorCode, msg: string, ref: ErrorRef): never => {
  throw new ProtocolError(code, msg, { ref });
};

/** A field checker: returns normally or throws ProtocolError. `path` names the field in messages. */
type Check = (v: unknown, path: string, ref: ErrorRef) => void;

const typeErr = (path: string, want: string, v: unknown, ref: ErrorRef) =>
  fail('E_FIELD_TYPE', `${path} must be ${want}, got ${describe(v)}`, ref);

export function describe(v: unknown): string {
  if (v === null) return 'nil';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isNaN(v) ? 'NaN' : Number.isInteger(v) ? `int ${v}` : `float ${v}`;
  if (typeof v === 'string') return `str ${JSON.stringify(v.slice(0, 40))}`;
  return typeof v === 'object' ? 'map' : typeof v;
}

// uint: an integral, finite number in [0, 2^53-1]; an integral float (7.0) is accepted.
const uint: Check = (v, p, r) => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) typeErr(p, 'a non-negative integer', v, r);
};
const posint: Check = (v, p, r) => {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) typeErr(p, 'a positive integer', v, r);
};
const str: Check = (v, p, r) => {
  if (typeof v !== 'string') typeErr(p, 'a string', v, r);
};
const bool: Check = (v, p, r) => {
  if (typeof v !== 'boolean') typeErr(p, 'a boolean', v, r);
};
const finite: Check = (v, p, r) => {
  if (typeof v !== 'number' || !Number.isFinite(v)) typeErr(p, 'a finite number', v, r);
};
const map: Check = (v, p, r) => {
  if (!isMap(v)) typeErr(p, 'a map', v, r);
};
const nullable =
  (c: Check): Check =>
  (v, p, r) => {
    if (v !== null) c(v, p, r);
  };
const listOf =
  (c: Check): Check =>
  (v, p, r) => {
    if (!Array.isArray(v)) return typeErr(p, 'an array', v, r);
    v.forEach((x, i) => c(x, `${p}[${i}]`, r));
  };
// Maps of trainer scalars: values are numbers (NaN/Inf allowed: they are findings, not errors) or nil.
const numMap: Check = (v, p, r) => {
  map(v, p, r);
  for (const [k, x] of Object.entries(v as H)) if (x !== null && typeof x !== 'number') typeErr(`${p}.${k}`, 'a number or nil', x, r);
};
const oneOf =
  (values: ReadonlySet<string>): Check =>
  (v, p, r) => {
    str(v, p, r);
    if (!values.has(v as string)) typeErr(p, `one of ${[...values].join('|')}`, v, r);
  };
const runId: Check = (v, p, r) => {
  str(v, p, r);
  if (!RUN_ID_RE.test(v as string)) fail('E_RUN_ID', `run_id ${JSON.stringify(v)} does not match ${RUN_ID_RE.source}`, r);
};
const struct =
  (fields: Fields): Check =>
  (v, p, r) => {
    map(v, p, r);
    checkFields(v as H, fields, r, `${p}.`);
  };

/** [name, required, check] in the documented order. */
type Fields = [string, boolean, Check][];

function checkFields(h: H, fields: Fields, ref: ErrorRef, prefix = ''): void {
  for (const [name, required, check] of fields) {
    const v = h[name];
    if (v === undefined) {
      if (required) fail('E_MISSING_FIELD', `missing required field ${prefix}${name}`, ref);
      continue;
    }
    check(v, prefix + name, ref);
  }
}

const rankFields: Fields = [
  ['run_id', true, runId],
  ['rank', true, uint],
];

const chunk: Check = (v, p, r) => {
  struct([
    ['index', true, uint],
    ['count', true, posint],
  ])(v, p, r);
  const c = v as { index: number; count: number };
  if (c.index >= c.count) fail('E_FIELD_TYPE', `chunk.index ${c.index} must be < chunk.count ${c.count}`, r);
};

const limitsCheck = struct(Object.keys(DEFAULT_LIMITS).map((k) => [k, true, uint] as [string, boolean, Check]));

const FIELDS: Record<string, Fields> = {
  hello: [
    ...rankFields,
    ['world_size', true, posint],
    ['trainer', true, str],
    ['mode', false, oneOf(new Set(['raw', 'sketch']))],
    ['config', false, map],
    ['client', false, map],
    ['checksum', false, bool],
  ],
  welcome: [
    ...rankFields,
    ['session', true, str],
    ['engine', true, struct([['name', true, str], ['version', true, str]])],
    ['limits', true, limitsCheck],
    ['resume', true, nullable(struct([['last_step', true, nullable(uint)]]))],
  ],
  step: [
    ...rankFields,
    ['world_size', true, posint],
    ['step', true, uint],
    ['chunk', true, chunk],
    ['tokens', true, uint],
    ['n_seqs', true, uint],
    ['buffers', true, listOf(map)], // entries checked by checkBuffers
    ['implicit', false, listOf(oneOf(new Set(PAIRS)))],
    ['knobs', false, numMap],
    ['logs', false, numMap],
    ['slice_names', false, listOf(str)],
    ['sent_at', false, finite],
    ['sketch', false, bool],
  ],
  directive: [
    ...rankFields,
    ['step', true, uint],
    [
      'directive',
      true,
      struct([
        ['id', true, str],
        ['action', true, oneOf(ACTIONS)],
        ['step', true, uint],
        ['apply_at_step', true, uint],
        ['params', true, map],
        ['reason', true, str],
        ['evidence', true, map],
      ]),
    ],
    [
      'received',
      true,
      struct([
        ['tokens', true, uint],
        ['n_seqs', true, uint],
        ['slices', true, struct(['all', 'pre_tool', 'post_tool', 'tool_output'].map((k) => [k, true, uint] as [string, boolean, Check]))],
        ['checksum', true, nullable(uint)],
      ]),
    ],
    ['metrics', true, numMap],
    ['metrics_step', true, nullable(uint)],
  ],
  ack: [
    ...rankFields,
    ['directive_id', true, str],
    ['step', true, uint],
    ['applied', true, bool],
    ['changes', false, listOf(struct([['knob', true, str], ['old', true, nullable(finite)], ['new', true, nullable(finite)]]))],
    ['refused', false, nullable(str)],
  ],
  ack_engine: [['of', true, str], ...rankFields],
  error: [
    ['code', true, str],
    ['message', true, str],
    ['fatal', true, bool],
    ['ref', false, map],
  ],
  bye: [...rankFields, ['last_step', false, nullable(uint)], ['stats', false, numMap]],
};

/** Where an error in this header points, from whatever fields are readable. */
export function refOf(h: H): ErrorRef {
  const ref: ErrorRef = {};
  if (typeof h.type === 'string') ref.type = h.type;
  if (typeof h.run_id === 'string') ref.run_id = h.run_id;
  if (typeof h.rank === 'number' && Number.isSafeInteger(h.rank)) ref.rank = h.rank;
  if (typeof h.step === 'number' && Number.isSafeInteger(h.step)) ref.step = h.step;
  const c = h.chunk as H | undefined;
  if (isMap(c) && typeof c.index === 'number' && Number.isSafeInteger(c.index)) ref.chunk = c.index;
  return ref;
}

/**
 * Stages B3..B7: version, type, the type's fields, buffer descriptors and declared sizes.
 * `h` is a decoded header map (stage B1/B2 done). Returns the header typed; throws ProtocolError.
 */
export function validateHeader(h: H, limits: Limits = DEFAULT_LIMITS): Header {
  const ref = refOf(h);
  // B3: version first, so a future major with new types is reported as E_VERSION.
  const ver = h.version;
  if (ver === undefined) fail('E_MISSING_FIELD', 'missing required field version', ref);
  if (!Array.isArray(ver) || ver.length !== 2 || !ver.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0))
    typeErr('version', '[major, minor] non-negative integers', ver, ref);
  const [major] = ver as number[];
  if (major !== PROTOCOL_MAJOR)
    throw new ProtocolError('E_VERSION', `protocol major ${major} is not supported (this side speaks ${PROTOCOL_MAJOR}.x)`, { ref, fatal: true });
  // B4
  if (h.type === undefined) fail('E_MISSING_FIELD', 'missing required field type', ref);
  str(h.type, 'type', ref);
  if (!(MESSAGE_TYPES as readonly string[]).includes(h.type as string)) fail('E_UNKNOWN_TYPE', `unknown message type ${JSON.stringify(h.type)}`, ref);
  // B5
  const key = h.type === 'ack' && h.of !== undefined ? 'ack_engine' : (h.type as string);
  checkFields(h, FIELDS[key], ref);
  if ((key === 'hello' || key === 'step') && (h.rank as number) >= (h.world_size as number))
    fail('E_RANK', `rank ${h.rank} must be < world_size ${h.world_size}`, ref);
  // B6 + B7
  checkBuffers(h, limits, ref);
  return h as Header;
}

function checkBuffers(h: H, limits: Limits, ref: ErrorRef): void {
  const raw = h.buffers;
  if (raw === undefined) return;
  if (!Array.isArray(raw)) return typeErr('buffers', 'an array', raw, ref);
  const isStep = h.type === 'step';
  const seen = new Set<string>();
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i];
    const p = `buffers[${i}]`;
    map(b, p, ref);
    checkFields(b as H, [['name', true, str], ['dtype', true, str], ['length', true, uint]], ref, `${p}.`);
    const { name, dtype } = b as BufferDesc;
    if (!(dtype in DTYPE_SIZE)) fail('E_DTYPE', `${p} (${name}): unknown dtype ${JSON.stringify(dtype)}`, ref);
    const known = isStep ? STEP_BUFFERS[name] : undefined;
    if (known && known.dtype !== dtype) fail('E_DTYPE', `buffer ${name} must be ${known.dtype}, got ${dtype}`, ref);
    if (seen.has(name)) fail('E_FIELD_TYPE', `buffer ${name} is listed twice`, ref);
    seen.add(name);
  }
  // B7: declared sizes, before any frame is looked at.
  let total = 0;
  for (const b of raw as BufferDesc[]) {
    const bytes = b.length * DTYPE_SIZE[b.dtype];
    if (bytes > limits.max_frame_bytes)
      fail('E_TOO_LARGE', `buffer ${b.name}: ${bytes} bytes exceeds max_frame_bytes ${limits.max_frame_bytes}`, ref);
    total += bytes;
  }
  if (total > limits.max_message_bytes) fail('E_TOO_LARGE', `buffers total ${total} bytes exceeds max_message_bytes ${limits.max_message_bytes}`, ref);
  // A sketch step's tokens/n_seqs count every rank's data but its size is fixed (docs/sketch.md).
  if (isStep && h.sketch !== true) {
    for (const f of ['tokens', 'n_seqs'] as const)
      if ((h[f] as number) > limits.max_tokens_per_step)
        fail('E_TOO_LARGE', `${f} ${h[f]} exceeds max_tokens_per_step ${limits.max_tokens_per_step}`, ref);
  }
}
